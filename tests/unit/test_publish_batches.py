"""Batched publishing (producers.publish) against a fake producer: no broker."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fanpin.privacy import Pseudonymiser
from producers import FORMATS
from producers.common import ParseContext, Reject
from producers.publish import Publisher
from schemas.events import (
    FeedFile,
    IncomeReport,
    MedicalSettlement,
    decode_event,
    encode,
    partition_of,
    split_batch,
)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
PARTITIONS = {"t.person-events": 6, "t.household-events": 4, "t.reference": 1, "t.files": 1}
KEY = b"unit-test-pseudonym-key-0123"


class FakeProducer:
    """Records every send(); knows each topic's partition count."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.asked: list[str] = []

    def send(
        self, topic: str, key: bytes | None = None, value: bytes = b"", partition: int | None = None
    ) -> None:
        self.sent.append({"topic": topic, "key": key, "value": value, "partition": partition})

    def partitions_for(self, topic: str) -> set[int]:
        self.asked.append(topic)
        return set(range(PARTITIONS[topic]))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def publish(rel: str, **kw: Any) -> tuple[FakeProducer, Any, list[Any]]:
    settings = SimpleNamespace(topic=lambda name: f"t.{name}")
    producer = FakeProducer()
    publisher = Publisher(settings, producer=producer, **kw)  # type: ignore[arg-type]
    fmt = FORMATS[rel.split("/")[0].removesuffix(".csv")]
    try:
        result = publisher.publish_file(fmt, SAMPLE / rel, rel, ParseContext(Pseudonymiser(KEY)))
    finally:
        publisher.close()
    parsed = list(fmt.parse_file(SAMPLE / rel, rel, ParseContext(Pseudonymiser(KEY))))
    return producer, result, parsed


def key_of(event: Any) -> bytes:
    return (event.household_id if isinstance(event, IncomeReport) else event.person).encode()


def events_of(msg: dict[str, Any]) -> list[bytes]:
    return split_batch(msg["value"])


@pytest.mark.parametrize("rel", ["medical/2025-08.csv", "income/2025-08.csv", "roster.csv"])
def test_batches_hold_one_partitions_events_in_file_order(rel: str) -> None:
    producer, result, parsed = publish(rel, batch_events=7)
    events = [e for e in parsed if not isinstance(e, Reject)]
    topic = "t.household-events" if isinstance(events[0], IncomeReport) else "t.person-events"
    batches = [m for m in producer.sent if m["topic"] == topic]
    assert batches and all(m["key"] is None for m in batches)
    # Split at the limit: every batch full but possibly the last one of its partition.
    for i, m in enumerate(batches):
        n = len(events_of(m))
        later = [b for b in batches[i + 1 :] if b["partition"] == m["partition"]]
        assert n == 7 if later else 1 <= n <= 7
    # Every event is in its own partition's batch, in file order within the partition.
    for p in range(PARTITIONS[topic]):
        got = [raw for m in batches if m["partition"] == p for raw in events_of(m)]
        want = [encode(e) for e in events if partition_of(key_of(e), PARTITIONS[topic]) == p]
        assert got == want
    assert sum(len(events_of(m)) for m in batches) == len(events) == result.events
    assert result.by_topic == {topic: len(events)}
    assert producer.asked.count(topic) == 1  # the partition count is cached


def test_receipt_comes_after_the_files_batches() -> None:
    producer, result, _ = publish("medical/2025-08.csv")  # default limits: a few batches
    *rows, last = producer.sent
    assert last["topic"] == "t.files" and last["key"] == b"medical"
    receipt = decode_event(last["value"])
    assert isinstance(receipt, FeedFile) and result.receipts == [receipt]
    assert {m["topic"] for m in rows} == {"t.person-events"}
    assert receipt.rows_accepted == result.events == sum(len(events_of(m)) for m in rows)
    assert len(result.rejects) == sum(receipt.rejects.values()) == 2


def test_byte_limit_splits_batches() -> None:
    producer, result, parsed = publish("medical/2025-08.csv", batch_bytes=4096)
    batches = [m for m in producer.sent if m["topic"] == "t.person-events"]
    sizes = [sum(map(len, events_of(m))) for m in batches]
    biggest = max(len(encode(e)) for e in parsed if isinstance(e, MedicalSettlement))
    assert max(sizes) < 4096 + biggest
    assert sum(len(events_of(m)) for m in batches) == result.events


def test_unbatched_sends_one_keyed_message_per_row_to_the_same_partitions() -> None:
    rel = "medical/2025-08.csv"
    single, single_result, parsed = publish(rel, batch_events=1)
    batched, batched_result, _ = publish(rel)
    events = [e for e in parsed if not isinstance(e, Reject)]
    rows = single.sent[:-1]
    assert [m["value"] for m in rows] == [encode(e) for e in events]
    assert [m["key"] for m in rows] == [key_of(e) for e in events]
    assert [m["partition"] for m in rows] == [partition_of(key_of(e), 6) for e in events]
    by_partition = {
        p: [raw for m in batched.sent[:-1] if m["partition"] == p for raw in events_of(m)]
        for p in range(6)
    }
    for p, raws in by_partition.items():
        assert raws == [m["value"] for m in rows if m["partition"] == p]
    assert single.sent[-1]["topic"] == "t.files"
    assert single_result.events == batched_result.events == len(events)
    assert single_result.by_topic == batched_result.by_topic
    assert single_result.rejects == batched_result.rejects


def test_reference_events_stay_single_keyed_messages() -> None:
    producer, result, parsed = publish("regions.csv")
    *rows, last = producer.sent
    assert [(m["topic"], m["key"], m["partition"]) for m in rows] == [
        ("t.reference", e.id.encode(), None) for e in parsed if not isinstance(e, Reject)
    ]
    assert last["topic"] == "t.files" and result.events == len(rows)
    assert producer.asked == []


def test_batch_events_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Publisher(SimpleNamespace(topic=str), producer=FakeProducer(), batch_events=0)  # type: ignore[arg-type]


def _per_partition(producer: FakeProducer) -> dict[tuple[str, int], list[bytes]]:
    out: dict[tuple[str, int], list[bytes]] = {}
    for m in producer.sent:
        if m["topic"] in ("t.person-events", "t.household-events"):
            out.setdefault((m["topic"], m["partition"]), []).extend(events_of(m))
    return out


@pytest.mark.parametrize("rel", ["medical/2025-08.csv", "employment/2025-08.csv",
                                 "income/2025-08.csv", "roster.csv"])
def test_a_file_parsed_in_shares_publishes_what_one_process_does(
        rel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three processes, each parsing a third of the lines: every partition receives the
    same events in the same (file) order, and the rejects and counts are the same."""
    import producers.publish as publish_mod

    monkeypatch.setattr(publish_mod, "PARALLEL_MIN_BYTES", 0)
    serial, r1, _ = publish(rel, batch_events=50)
    shared, r3, _ = publish(rel, batch_events=50, jobs=3)
    assert _per_partition(shared) == _per_partition(serial)
    assert [(r.file, r.line, r.code, r.message) for r in r3.rejects] == \
        [(r.file, r.line, r.code, r.message) for r in r1.rejects]
    assert (r3.events, r3.by_topic) == (r1.events, r1.by_topic)
    assert shared.sent[-1]["topic"] == "t.files"  # the receipt last
    receipt = decode_event(shared.sent[-1]["value"])
    assert isinstance(receipt, FeedFile) and receipt.rows_accepted == r1.events


def test_share_bounds_cover_every_line_once() -> None:
    from producers.common import share_bounds

    for start, end, parts in ((1, 2, 3), (1, 100, 4), (3, 1003, 7), (1, 1, 2)):
        covered = [i for k in range(parts) for i in range(*share_bounds(start, end, k, parts))]
        assert covered == list(range(start, end))
    with pytest.raises(ValueError):
        share_bounds(1, 10, 3, 3)

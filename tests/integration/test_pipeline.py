"""The whole pipeline on a real Apache Kafka broker and a real PostgreSQL.

`fanpin replay` runs as a user runs it (a subprocess, configured only by FANPIN_*
variables); it starts its own worker and sink. One replay of the sample feeds most
assertions; the second replay proves idempotence.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import create_engine, inspect, text

from fanpin.kafka_admin import Admin, sink_group, worker_group
from fanpin.services import Services
from fanpin.settings import Settings
from schemas.events import DeadLetter, decode_event, split_batch
from tests.helpers import SAMPLE, cli_env, find_personal_data, personal_data, read_csv

pytestmark = pytest.mark.integration


def fanpin(args: list[str], env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run([sys.executable, "-m", "fanpin", *args], env=cli_env(env),
                          capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def export_rows(path: Path) -> list[dict[str, str]]:
    return read_csv(path)


def all_topic_bytes(bootstrap: str, prefix: str) -> bytes:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        topics = [t for t in consumer.topics() if t.startswith(prefix)]
        tps = [TopicPartition(t, p) for t in topics
               for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "could not read the topics back"
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    chunks += [r.key or b"", r.value or b""]
        return b"\n".join(chunks)
    finally:
        consumer.close()


@pytest.fixture
def replayed(pipeline_env: dict[str, str], pg_database_url: str, tmp_path: Path):
    env = {**pipeline_env, "FANPIN_DATABASE_URL": pg_database_url}
    out = fanpin(["replay", str(SAMPLE), "--export", str(tmp_path / "first.csv"),
                  "--rejects", str(tmp_path / "rejects.csv")], env)
    return env, out


def test_sample_replay_end_to_end(replayed, tmp_path: Path) -> None:
    env, out = replayed

    # Every invalid row is reported, with file and line, and nothing else is.
    rejects = read_csv(tmp_path / "rejects.csv")
    expected = {(r["文件"], int(r["行号"])): r["原因"] for r in read_csv(SAMPLE / "bad_rows.csv")}
    got = {(r["文件"], int(r["行号"])): r["原因"] for r in rejects}
    assert set(got) == set(expected)
    for key, code in expected.items():
        assert got[key].startswith(code + ":"), (key, got[key])

    # Early warnings land on households that really were at risk.
    entries = export_rows(tmp_path / "first.csv")
    assert list(entries[0])[:7] == ["户编号", "行政区划代码", "风险类型", "预警规则", "预警月份",
                                    "严重程度", "状态"]
    truth = {r["户编号"]: r["风险"] == "1" for r in read_csv(SAMPLE / "truth.csv")}
    flagged = {e["户编号"] for e in entries}
    assert len(flagged) == len(entries), "one entry per household and episode"
    at_risk = {h for h, risky in truth.items() if risky}
    recall = len(flagged & at_risk) / len(at_risk)
    precision = len(flagged & at_risk) / len(flagged)
    assert recall >= 0.7 and precision >= 0.7, (recall, precision)
    assert all(e["状态"] == "新预警" for e in entries)

    # Replaying the same folder changes nothing.
    fanpin(["replay", str(SAMPLE), "--export", str(tmp_path / "second.csv")], env)
    assert export_rows(tmp_path / "second.csv") == entries

    # No resident ID number or name in any topic, log line or table.
    ids, names = personal_data(SAMPLE)
    blobs = {
        "kafka": all_topic_bytes(env["FANPIN_KAFKA_BOOTSTRAP_SERVERS"],
                                 env["FANPIN_TOPIC_PREFIX"]).decode("utf-8", "replace"),
        "cli output": out,
        "logs": "\n".join(p.read_text(errors="replace")
                          for p in (Path(env["FANPIN_VAR_DIR"]) / "logs").glob("*.log")),
    }
    engine = create_engine(env["FANPIN_DATABASE_URL"].replace("postgresql://",
                                                              "postgresql+psycopg://"))
    with engine.connect() as conn:
        rows = []
        for table in inspect(conn).get_table_names():
            rows += [repr(tuple(r)) for r in conn.execute(text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    blobs["database"] = "\n".join(rows)
    assert len(blobs["kafka"]) > 100_000 and len(rows) > 100
    for where, blob in blobs.items():
        leaked = find_personal_data(blob, ids, names)
        assert not leaked, f"personal data in {where}: {len(leaked)} values"


def test_poison_messages_go_to_dead_letters(pipeline_env: dict[str, str]) -> None:
    settings = Settings()
    poison = {
        settings.topic("person-events"): b"not json at all",
        settings.topic("household-events"): b'{"kind":"income.v9","id":"x"}',
        settings.topic("alerts"): b'{"kind":"alert.v1"}',
    }
    with Services(settings) as services:
        assert services.admin is not None
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        for topic, payload in poison.items():
            producer.send(topic, key=b"k", value=payload)
        producer.flush()
        producer.close()
        admin: Admin = services.admin
        for group, topic in ((worker_group(settings), "person-events"),
                             (worker_group(settings), "household-events"),
                             (sink_group(settings), "alerts")):
            admin.wait_caught_up(group, [settings.topic(topic)], timeout=120,
                                 alive=services.check_alive)
        services.check_alive()  # the worker and the sink carried on

        consumer = KafkaConsumer(settings.topic("dead-letters"),
                                 bootstrap_servers=settings.bootstrap_servers,
                                 auto_offset_reset="earliest", consumer_timeout_ms=10_000)
        letters: list[DeadLetter] = []
        for record in consumer:
            event = decode_event(record.value)
            assert isinstance(event, DeadLetter)
            letters.append(event)
            if len(letters) == len(poison):
                break
        consumer.close()
    by_topic = {d.topic: d for d in letters}
    assert set(by_topic) == set(poison)
    for topic, letter in by_topic.items():
        assert letter.payload == poison[topic].decode()
        assert letter.reason
    assert "income.v9" in by_topic[settings.topic("household-events")].reason or \
        "kind" in by_topic[settings.topic("household-events")].reason
    with pytest.raises(msgspec.DecodeError):
        decode_event(b"not json at all")


def test_publish_one_department_folder(pipeline_env: dict[str, str], tmp_path: Path) -> None:
    """A department publishes its own folder: bad rows are reported, the rest go out."""
    report = tmp_path / "medical-rejects.csv"
    out = fanpin(["publish", "medical", str(SAMPLE / "medical"), "--rejects", str(report)],
                 pipeline_env)
    expected = {(r["文件"], r["行号"]) for r in read_csv(SAMPLE / "bad_rows.csv")
                if r["文件"].startswith("medical/")}
    assert {(r["文件"], r["行号"]) for r in read_csv(report)} == expected
    settings = Settings()
    consumer = KafkaConsumer(settings.topic("person-events"),
                             bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5_000)
    published = 0
    messages = 0
    for record in consumer:  # batch messages: count the events inside
        messages += 1
        published += len(split_batch(record.value))
    consumer.close()
    assert 0 < messages < published  # batched, not one message per row
    with_rows = 0
    for f in (SAMPLE / "medical").glob("*.csv"):
        with f.open(encoding="gb18030") as fh:
            with_rows += sum(1 for _ in fh) - 1
    assert published == with_rows - len(expected)
    assert f"{published} events" in out

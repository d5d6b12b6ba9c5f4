"""Metrics: what the collectors read from the watch list, the batch textfile, file receipts,
and that the exposition passes promtool's own lint."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from consumers.watchlist.feeds import feed_summary, record_feed_files
from consumers.watchlist.service import record_alerts, set_state
from consumers.watchlist.views import create_app
from fanpin import metrics
from fanpin.privacy import Pseudonymiser
from producers import FORMATS
from producers.common import ParseContext
from producers.publish import Publisher
from producers.scenario import load_known_households
from schemas.events import FeedFile, decode_event, split_batch
from tests.helpers import SAMPLE, read_csv
from tests.unit.test_watchlist_helpers import household, make_alert, sqlite_engine

T0 = dt.datetime(2026, 10, 5, 8, 0, tzinfo=dt.UTC)


def receipt(feed: str, file: str, *, sha: str = "a", accepted: int = 100,
            rejects: dict[str, int] | None = None, at: dt.datetime = T0,
            dept: str = "rural") -> FeedFile:
    return FeedFile(id=f"{feed}|{file}|{sha}", feed=feed, dept=dept, file=file,  # type: ignore[arg-type]
                    sha256=sha * 64, rows_accepted=accepted, rejects=rejects or {},
                    published_at=at)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = sqlite_engine(tmp_path)
    yield engine
    engine.dispose()


def test_file_receipts_are_recorded_once_and_the_latest_file_wins(engine: Engine) -> None:
    jan = receipt("income", "income/2026-01.csv", rejects={"bad_amount": 2})
    feb = receipt("income", "income/2026-02.csv", sha="b", accepted=90,
                  rejects={"bad_amount": 1, "unknown_household": 3},
                  at=T0 + dt.timedelta(days=30))
    med = receipt("medical", "medical/2026-01.csv", sha="c", dept="medical")
    with Session(engine) as s, s.begin():
        assert record_feed_files(session=s, receipts=[jan, feb, med]) == 3
    with Session(engine) as s, s.begin():  # published again: nothing new
        assert record_feed_files(session=s, receipts=[feb, jan, feb]) == 0
    with Session(engine) as s:
        summary = {f.feed: f for f in feed_summary(session=s)}
    assert set(summary) == {"income", "medical"}
    income = summary["income"]
    assert (income.last_file, income.last_accepted, income.last_rejected, income.files) == (
        "income/2026-02.csv", 90, 4, 2)
    assert income.last_published_at == T0 + dt.timedelta(days=30)
    assert income.rejects_by_code == {"bad_amount": 3, "unknown_household": 3}
    assert summary["medical"].dept == "medical"


def test_a_refused_file_is_the_latest_file_but_not_a_delivery(engine: Engine) -> None:
    good = receipt("medical", "medical/2026-01.csv", dept="medical")
    refused = FeedFile(id="refused", feed="medical", dept="medical", file="medical/2026-02.csv",
                       sha256="b" * 64, rows_accepted=0, rejects={},
                       published_at=T0 + dt.timedelta(days=30), file_error="文件不是 GBK 编码")
    with Session(engine) as s, s.begin():
        record_feed_files(session=s, receipts=[good, refused])
    with Session(engine) as s:
        (medical,) = feed_summary(session=s)
    assert (medical.last_file, medical.last_error) == ("medical/2026-02.csv", "文件不是 GBK 编码")
    assert medical.last_good_published_at == T0
    registry = CollectorRegistry()
    metrics.register(metrics.watchlist_collector(engine, ttl=0), registry)
    assert registry.get_sample_value("fanpin_department_last_file_timestamp_seconds",
                                     {"feed": "medical", "dept": "medical"}) == T0.timestamp()


def test_watchlist_collector_reads_states_overdue_and_feeds(engine: Engine) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=20)
    with Session(engine) as s:
        record_alerts(session=s, alerts=[make_alert(household(n=1), "2026-03"),
                                         make_alert(household(n=2), "2026-03")], now=old)
        record_alerts(session=s, alerts=[make_alert(household(n=3), "2026-04")])
    with Session(engine) as s:
        set_state(session=s, entry_id=2, state="已接收", actor="test")
        s.commit()
    with Session(engine) as s, s.begin():
        record_feed_files(session=s, receipts=[
            receipt("medical", "medical/2026-01.csv", dept="medical",
                    rejects={"bad_id_number": 2})])
    registry = CollectorRegistry()
    metrics.register(metrics.watchlist_collector(engine, ttl=0), registry)
    value = registry.get_sample_value
    assert value("fanpin_watchlist_entries", {"state": "新预警"}) == 2
    assert value("fanpin_watchlist_entries", {"state": "已接收"}) == 1
    assert value("fanpin_watchlist_entries", {"state": "风险消除"}) == 0
    # two entries are 20 days old and still awaiting identification
    assert value("fanpin_watchlist_overdue_entries") == 2
    assert value("fanpin_department_last_file_timestamp_seconds",
                 {"feed": "medical", "dept": "medical"}) == T0.timestamp()
    assert value("fanpin_department_last_file_rows",
                 {"feed": "medical", "dept": "medical", "outcome": "rejected"}) == 2
    assert value("fanpin_rows_rejected_total", {"feed": "medical", "reason": "bad_id_number"}) == 2


def test_a_failing_read_leaves_the_scrape_working(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path)
    engine.dispose()
    (tmp_path / "var" / "watchlist.db").unlink()
    (tmp_path / "var" / "watchlist.db").mkdir()  # the database cannot be opened now
    registry = CollectorRegistry()
    metrics.register(metrics.watchlist_collector(engine, ttl=0), registry)
    before = metrics.REGISTRY.get_sample_value("fanpin_collector_errors_total",
                                               {"collector": "watchlist"}) or 0
    text = generate_latest(registry).decode()
    assert "fanpin_watchlist_entries" not in text
    assert metrics.REGISTRY.get_sample_value("fanpin_collector_errors_total",
                                             {"collector": "watchlist"}) == before + 1


def test_batch_report_writes_a_textfile(tmp_path: Path) -> None:
    settings = SimpleNamespace(metrics_dir=tmp_path / "metrics", pushgateway_url="")
    report = metrics.BatchReport("fanpin_publish")
    report.add([receipt("income", "income/2026-01.csv", accepted=7, rejects={"bad_amount": 2}),
                receipt("income", "income/2026-02.csv", sha="b", accepted=5,
                        at=T0 + dt.timedelta(days=1))])
    path = report.flush(settings, 1.5)
    assert path == tmp_path / "metrics" / "fanpin_publish.prom"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}
    assert samples[("fanpin_publish_rows", (("feed", "income"), ("outcome", "accepted")))] == 12
    assert samples[("fanpin_publish_rows", (("feed", "income"), ("outcome", "rejected")))] == 2
    assert samples[("fanpin_publish_rejected_rows",
                    (("feed", "income"), ("reason", "bad_amount")))] == 2
    assert samples[("fanpin_publish_last_success_timestamp_seconds", (("feed", "income"),))] \
        == (T0 + dt.timedelta(days=1)).timestamp()
    assert samples[("fanpin_publish_duration_seconds", ())] == 1.5


class _Recorder:
    """Stands in for the KafkaProducer in this unit test (the integration tests use Kafka)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(
        self, topic: str, key: bytes | None = None, value: bytes = b"", partition: int | None = None
    ) -> None:
        self.sent.append((topic, key, value))

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_publishing_a_file_sends_its_receipt_last() -> None:
    rel = "medical/2025-08.csv"  # two rows rejected on purpose
    settings = SimpleNamespace(topic=lambda name: f"t.{name}")
    recorder = _Recorder()
    publisher = Publisher(settings, producer=recorder)  # type: ignore[arg-type]
    ctx = ParseContext(Pseudonymiser(b"k" * 32), load_known_households(SAMPLE / "roster.csv"))
    result = publisher.publish_file(FORMATS["medical"], SAMPLE / rel, rel, ctx)
    topic, key, value = recorder.sent[-1]
    assert (topic, key) == ("t.files", b"medical")
    got = decode_event(value)
    assert isinstance(got, FeedFile)
    expected_rejects = sum(1 for r in read_csv(SAMPLE / "bad_rows.csv") if r["文件"] == rel)
    assert (got.feed, got.dept, got.file) == ("medical", "medical", rel)
    assert sum(got.rejects.values()) == expected_rejects == len(result.rejects) == 2
    rows = sum(len(split_batch(v)) for _, _, v in recorder.sent[:-1])  # batch messages
    assert got.rows_accepted == result.events == rows
    assert result.receipts == [got]


def test_web_serves_metrics(engine: Engine) -> None:
    client = TestClient(create_app(engine=engine, metrics=True))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "fanpin_events_in_total" in response.text or "fanpin_events_in" in response.text
    assert TestClient(create_app(engine=engine)).get("/metrics").status_code == 404


def test_exposition_passes_promtool_lint(engine: Engine) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/install.sh --test"
    metrics.EVENTS_IN.labels("medical", "medical").inc()
    metrics.ALERTS_RAISED.labels("income_drop", "因务工就业不稳").inc()
    metrics.RULE_EVALUATION.observe(0.0001)
    registry = CollectorRegistry()
    metrics.register(metrics.watchlist_collector(engine, ttl=0), registry)
    for text in (generate_latest(metrics.REGISTRY), generate_latest(registry)):
        run = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             check=False)
        assert run.returncode == 0, (run.stdout + run.stderr).decode()

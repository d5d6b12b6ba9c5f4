"""The sink outlives a failed offset commit (the broker restarting) and commits later."""

from __future__ import annotations

from decimal import Decimal
from threading import Event
from types import SimpleNamespace

from kafka.errors import KafkaConnectionError

from consumers.sink import AlertSink
from fanpin.settings import Settings
from schemas.events import MonitoringLine, Origin, encode


class FakeConsumer:
    """One batch, then empty polls; the first commit fails as with the broker away."""

    def __init__(self, stop: Event, topic: str) -> None:
        record = SimpleNamespace(topic=topic, partition=0, offset=0, timestamp=0, value=encode(
            MonitoringLine(id="l", origin=Origin("rural", "thresholds.csv", 2), year=2025,
                           line=Decimal("7000"))))
        self.batches: list[dict[str, list[object]]] = [{"tp": [record]}]
        self.commits = 0
        self.polls = 0
        self.stop = stop

    def poll(self, timeout_ms: int) -> dict[str, list[object]]:
        self.polls += 1
        if self.polls > 5:
            self.stop.set()
        return self.batches.pop(0) if self.batches else {}

    def commit(self) -> None:
        self.commits += 1
        if self.commits == 1:
            raise KafkaConnectionError("111 ECONNREFUSED")
        self.stop.set()


def test_a_failed_commit_is_logged_and_done_again_on_the_next_poll(caplog) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(topic_prefix="t")
    stop = Event()
    sink = AlertSink.__new__(AlertSink)  # no broker, no database: only the loop is tested
    sink.settings = settings
    sink.stop = stop
    sink.consumer = FakeConsumer(stop, settings.topic("reference"))  # type: ignore[assignment]
    sink.producer = SimpleNamespace(flush=lambda: None)  # type: ignore[assignment]
    sink.written = 0
    sink.commit_pending = False
    sink.run()  # returns instead of dying on KafkaConnectionError
    assert sink.consumer.commits == 2  # type: ignore[attr-defined]
    assert not sink.commit_pending
    assert "could not commit the sink's offsets (KafkaConnectionError" in caplog.text

"""The alert sink: alerts topic -> watch list, at least once and idempotent.

It also records the department file receipts from the files topic (``FeedFile``), just
as idempotently, before the alerts of the same poll, and the region names from the
reference topic (``Region``), which the watch-list pages use for their region filter.

Offsets are committed only after the watch-list transaction has committed, so a crash
replays the last batch; replaying is harmless because every alert id is recorded once and
a household's open entry absorbs repeated alerts. A message that is not an alert goes to
the dead-letter topic. When the database is down the sink keeps the batch and retries with
backoff instead of moving on.
"""

from __future__ import annotations

import logging
import signal
import time
from threading import Event

import msgspec
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from consumers.watchlist.feeds import record_feed_files, record_regions
from consumers.watchlist.models import create_engine_for, init_db
from consumers.watchlist.service import record_alerts
from fanpin.kafka_admin import sink_group
from fanpin.kafka_check import check_kafka
from fanpin.metrics import (
    DEAD_LETTERS,
    EVENT_TO_ALERT,
    FEED_FILES,
    SINK_RETRIES,
    WATCHLIST_WRITES,
)
from fanpin.settings import Settings
from schemas.events import (
    Alert,
    DeadLetter,
    FeedFile,
    MonitoringLine,
    Region,
    decode_event,
    encode,
)

log = logging.getLogger(__name__)


class AlertSink:
    def __init__(self, settings: Settings, *, stop: Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or Event()
        self.engine = create_engine_for(settings.watchlist_url)
        init_db(self.engine)
        check_kafka(settings)
        opts = settings.kafka_client_options()
        self.consumer = KafkaConsumer(
            settings.topic("alerts"),
            settings.topic("files"),
            settings.topic("reference"),
            bootstrap_servers=settings.bootstrap_servers,
            group_id=sink_group(settings),
            client_id="fanpin-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=1000,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            **opts,
        )
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                      client_id="fanpin-sink-dlq", acks="all", **opts)
        self.written = 0
        self.commit_pending = False  # the last commit failed (broker away)

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush()
        self.producer.close()
        self.engine.dispose()

    def run(self) -> None:
        log.info("sink writing alerts to the watch list")
        while not self.stop.is_set():
            batch = self.consumer.poll(timeout_ms=500)
            if not batch:
                if self.commit_pending:
                    self._commit()  # a commit failed and no batch came since to redo it
                continue
            alerts: list[Alert] = []
            receipts: list[FeedFile] = []
            regions: list[Region] = []
            stamps: list[float] = []
            for records in batch.values():
                for record in records:
                    event = self._decode(record)
                    if isinstance(event, Alert):
                        alerts.append(event)
                        stamps.append(record.timestamp / 1000.0)
                    elif isinstance(event, FeedFile):
                        receipts.append(event)
                    elif isinstance(event, Region):
                        regions.append(event)
            if alerts or receipts or regions:
                self._write_with_retry(alerts, receipts, regions)
                now = time.time()
                for stamp in stamps:
                    EVENT_TO_ALERT.observe(max(0.0, now - stamp))
            self.producer.flush()
            self._commit()

    def _commit(self) -> None:
        """Commit the offsets of the batch just written. When the broker is away (a restart,
        a network cut) the commit fails; the batch is in the watch list already, so carry
        on: the next commit covers its offsets, and should the sink stop before that, the
        batch comes again and every alert in it is recorded once."""
        try:
            self.consumer.commit()
        except KafkaError as exc:
            self.commit_pending = True
            log.warning("could not commit the sink's offsets (%s: %s); the next commit "
                        "covers them", type(exc).__name__, exc)
        else:
            self.commit_pending = False

    def _decode(self, record):  # type: ignore[no-untyped-def]
        expected: tuple[type, ...] = {
            self.settings.topic("alerts"): (Alert,),
            self.settings.topic("files"): (FeedFile,),
        }.get(record.topic, (Region, MonitoringLine))
        try:
            event = decode_event(record.value)
            if isinstance(event, expected):
                return event
            reason = f"{type(event).__name__} does not belong on {record.topic}"
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            reason = f"not a known event: {exc}"
        raw = record.value or b""
        self.producer.send(self.settings.topic("dead-letters"), value=encode(DeadLetter(
            topic=record.topic, partition=record.partition, offset=record.offset,
            reason=reason[:500], payload=raw[:4096].decode("utf-8", "replace"),
            consumer="alert-sink")))
        DEAD_LETTERS.labels("alert-sink").inc()
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition,
                    record.offset, reason[:200])
        return None

    def _write_with_retry(self, alerts: list[Alert], receipts: list[FeedFile],
                          regions: list[Region] | None = None) -> None:
        delay = 0.5
        while True:
            try:
                files = 0
                if regions:
                    with Session(self.engine) as session, session.begin():
                        record_regions(session=session, regions=regions)
                if receipts:
                    with Session(self.engine) as session, session.begin():
                        files = record_feed_files(session=session, receipts=receipts)
                with Session(self.engine) as session, session.begin():
                    stats = record_alerts(session=session, alerts=alerts)
                self.written += len(alerts)
                WATCHLIST_WRITES.labels("new").inc(stats.new_entries)
                WATCHLIST_WRITES.labels("merged").inc(stats.merged)
                WATCHLIST_WRITES.labels("duplicate").inc(stats.duplicates)
                WATCHLIST_WRITES.labels("revised").inc(stats.revised)
                for r in receipts:
                    FEED_FILES.labels(r.feed).inc()
                if alerts:
                    log.info("watch list: %d new entries, %d merged, %d already recorded, "
                             "%d revised", stats.new_entries, stats.merged, stats.duplicates,
                             stats.revised)
                if receipts:
                    log.info("feed files: %d receipts, %d new", len(receipts), files)
                return
            except (OperationalError, DBAPIError) as exc:
                SINK_RETRIES.inc()
                if self.stop.is_set():
                    raise
                log.warning("watch list unavailable (%s); retrying in %.1fs",
                            type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


def run_sink(settings: Settings) -> None:
    stop = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sink = AlertSink(settings, stop=stop)
    try:
        sink.run()
    finally:
        sink.close()

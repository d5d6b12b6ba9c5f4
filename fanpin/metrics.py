"""Every Prometheus metric Fanpin exports, defined once.

Long-running processes expose ``/metrics``:

- the worker and the sink with ``prometheus_client``'s own HTTP server
  (``FANPIN_WORKER_METRICS_PORT``, ``FANPIN_SINK_METRICS_PORT``);
- ``fanpin web`` on its own port, next to the watch list.

Batch commands (``publish``, ``replay``) write a textfile-collector file under
``FANPIN_METRICS_TEXTFILE_DIR`` and, when ``FANPIN_PUSHGATEWAY_URL`` is set, push to a
Pushgateway as well.

Names carry the ``fanpin_`` prefix and a unit suffix. No label ever holds a household, a
person or a file name: labels are departments, event kinds, reject codes, rules, risk
types, workflow states, consumer groups, topics and partitions, all small fixed sets.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
    write_to_textfile,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

# --- worker ---------------------------------------------------------------------------

EVENTS_IN = Counter(
    "fanpin_events_in", "Department events taken in by the worker, by department and kind.",
    ["dept", "kind"])
ALERTS_RAISED = Counter(
    "fanpin_alerts_raised", "Early warnings raised, by the leading rule and risk type.",
    ["rule", "risk_type"])
RULE_EVALUATION = Histogram(
    "fanpin_rule_evaluation_seconds", "Time to fold one event into a household's state and "
    "judge it (the pure rules and the state's decoding, without Kafka): one observation per "
    "household-events message, the mean over its events.",
    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25))
FETCH_RESUMED = Counter(
    "fanpin_worker_fetch_resumed", "Partitions the worker found stalled (lag while idle) "
    "and resumed from their committed offset.")
DEAD_LETTERS = Counter(
    "fanpin_dead_letters", "Messages sent to the dead-letter topic, by the consumer that gave "
    "up on them.", ["consumer"])

# --- sink -----------------------------------------------------------------------------

EVENT_TO_ALERT = Histogram(
    "fanpin_event_to_alert_lag_seconds", "From the department event that triggered an alert "
    "being published to Kafka, to the alert committed on the watch list.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600))
WATCHLIST_WRITES = Counter(
    "fanpin_watchlist_alerts", "Alerts written to the watch list: a new entry, merged into an "
    "open entry, already recorded (a replay), or revised (a month judged again with late "
    "data).", ["result"])
SINK_RETRIES = Counter(
    "fanpin_sink_db_retries", "Watch-list transactions retried because the database was "
    "unavailable.")
FEED_FILES = Counter(
    "fanpin_feed_files_recorded", "Department file receipts recorded on the watch list.",
    ["feed"])

# --- notifications (WeCom / DingTalk robots, SMTP) ---------------------------------------

NOTIFICATIONS_SENT = Counter(
    "fanpin_notifications_sent", "Notifications delivered, by channel.", ["channel"])
NOTIFICATION_FAILURES = Counter(
    "fanpin_notification_failures", "Notifications that failed after all retries, by "
    "channel.", ["channel"])

BUILD_INFO = Info("fanpin_build", "Fanpin version and the rule version in force.")


def set_build_info(role: str, rule_version: str = "") -> None:
    from fanpin import __version__

    BUILD_INFO.info({"version": __version__, "role": role, "rule_version": rule_version})


def kind_of(tag: str) -> str:
    """``income.v1`` -> ``income`` (the label never carries the schema version)."""
    return tag.split(".", 1)[0]


def serve(port: int, host: str = "127.0.0.1") -> bool:
    """Expose the default registry on ``host:port``; port 0 turns it off.

    A port already taken (a second worker on the same host left at the default) is logged
    and skipped rather than stopping the process: processing matters more than scraping.
    """
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics not served on %s:%d (%s); set another port", host, port, exc)
        return False
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True


# --- collectors read on every scrape ----------------------------------------------------

class _Cached(Collector):
    """Runs ``produce`` at most every ``ttl`` seconds; a failed read yields nothing (the
    scrape still succeeds, and ``fanpin_collector_errors_total`` counts the failure)."""

    errors = Counter("fanpin_collector_errors", "Scrape-time reads that failed.", ["collector"])

    def __init__(self, name: str, produce: Callable[[], list[Metric]], ttl: float) -> None:
        self.name = name
        self.produce = produce
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._metrics: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                try:
                    self._metrics = self.produce()
                except Exception as exc:  # noqa: BLE001 - a scrape must not fail on a read
                    log.warning("metrics collector %s failed: %s", self.name, exc)
                    self.errors.labels(self.name).inc()
                    self._metrics = []
                self._at = time.monotonic()
            return iter(list(self._metrics))

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time: nothing to check for duplicates up front


def consumer_lag_collector(settings: Any, ttl: float = 2.0) -> Collector:
    """``fanpin_consumer_lag_messages{group,topic,partition}``: end offset minus committed
    offset for the worker's and the sink's consumer groups, read from the broker."""
    from fanpin.kafka_admin import Admin, pipeline_groups

    admin: Admin | None = None

    def produce() -> list[Metric]:
        nonlocal admin
        if admin is None:
            admin = Admin(settings)
        fam = GaugeMetricFamily(
            "fanpin_consumer_lag_messages", "Messages published but not yet committed by a "
            "consumer group, per partition.", labels=["group", "topic", "partition"])
        for group, topics in pipeline_groups(settings).items():
            for tp, lag in sorted(admin.partition_lag(group, topics).items()):
                fam.add_metric([group, tp.topic, str(tp.partition)], lag)
        return [fam]

    return _Cached("consumer_lag", produce, ttl)


def watchlist_collector(engine: Any, ttl: float = 5.0) -> Collector:
    """Watch-list entries by state, overdue entries, and what each department last sent."""
    from sqlalchemy.orm import Session

    from consumers.watchlist.feeds import feed_summary
    from consumers.watchlist.models import STATES
    from consumers.watchlist.service import counts_by_state, overdue_count

    def produce() -> list[Metric]:
        with Session(engine) as session:
            by_state = counts_by_state(session=session)
            overdue = overdue_count(session=session, now=dt.datetime.now(dt.UTC))
            feeds = feed_summary(session=session)
        entries = GaugeMetricFamily("fanpin_watchlist_entries",
                                    "Watch-list entries by workflow state.", labels=["state"])
        for state in STATES:
            entries.add_metric([state], by_state.get(state, 0))
        over = GaugeMetricFamily("fanpin_watchlist_overdue_entries", "Open entries past the "
                                 "15-day identification deadline.")
        over.add_metric([], overdue)
        last = GaugeMetricFamily("fanpin_department_last_file_timestamp_seconds",
                                 "When each feed's latest file that was not refused as a "
                                 "whole was published.", labels=["feed", "dept"])
        rows = GaugeMetricFamily("fanpin_department_last_file_rows", "Rows in each feed's "
                                 "latest file, accepted or rejected.",
                                 labels=["feed", "dept", "outcome"])
        rejected = CounterMetricFamily("fanpin_rows_rejected", "Rows rejected in all files "
                                       "recorded, by feed and reason code (each distinct file "
                                       "counted once, however often it is published).",
                                       labels=["feed", "reason"])
        for f in feeds:
            if f.last_good_published_at is not None:
                last.add_metric([f.feed, f.dept], f.last_good_published_at.timestamp())
            rows.add_metric([f.feed, f.dept, "accepted"], f.last_accepted)
            rows.add_metric([f.feed, f.dept, "rejected"], f.last_rejected)
            for code, n in sorted(f.rejects_by_code.items()):
                rejected.add_metric([f.feed, code], n)
        return [entries, over, last, rows, rejected]

    return _Cached("watchlist", produce, ttl)


def register(collector: Collector, registry: CollectorRegistry = REGISTRY) -> Collector:
    registry.register(collector)
    return collector


# --- batch commands ---------------------------------------------------------------------

class BatchReport:
    """Metrics of one ``publish``/``replay`` run, written as a textfile and pushed."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.registry = CollectorRegistry()
        self.rows = Gauge("fanpin_publish_rows", "Rows in the files of the last run, by "
                          "feed and outcome.", ["feed", "outcome"], registry=self.registry)
        self.rejects = Gauge("fanpin_publish_rejected_rows", "Rows rejected in the last run, "
                             "by feed and reason code.", ["feed", "reason"],
                             registry=self.registry)
        self.last = Gauge("fanpin_publish_last_success_timestamp_seconds", "When a file of "
                          "each feed was last published.", ["feed"], registry=self.registry)
        self.duration = Gauge("fanpin_publish_duration_seconds", "Wall time of the last run.",
                              registry=self.registry)

    def add(self, receipts: Iterable[Any]) -> None:
        """Count the ``schemas.events.FeedFile`` receipts of the files just published."""
        for r in receipts:
            self.rows.labels(r.feed, "accepted").inc(r.rows_accepted)
            self.rows.labels(r.feed, "rejected").inc(sum(r.rejects.values()))
            for code, n in r.rejects.items():
                self.rejects.labels(r.feed, code).inc(n)
            if r.file_error is None:
                self.last.labels(r.feed).set(r.published_at.timestamp())

    def flush(self, settings: Any, seconds: float) -> Path:
        """Write ``<dir>/<job>.prom`` atomically and push if a Pushgateway is configured."""
        self.duration.set(seconds)
        directory = Path(settings.metrics_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.job}.prom"
        write_to_textfile(str(path), self.registry)
        if settings.pushgateway_url:
            from prometheus_client import pushadd_to_gateway

            try:
                pushadd_to_gateway(settings.pushgateway_url, job=self.job,
                                   registry=self.registry, timeout=10)
            except OSError as exc:
                log.warning("could not push metrics to %s: %s", settings.pushgateway_url, exc)
        return path

"""Nothing lost, nothing duplicated: fault tests on the real stack.

Every test replays the same small simulated scenario through the session's Apache Kafka
broker, a real worker and a real sink (``fanpin worker`` / ``fanpin sink`` processes), into
its own new PostgreSQL database, with its own topic prefix. One undisturbed run
(``baseline``, once per module) gives the watch list each disturbed run must end with,
exactly (the late-data runs of 5. excepted):

1. the worker killed with SIGKILL right after its first alert of a month, restarted later;
2. the sink killed with SIGKILL with alerts in flight, restarted two months later;
3. PostgreSQL stopped for 30 s mid-replay (the sink retries with growing delays);
4. every department file published twice, then the whole scenario once more;
5. months published out of order, and a medical file published after the next month's
   income: there the watch list is the rules' answer for that arrival order, which
   differs from the undisturbed one by design (see ``test_late_data``);
6. the broker stopped and started again mid-replay (last, so later modules get a broker
   that has been through it and is healthy again).

A run is driven here as ``fanpin replay`` drives it (``fanpin.replay.replay``): publish the
files in order and, before a month's income file, wait until the worker has passed every
person event on. The driver takes the file order and calls a hook before a given file,
which is where each fault is injected.

The comparison is canonical: every entry (entry key, household, state, severity, risk
types, rules, first and last month, alert count) with the set of its alert ids; and the
counts of entries, duplicates (an alert id stored twice, or a household with two open
entries) and lost alerts (expected ids missing). With ``FANPIN_RELIABILITY_OUT`` set, the
module writes a JSON summary there; ``scripts/reliability_table.py`` turns it into the
table in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from sqlalchemy import text
from sqlalchemy.orm import Session

from consumers.watchlist.models import OPEN_STATES, create_engine_for, init_db
from consumers.watchlist.service import record_alerts
from fanpin.broker import LocalBroker
from fanpin.kafka_admin import Admin, pipeline_groups, sink_group, worker_group
from fanpin.privacy import Pseudonymiser
from fanpin.services import ProcessDied, Services
from fanpin.settings import Settings
from producers.common import ParseContext, Reject
from producers.publish import Publisher
from producers.scenario import load_known_households, scenario_files
from streams.offline import OfflinePipeline
from tests.fixtures.kafka import free_port
from tests.fixtures.postgres import _admin_connect, _Server, drop_database
from tests.helpers import cli_env

pytestmark = pytest.mark.integration

#: The scenario: small enough for a run in well under a minute, big enough that the months
#: the faults strike raise alerts (the baseline checks that).
HOUSEHOLDS, MONTHS, SEED = 300, 14, 7
KEY = "fault-tests-" + "k" * 32  # one pseudonym key for every run and the offline rules
WAIT = 300.0  # seconds any one wait may take; generous, the machine is shared
OUTAGE_SECONDS = 30.0

# Fault points, as indexes into the scenario's months (2024-11 is 0).
FAULT = 6  # the worker, sink, database and broker faults strike while month 6 is judged
SWAPPED = 8  # months 8 and 9 are published in the order 9, 8
LATE_MEDICAL = 11  # medical/<month 11> is published after income/<month 12>


# --- the canonical watch list -------------------------------------------------------------

ENTRY_FIELDS = ("household_id", "state", "severity", "risk_types", "rules", "first_month",
                "last_month", "alert_count")


@dataclass
class Snapshot:
    """A watch list reduced to what must not change."""

    #: entry_key -> ENTRY_FIELDS values, then the sorted ids of the entry's alerts
    entries: dict[str, tuple[object, ...]]
    #: alert id -> (household, month, severity, risk type, rules of its reasons)
    alerts: dict[str, tuple[str, str, str, str, tuple[str, ...]]]
    alert_rows: int  # rows in watchlist_alerts (distinct ids: len(alerts))
    doubly_open: list[str]  # households with more than one open entry
    miscounted: list[str]  # entries whose alert_count is not the number of their alerts

    @property
    def duplicates(self) -> int:
        return self.alert_rows - len(self.alerts) + len(self.doubly_open)

    def by_month(self) -> dict[str, dict[str, tuple[object, ...]]]:
        out: dict[str, dict[str, tuple[object, ...]]] = {}
        for alert_id, facts in self.alerts.items():
            out.setdefault(facts[1], {})[alert_id] = facts
        return out


def snapshot(url: str) -> Snapshot:
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            entries = conn.execute(text(
                "SELECT id, entry_key, " + ", ".join(ENTRY_FIELDS) + " FROM watchlist_entries"
            )).all()
            alerts = conn.execute(text(
                "SELECT alert_id, entry_id, payload FROM watchlist_alerts")).all()
            open_states = ", ".join(f"'{s}'" for s in OPEN_STATES)
            doubly_open = conn.execute(text(
                "SELECT household_id FROM watchlist_entries WHERE state IN "
                f"({open_states}) GROUP BY household_id HAVING count(*) > 1")).scalars().all()
    finally:
        engine.dispose()
    ids_of: dict[int, list[str]] = {}
    facts: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {}
    for alert_id, entry_id, payload in alerts:
        ids_of.setdefault(entry_id, []).append(alert_id)
        a = json.loads(payload)
        facts[alert_id] = (a["household_id"], a["month"], a["severity"], a["risk_type"],
                           tuple(r["rule"] for r in a["reasons"]))
    canonical = {row[1]: (*row[2:], tuple(sorted(ids_of.get(row[0], ())))) for row in entries}
    miscounted = [key for key, values in canonical.items()
                  if values[ENTRY_FIELDS.index("alert_count")] != len(values[-1])]  # type: ignore[arg-type]
    return Snapshot(entries=canonical, alerts=facts, alert_rows=len(alerts),
                    doubly_open=list(doubly_open), miscounted=miscounted)


def compare(expected: Snapshot, found: Snapshot) -> dict[str, object]:
    lost = sorted(set(expected.alerts) - set(found.alerts))
    extra = sorted(set(found.alerts) - set(expected.alerts))
    keys = set(expected.entries) | set(found.entries)
    differing = sorted(k for k in keys if expected.entries.get(k) != found.entries.get(k))
    return {
        "entries_expected": len(expected.entries),
        "entries_found": len(found.entries),
        "duplicates": found.duplicates,
        "lost": len(lost),
        "extra": len(extra),
        "differing_entries": len(differing),
        "alerts_expected": len(expected.alerts),
        "alerts_found": len(found.alerts),
        "examples": {
            "lost": [expected.alerts[a][:2] for a in lost[:5]],
            "extra": [found.alerts[a][:2] for a in extra[:5]],
            "differing": [{"entry": k, "expected": expected.entries.get(k),
                           "found": found.entries.get(k)} for k in differing[:3]],
        },
    }


def assert_consistent(found: Snapshot) -> None:
    assert found.alert_rows == len(found.alerts), "an alert id is stored twice"
    assert not found.doubly_open, f"households with two open entries: {found.doubly_open}"
    assert not found.miscounted, f"alert_count differs from the alerts stored: {found.miscounted}"


def assert_same(expected: Snapshot, found: Snapshot) -> None:
    """The whole watch list is the expected one, entry by entry and alert by alert."""
    assert_consistent(found)
    diff = compare(expected, found)
    assert diff["lost"] == 0 and diff["extra"] == 0 and diff["differing_entries"] == 0, diff
    assert found.entries == expected.entries
    assert found.alerts == expected.alerts


# --- the scenario and the rules offline ---------------------------------------------------

@dataclass
class Scenario:
    root: Path
    files: list[str]  # in publish order
    months: list[str]

    def month_files(self, month: str) -> list[str]:
        return [rel for rel in self.files if rel.endswith(f"/{month}.csv")]

    @property
    def head(self) -> list[str]:
        return [rel for rel in self.files if "/" not in rel]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("fault-scenario")
    proc = subprocess.run(
        [sys.executable, "-m", "fanpin", "simulate", str(root), "--households", str(HOUSEHOLDS),
         "--months", str(MONTHS), "--seed", str(SEED), "--jobs", "1", "--force"],
        env=cli_env({}), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = [rel for rel, _, _ in scenario_files(root)]
    months = sorted({rel.split("/")[1].removesuffix(".csv") for rel in files if "/" in rel})
    assert len(months) == MONTHS
    return Scenario(root, files, months)


def offline_snapshot(scenario: Scenario, order: list[str], db: Path) -> Snapshot:
    """The watch list the rules give when the files arrive in ``order``, each event once."""
    ctx = ParseContext(Pseudonymiser(KEY.encode()),
                       load_known_households(scenario.root / "roster.csv"))
    files = {rel: (path, fmt) for rel, path, fmt in scenario_files(scenario.root)}
    pipeline = OfflinePipeline()
    for rel in order:
        path, fmt = files[rel]
        pipeline.feed(e for e in fmt.parse_file(path, rel, ctx) if not isinstance(e, Reject))
    url = f"sqlite:///{db}"
    engine = create_engine_for(url)
    init_db(engine)
    with Session(engine) as session:
        record_alerts(session=session, alerts=pipeline.alerts)
    engine.dispose()
    return snapshot(url)


# --- one run: a worker and a sink on fresh topics and a fresh database ----------------------

class Stack:
    """The worker and the sink of one run, started by fanpin's own ``Services`` (logs in
    ``<var>/logs``), which stops exactly them afterwards. A process killed on purpose is
    left out of the liveness check until it is restarted."""

    def __init__(self, settings: Settings) -> None:
        self.services = Services(settings, need=("worker", "sink"))
        self.down: set[str] = set()
        self.log_dir = self.services.log_dir

    def __enter__(self) -> Stack:
        self.services.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.services.__exit__()

    def kill(self, name: str) -> None:
        proc = self.services.children[name]
        os.kill(proc.pid, signal.SIGKILL)  # a process this run started, by its PID
        proc.wait()
        self.down.add(name)

    def restart(self, name: str) -> None:
        self.services.spawn(name)
        self.down.discard(name)

    def check_alive(self) -> None:
        for name, proc in self.services.children.items():
            if name not in self.down and proc.poll() is not None:
                log = self.log_dir / f"{name}.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise ProcessDied(f"the {name} exited with code {proc.returncode}:\n{tail}")

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


@dataclass
class Run:
    env: dict[str, str]
    settings: Settings
    database_url: str
    stack: Stack | None = None
    admin: Admin | None = None
    seconds: float = 0.0
    notes: dict[str, object] = field(default_factory=dict)

    # -- progress, read from the broker --

    def alerts_published(self) -> int:
        assert self.admin is not None
        return sum(self.admin.end_offsets(self.settings.topic("alerts")).values())

    def lag(self, group: str, topic: str) -> int:
        assert self.admin is not None
        return sum(self.admin.partition_lag(group, [self.settings.topic(topic)]).values())

    def wait_caught_up(self, group: str, topics: list[str]) -> None:
        """``Admin.wait_caught_up``, riding over the broker being away: right after a broker
        restart kafka-python's admin client raises (NodeNotReadyError) instead of waiting,
        which would end the replay rather than test the pipeline."""
        assert self.admin is not None and self.stack is not None
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.admin.wait_caught_up(group, topics, timeout=deadline - time.monotonic(),
                                          alive=self.stack.check_alive)
                return
            except KafkaError as exc:
                if time.monotonic() > deadline:
                    raise
                errors = self.notes.setdefault("harness_kafka_errors", [])
                errors.append(type(exc).__name__)  # type: ignore[union-attr]
                time.sleep(1)

    def worker_done(self) -> None:
        """Wait until the worker has judged everything published so far."""
        self.wait_caught_up(worker_group(self.settings), [self.settings.topic("household-events")])

    def wait_for_alerts_after(self, count: int) -> None:
        """Block until the worker has published an alert beyond the first ``count``: it is
        in the middle of judging a month."""
        deadline = time.monotonic() + WAIT
        while self.alerts_published() <= count:
            assert self.stack is not None
            self.stack.check_alive()
            assert time.monotonic() < deadline, "no new alert: the fault month raises none?"
            time.sleep(0.02)

    def alerts_on_topic(self) -> Counter[str]:
        """How often each alert id was published (a redelivery after a crash counts twice)."""
        consumer = KafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers,
                                 enable_auto_commit=False)
        try:
            topic = self.settings.topic("alerts")
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            ids: Counter[str] = Counter()
            deadline = time.monotonic() + WAIT
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                assert time.monotonic() < deadline, "could not read the alerts topic back"
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        ids[json.loads(r.value)["id"]] += 1
            return ids
        finally:
            consumer.close()

    # -- driving a replay --

    def replay(self, scenario: Scenario, order: list[str],
               hooks: dict[str, Callable[[], None]] | None = None) -> Snapshot:
        """Publish ``order`` as ``fanpin replay`` does, calling ``hooks[rel]`` before the
        file ``rel``, wait until the worker and the sink have processed everything, and
        return the watch list."""
        hooks = hooks or {}
        started = time.monotonic()
        ctx = ParseContext(Pseudonymiser(self.settings.pseudonym_secret()),
                           load_known_households(scenario.root / "roster.csv"))
        files = {rel: (path, fmt) for rel, path, fmt in scenario_files(scenario.root)}
        worker = worker_group(self.settings)
        person = [self.settings.topic("person-events")]
        with Stack(self.settings) as stack:
            self.stack = stack
            self.admin = Admin(self.settings)
            try:
                publisher = Publisher(self.settings)
                try:
                    for rel in order:
                        if rel in hooks:
                            publisher.flush()
                            hooks[rel]()
                        if rel.startswith("income/"):
                            # the month's person events must reach their households first
                            publisher.flush()
                            self.wait_caught_up(worker, person)
                        path, fmt = files[rel]
                        result = publisher.publish_file(fmt, path, rel, ctx, progress=False)
                        assert not result.file_errors, result.file_errors
                    publisher.flush()
                finally:
                    publisher.close()
                self.wait_caught_up(worker, person)
                self.worker_done()
                sink = sink_group(self.settings)
                self.wait_caught_up(sink, pipeline_groups(self.settings)[sink])
                stack.check_alive()  # nobody died unnoticed at the very end
                on_topic = self.alerts_on_topic()
                self.notes["alerts_published"] = sum(on_topic.values())
                self.notes["alerts_published_again"] = sum(n - 1 for n in on_topic.values())
            finally:
                self.admin.close()
                self.admin = None
        self.seconds = time.monotonic() - started
        return snapshot(self.database_url)


@contextlib.contextmanager
def fresh_run(broker: LocalBroker, postgres_url: str, var_dir: Path) -> Iterator[Run]:
    """A new topic prefix and a new PostgreSQL database; the database is dropped and the
    topics deleted afterwards."""
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:16]}"
    with _admin_connect(postgres_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    env = {
        "FANPIN_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "FANPIN_TOPIC_PREFIX": f"f{uuid.uuid4().hex[:10]}",
        "FANPIN_VAR_DIR": str(var_dir),
        "FANPIN_PSEUDONYM_KEY": KEY,
        "FANPIN_PARTITIONS": "4",
        "FANPIN_LOG_LEVEL": "INFO",
        "FANPIN_DATABASE_URL": url,
        # never the defaults, so a demo running on this machine is left alone
        "FANPIN_WORKER_METRICS_PORT": str(free_port()),
        "FANPIN_SINK_METRICS_PORT": str(free_port()),
        "FANPIN_WEB_PORT": str(free_port()),
    }
    settings = Settings(**{k.removeprefix("FANPIN_").lower(): v for k, v in env.items()})
    try:
        yield Run(env=env, settings=settings, database_url=url)
    finally:
        _delete_topics(settings)
        drop_database(postgres_url, name, pause=1)


def _delete_topics(settings: Settings) -> None:
    """Best effort: the run's topics (its prefix's and its worker's) off the session broker."""
    from kafka import KafkaAdminClient

    with contextlib.suppress(KafkaError, OSError):
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                 request_timeout_ms=30000)
        try:
            mine = [t for t in admin.list_topics()
                    if t.startswith((settings.topic_prefix + ".", settings.topic_prefix + "-"))]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()


# --- the report ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report() -> Iterator[list[dict[str, object]]]:
    """Rows of the reliability table; written as JSON to FANPIN_RELIABILITY_OUT at the end."""
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    yield rows
    out = os.environ.get("FANPIN_RELIABILITY_OUT")
    if out:
        Path(out).write_text(json.dumps({
            "date": dt.date.today().isoformat(),
            "scenario": {"households": HOUSEHOLDS, "months": MONTHS, "seed": SEED,
                         "generator": "fanpin simulate", "partitions": 4},
            "module_seconds": round(time.monotonic() - started, 1),
            "rows": rows,
        }, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")


def add_row(report: list[dict[str, object]], scenario: str, done: str, run: Run,
            diff: dict[str, object], result: str) -> None:
    report.append({"scenario": scenario, "done": done, **diff, "result": result,
                   "seconds": round(run.seconds, 1), "notes": run.notes})


@dataclass
class Baseline:
    snapshot: Snapshot
    run: Run


@pytest.fixture(scope="module")
def baseline(scenario: Scenario, kafka_broker: LocalBroker, postgres_url: str,
             tmp_path_factory: pytest.TempPathFactory,
             report: list[dict[str, object]]) -> Baseline:
    """The undisturbed run every fault test is compared with (once per module)."""
    with fresh_run(kafka_broker, postgres_url, tmp_path_factory.mktemp("baseline")) as run:
        snap = run.replay(scenario, scenario.files)
    assert_consistent(snap)
    by_month = snap.by_month()
    for i in (FAULT, SWAPPED, SWAPPED + 1, LATE_MEDICAL, LATE_MEDICAL + 1):
        assert by_month.get(scenario.months[i]), f"month {scenario.months[i]} raises no alert"
    add_row(report, "undisturbed", "replay in order, nothing disturbed (the reference)", run,
            compare(snap, snap), "reference")
    return Baseline(snap, run)


# --- the tests ----------------------------------------------------------------------------

def test_undisturbed_run_is_what_the_rules_give_offline(
    scenario: Scenario, baseline: Baseline, tmp_path: Path,
) -> None:
    """The reference itself is right: the rules run offline over the same files, each event
    exactly once, give the same watch list."""
    assert_same(offline_snapshot(scenario, scenario.files, tmp_path / "offline.db"),
                baseline.snapshot)


def _fault_month(scenario: Scenario) -> tuple[str, str]:
    """(income file of the fault month, the file published right after it)."""
    month, after = scenario.months[FAULT], scenario.months[FAULT + 1]
    return f"income/{month}.csv", f"medical/{after}.csv"


def test_worker_killed_mid_replay_then_restarted(
    scenario: Scenario, baseline: Baseline, kafka_broker: LocalBroker, postgres_url: str,
    tmp_path: Path, report: list[dict[str, object]],
) -> None:
    income, after = _fault_month(scenario)
    restart_at = f"income/{scenario.months[FAULT + 1]}.csv"
    with fresh_run(kafka_broker, postgres_url, tmp_path / "var") as run:
        mark: dict[str, int] = {}

        def before_income() -> None:
            run.worker_done()
            mark["alerts"] = run.alerts_published()

        def kill() -> None:
            run.wait_for_alerts_after(mark["alerts"])  # the worker is judging the month
            assert run.stack is not None
            run.stack.kill("worker")
            run.notes["alerts_out_when_killed"] = run.alerts_published() - mark["alerts"]
            run.notes["uncommitted_messages_when_killed"] = run.lag(
                worker_group(run.settings), "household-events")

        def restart() -> None:
            assert run.stack is not None
            run.stack.restart("worker")

        found = run.replay(scenario, scenario.files,
                           {income: before_income, after: kill, restart_at: restart})
    diff = compare(baseline.snapshot, found)
    add_row(report, "worker kill -9", f"kill -9 of the worker once {income} had raised "
            f"{run.notes['alerts_out_when_killed']} alerts; restarted before {restart_at}",
            run, diff, "pass")
    assert_same(baseline.snapshot, found)


def test_sink_killed_mid_replay_then_restarted(
    scenario: Scenario, baseline: Baseline, kafka_broker: LocalBroker, postgres_url: str,
    tmp_path: Path, report: list[dict[str, object]],
) -> None:
    income, after = _fault_month(scenario)
    restart_at = f"medical/{scenario.months[FAULT + 3]}.csv"
    with fresh_run(kafka_broker, postgres_url, tmp_path / "var") as run:
        mark: dict[str, int] = {}

        def before_income() -> None:
            run.worker_done()
            mark["alerts"] = run.alerts_published()

        def kill() -> None:
            run.wait_for_alerts_after(mark["alerts"])
            assert run.stack is not None
            run.stack.kill("sink")
            run.notes["sink_uncommitted_alerts_when_killed"] = run.lag(
                sink_group(run.settings), "alerts")

        def restart() -> None:
            assert run.stack is not None
            run.stack.restart("sink")

        found = run.replay(scenario, scenario.files,
                           {income: before_income, after: kill, restart_at: restart})
    diff = compare(baseline.snapshot, found)
    add_row(report, "sink kill -9", f"kill -9 of the sink while {income} was judged "
            f"({run.notes['sink_uncommitted_alerts_when_killed']} alerts not yet committed); "
            f"restarted two months later, before {restart_at}", run, diff, "pass")
    assert_same(baseline.snapshot, found)


RETRY = re.compile(r"watch list unavailable \((\w+)\); retrying in ([0-9.]+)s")


def test_database_down_for_30_seconds(
    scenario: Scenario, baseline: Baseline, kafka_broker: LocalBroker, postgres_url: str,
    postgres_server: _Server | None, tmp_path: Path, report: list[dict[str, object]],
) -> None:
    if postgres_server is None:
        pytest.skip("FANPIN_TEST_DATABASE_URL names an external server: not stopping it")
    income, after = _fault_month(scenario)
    outage: dict[str, float] = {}
    errors: list[BaseException] = []

    def take_database_down() -> None:
        try:
            postgres_server.stop_server()
            outage["down"] = time.monotonic()
            time.sleep(OUTAGE_SECONDS)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            if not postgres_server.started:
                postgres_server.start_server()
            outage["up"] = time.monotonic()

    outage_thread = threading.Thread(target=take_database_down, name="pg-outage")
    with fresh_run(kafka_broker, postgres_url, tmp_path / "var") as run:
        mark: dict[str, int] = {}

        def before_income() -> None:
            run.worker_done()
            mark["alerts"] = run.alerts_published()

        def stop_database() -> None:
            run.wait_for_alerts_after(mark["alerts"])  # alerts on their way to the sink
            mark["at_stop"] = run.alerts_published()
            outage_thread.start()  # the replay goes on while the database is down

        try:
            found = run.replay(scenario, scenario.files, {income: before_income,
                                                          after: stop_database})
        finally:
            if outage_thread.is_alive() or outage_thread.ident is not None:
                outage_thread.join(OUTAGE_SECONDS + 120)
        assert run.stack is not None
        sink_log = run.stack.log("sink")
    assert not errors, errors
    assert outage["up"] - outage["down"] >= OUTAGE_SECONDS
    delays = [float(m.group(2)) for m in RETRY.finditer(sink_log)]
    run.notes["retry_delays_s"] = delays
    run.notes["database_down_s"] = round(outage["up"] - outage["down"], 1)
    diff = compare(baseline.snapshot, found)
    add_row(report, "PostgreSQL down 30 s", f"pg_ctl stop -m fast while {income} was judged, "
            f"started again {run.notes['database_down_s']} s later, replay going on; the sink "
            f"retried {len(delays)} times, waiting {', '.join(f'{d:g}' for d in delays)} s",
            run, diff, "pass")
    assert_same(baseline.snapshot, found)
    # The sink kept its batch and retried with growing delays: 0.5 s, doubling, at most 10 s
    # (a new failure after a success starts at 0.5 s again).
    assert len(delays) >= 4, sink_log[-3000:]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0], delays
    for before, now in zip(delays, delays[1:], strict=False):
        assert now in (min(before * 2, 10.0), 0.5), delays
    assert sum(delays) >= OUTAGE_SECONDS * 0.5  # it waited through the outage, not once


def test_every_file_published_twice(
    scenario: Scenario, baseline: Baseline, kafka_broker: LocalBroker, postgres_url: str,
    tmp_path: Path, report: list[dict[str, object]],
) -> None:
    """A department sends each file twice in a row, and then the whole folder is replayed
    once more (an operator re-running the replay)."""
    twice = [rel for rel in scenario.files for _ in range(2)] + scenario.files
    with fresh_run(kafka_broker, postgres_url, tmp_path / "var") as run:
        found = run.replay(scenario, twice)
    diff = compare(baseline.snapshot, found)
    add_row(report, "files published twice", "every file published twice in a row, then the "
            f"whole folder replayed again ({len(twice)} files for {len(scenario.files)})",
            run, diff, "pass")
    assert_same(baseline.snapshot, found)
    assert run.notes["alerts_published_again"], "the repeated income files were judged again"


def _disturbed_order(scenario: Scenario, kind: str) -> tuple[list[str], set[str], str]:
    """The files in a disturbed order, the months judged before their data was complete,
    and what was done."""
    m = scenario.months
    order = list(scenario.head)
    for i, month in enumerate(m):
        files = scenario.month_files(month)
        if kind == "months" and i == SWAPPED:
            continue  # published after the next month
        if kind == "medical" and i == LATE_MEDICAL:
            files = [f for f in files if not f.startswith("medical/")]
        order += files
        if kind == "months" and i == SWAPPED + 1:
            order += scenario.month_files(m[SWAPPED])
        if kind == "medical" and i == LATE_MEDICAL + 1:
            order.append(f"medical/{m[LATE_MEDICAL]}.csv")
    assert sorted(order) == sorted(scenario.files)
    if kind == "months":
        return order, {m[SWAPPED], m[SWAPPED + 1]}, (
            f"all files of {m[SWAPPED + 1]} published before those of {m[SWAPPED]}")
    return order, {m[LATE_MEDICAL], m[LATE_MEDICAL + 1]}, (
        f"medical/{m[LATE_MEDICAL]}.csv published after income/{m[LATE_MEDICAL + 1]}.csv")


@pytest.mark.parametrize("kind", ["months", "medical"],
                         ids=["months-out-of-order", "late-medical-file"])
def test_late_data(
    kind: str, scenario: Scenario, baseline: Baseline, kafka_broker: LocalBroker,
    postgres_url: str, tmp_path: Path, report: list[dict[str, object]],
) -> None:
    """Month ``SWAPPED + 1`` published before month ``SWAPPED``; or the medical file of
    month ``LATE_MEDICAL`` published after the income of the month after it.

    A household month is judged when its income report arrives; data that comes late is
    not left out (``streams.rules.engine.step``): a month whose income comes after a later
    month's is judged then and the months since are judged again, and so are the months
    from a late settlement's month on. The sink keeps each month's latest judgement. So
    the final watch list is the undisturbed run's, to the alert and its figures; and, as
    for every order, exactly what the rules give offline for this arrival order.
    """
    order, _affected, done = _disturbed_order(scenario, kind)
    expected = offline_snapshot(scenario, order, tmp_path / "offline.db")
    with fresh_run(kafka_broker, postgres_url, tmp_path / "var") as run:
        found = run.replay(scenario, order)

    base_months, found_months = baseline.snapshot.by_month(), found.by_month()
    changed = sorted(month for month in set(base_months) | set(found_months)
                     if base_months.get(month) != found_months.get(month))
    by_month = {}
    for month in changed:
        before, now = base_months.get(month, {}), found_months.get(month, {})
        by_month[month] = {"undisturbed": len(before), "found": len(now),
                           "lost": len(set(before) - set(now)),
                           "extra": len(set(now) - set(before)),
                           "changed": sum(1 for a in set(before) & set(now)
                                          if before[a] != now[a])}
    run.notes["changed_months"] = by_month
    run.notes["rules_for_this_order"] = {k: v for k, v in compare(expected, found).items()
                                         if k != "examples"}
    diff = compare(baseline.snapshot, found)
    gone = sorted({h for h, *_ in baseline.snapshot.entries.values()}
                  - {h for h, *_ in found.entries.values()})
    run.notes["households_missing"] = gone
    late = scenario.months[SWAPPED] if kind == "months" else None
    summary = "; ".join(
        f"{month}: {v['lost']} of {v['undisturbed']} alerts missing (arrived late, not judged)"
        if month == late and not v["found"] else
        f"{month}: {v['lost']} missing, {v['extra']} extra, {v['changed']} with other figures"
        for month, v in by_month.items()) or "none"
    add_row(report, "months out of order" if kind == "months" else "late medical file",
            f"{done}; compared with the undisturbed run", run, diff,
            "pass" if not changed else f"differs: {summary}; {len(gone)} household(s) "
            "without an entry")
    assert_same(expected, found)  # the rules offline, for this arrival order
    assert not changed, by_month  # and the undisturbed run's watch list, alert by alert
    assert not gone
    assert_same(baseline.snapshot, found)


def test_broker_restarted_mid_replay(
    scenario: Scenario, baseline: Baseline, kafka_broker: LocalBroker, postgres_url: str,
    tmp_path: Path, report: list[dict[str, object]],
) -> None:
    """Last in the module: the session broker is stopped and started again on the same port
    and data folder, and must come back healthy for the tests after this module."""
    income, after = _fault_month(scenario)
    with fresh_run(kafka_broker, postgres_url, tmp_path / "var") as run:
        mark: dict[str, int] = {}

        def before_income() -> None:
            run.worker_done()
            mark["alerts"] = run.alerts_published()

        def restart_broker() -> None:
            run.wait_for_alerts_after(mark["alerts"])
            started = time.monotonic()
            kafka_broker.restart(timeout=WAIT)
            run.notes["broker_down_s"] = round(time.monotonic() - started, 1)

        found = run.replay(scenario, scenario.files, {income: before_income,
                                                      after: restart_broker})
        assert run.stack is not None
        run.notes["sink_commits_failed"] = run.stack.log("sink").count(
            "could not commit the sink's offsets")
    diff = compare(baseline.snapshot, found)
    add_row(report, "broker restart", f"broker stopped (SIGTERM) while {income} was judged and "
            f"started again on the same port and data folder "
            f"({run.notes['broker_down_s']} s until it answered); worker and sink kept running"
            + (f"; the sink's offset commit failed {run.notes['sink_commits_failed']} times "
               "and was done again" if run.notes["sink_commits_failed"] else ""),
            run, diff, "pass")
    assert_same(baseline.snapshot, found)
    assert kafka_broker.running()

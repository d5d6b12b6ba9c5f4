"""``make bench``: Fanpin's speed, each figure next to a baseline measured in the same run.

This machine is noisy, so throughput figures are the median of several runs (``--runs``,
default 3) and are reported as ratios to baselines the benchmark itself runs, never as a
bare number. The figures (issue 6):

- **detector**: events/s of the real worker (``fanpin worker``, batched messages, its own
  state stores) on pre-joined household events, against a plain Faust agent with a Table
  doing the same rules one message per event (``fanpin.baselines.faust_table``) and a raw
  aiokafka consumer running the same rules in memory (``fanpin.baselines.raw_aiokafka``);
- **two workers** next to one;
- **ingest**: a department file parsed, validated, pseudonymised and published with
  kafka-python, batched, against the plain per-row ``send()`` loop;
- **latency**: from a row handed to the producer to its watch-list entry, under a steady
  2,000 rows/s through the whole pipeline (worker, sink, SQLite);
- **state**: serialised bytes per household after 24 months;
- **recovery**: reading back the state of 1,000,000 households after a crash;
- **cost**: CPU seconds per million rows as the households held grow from 10^5 to 10^7.

Everything runs on a broker this command starts on free ports and stops (by its PID) at
the end, with scenarios from ``fanpin simulate``. ``--quick`` runs every figure tiny, for
the tests; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from fanpin.privacy import Pseudonymiser
from producers.common import Reject
from producers.scenario import parse_scenario, scenario_files
from schemas.events import (
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    RosterMember,
    encode,
    encode_batch,
    partition_of,
)
from streams.rules.join import RosterLink, attach

REPO = Path(__file__).resolve().parents[1]
KEY = b"bench-key-0123456789abcdef"
BATCH = 1000  # events per batch message, as the producers send them
PARTITIONS = 4
#: The latency figure's steady publishing rate, rows/s (``--rate``); ``make soak`` publishes
#: at twice this for ten minutes (``fanpin.soak``).
LATENCY_RATE = 2000.0
#: The heap (-Xms and -Xmx) of the broker the benchmark starts.
BROKER_HEAP = "1g"
#: A real-time publisher's linger: the latency rig hands rows over in batches this far apart.
TICK = 0.05


# --- small helpers ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Figure:
    """One line of the report: a measured rate (median, spread over runs) against a
    baseline measured in the same run, and the goal it is judged by."""

    name: str
    unit: str
    runs: list[float]
    baseline: str = ""
    baseline_runs: list[float] = field(default_factory=list)
    goal: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def spread(self) -> float:
        return (max(self.runs) - min(self.runs)) if len(self.runs) > 1 else 0.0

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline_runs) if self.baseline_runs else float("nan")

    @property
    def ratio(self) -> float:
        b = self.baseline_median
        return self.median / b if self.baseline_runs and b else float("nan")


def _fmt(v: float) -> str:
    if v != v:  # NaN
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


# --- scenarios ---------------------------------------------------------------------------

def simulate(out: Path, households: int, months: int, seed: int) -> Path:
    if not (out / "roster.csv").is_file():
        subprocess.run([sys.executable, "-m", "fanpin", "simulate", str(out), "--households",
                        str(households), "--months", str(months), "--seed", str(seed),
                        "--force"], check=True, stdout=subprocess.DEVNULL)
    return out


@dataclass
class Joined:
    """A scenario's events as the detector sees them: joined to households, in replay
    order (roster, then month by month medical, employment, income)."""

    lines: dict[int, Decimal]
    events: list[Any]
    lines_events: list[MonitoringLine]


def joined_events(root: Path) -> Joined:
    roster: dict[str, RosterLink] = {}
    events: list[Any] = []
    lines: list[MonitoringLine] = []
    for ev in parse_scenario(root, Pseudonymiser(KEY)):
        if isinstance(ev, Reject):
            continue
        if isinstance(ev, MonitoringLine):
            lines.append(ev)
        elif isinstance(ev, RosterMember):
            roster[ev.person] = RosterLink(ev.household_id, ev.region_code)
            events.append(ev)
        elif isinstance(ev, MedicalSettlement | EmploymentEvent):
            link = roster.get(ev.person)
            if link is not None:
                events.append(attach(ev, link))
        elif isinstance(ev, IncomeReport):
            events.append(ev)
    return Joined({e.year: e.line for e in lines}, events, lines)


def batched(events: list[Any], partitions: int, size: int = BATCH
            ) -> tuple[list[tuple[int, bytes]], dict[int, list[int]]]:
    """Batch messages (partition, value) in order, and per partition the cumulative event
    count after each message (offset i done = cum[p][i] events)."""
    per: dict[int, list[bytes]] = {}
    out: list[tuple[int, bytes]] = []
    cum: dict[int, list[int]] = {p: [0] for p in range(partitions)}
    for ev in events:
        p = partition_of(ev.household_id.encode(), partitions)
        buf = per.setdefault(p, [])
        buf.append(encode(ev))
        if len(buf) >= size:
            out.append((p, encode_batch(buf)))
            cum[p].append(cum[p][-1] + len(buf))
            per[p] = []
    for p, buf in per.items():
        if buf:
            out.append((p, encode_batch(buf)))
            cum[p].append(cum[p][-1] + len(buf))
    return out, cum


# --- the broker ----------------------------------------------------------------------------

@contextlib.contextmanager
def local_broker(bootstrap: str | None = None, *, jvm_args: tuple[str, ...] = ()
                 ) -> Iterator[str]:
    """A broker of its own on free ports (stopped at the end), or ``bootstrap``'s;
    ``jvm_args`` go to its JVM."""
    from fanpin.broker import LocalBroker

    if bootstrap:
        yield bootstrap
        return

    home = Path(tempfile.mkdtemp(prefix="fanpin-bench-kafka-"))
    broker = LocalBroker(home=home, port=free_port(), controller_port=free_port(),
                         libs=REPO / "var" / "kafka" / "libs", heap=BROKER_HEAP,
                         extra_jvm_args=jvm_args)
    try:
        broker.ensure_started(timeout=120)
        yield broker.bootstrap
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


def _settings(bootstrap: str, var: Path, **kw: Any) -> Any:
    from pydantic import SecretStr

    from fanpin.settings import Settings

    return Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}",
                    var_dir=var, partitions=PARTITIONS,
                    pseudonym_key=SecretStr("bench-" + KEY.decode()),
                    worker_metrics_port=free_port(), sink_metrics_port=free_port(),
                    log_level="WARNING", **kw)


def _producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                         batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def _committed_events(admin: Any, group: str, topic: str, cum: dict[int, list[int]] | None
                      ) -> int:
    from kafka.errors import KafkaError

    try:
        committed = admin.committed(group)
    except KafkaError:  # the group coordinator is still starting: nothing committed yet
        return 0
    done = 0
    for tp, offset in committed.items():
        if tp.topic != topic or offset is None or offset < 0:
            continue
        done += cum[tp.partition][min(offset, len(cum[tp.partition]) - 1)] if cum else offset
    return done


def _follow(admin: Any, group: str, topic: str, total: int, cum: dict[int, list[int]] | None,
            *, timeout: float, alive: Callable[[], object] | None = None
            ) -> list[tuple[float, int]]:
    """(seconds, events committed) every 0.1 s until ``total`` or the timeout."""
    series: list[tuple[float, int]] = []
    start = time.monotonic()
    while True:
        done = _committed_events(admin, group, topic, cum)
        now = time.monotonic() - start
        series.append((now, done))
        if done >= total or now > timeout:
            return series
        if alive is not None:
            alive()
        time.sleep(0.1)


def _rate(series: list[tuple[float, int]], total: int) -> float:
    from fanpin.baselines.measure import steady_rate

    reached = series[-1][1] if series else 0
    return steady_rate(series, min(total, reached))


# --- detector: the worker, plain Faust, raw aiokafka ---------------------------------------

def run_worker(bootstrap: str, joined: Joined, workdir: Path, *, workers: int = 1,
               timeout: float = 600.0) -> tuple[float, list[tuple[float, int]]]:
    """The real worker (``fanpin worker``) on pre-joined household events in batches.
    Returns the steady events/s and the progress series."""
    from fanpin.kafka_admin import worker_group
    from fanpin.services import Services

    settings = _settings(bootstrap, workdir / uuid.uuid4().hex[:6])
    messages, cum = batched(joined.events, PARTITIONS)
    total = len(joined.events)
    with Services(settings, need=()) as services:
        producer = _producer(bootstrap)
        for ev in joined.lines_events:
            producer.send(settings.topic("reference"), key=ev.id.encode(), value=encode(ev))
        topic = settings.topic("household-events")
        for p, value in messages:
            producer.send(topic, value=value, partition=p)
        producer.flush()
        producer.close()
        services.spawn("worker")
        for i in range(1, workers):
            services.spawn("worker", "--metrics-port", str(free_port()), label=f"worker-{i + 1}")
        assert services.admin is not None
        series = _follow(services.admin, worker_group(settings), topic, total, cum,
                         timeout=timeout, alive=services.check_alive)
    return _rate(series, total), series


def run_faust_baseline(bootstrap: str, joined: Joined, topic: str, workdir: Path, *,
                       seconds: float) -> tuple[float, list[tuple[float, int]]]:
    """The plain Faust agent with a Table, one message per event, for ``seconds`` (it is
    slow: the steady rate needs no more)."""
    from fanpin.kafka_admin import Admin

    app_id = f"baseline-{uuid.uuid4().hex[:8]}"
    env = {**os.environ,
           "FANPIN_BASELINE_BOOTSTRAP": bootstrap, "FANPIN_BASELINE_INPUT": topic,
           "FANPIN_BASELINE_ALERTS": f"{app_id}.alerts", "FANPIN_BASELINE_APP_ID": app_id,
           "FANPIN_BASELINE_PARTITIONS": str(PARTITIONS),
           "FANPIN_BASELINE_LINES": json.dumps({str(y): str(v)
                                                for y, v in joined.lines.items()}),
           "FANPIN_BASELINE_DATADIR": str(workdir / app_id)}
    log = open(workdir / f"{app_id}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "fanpin.baselines.faust_table", "worker",
                             "-l", "warn", "--without-web"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    settings = _settings(bootstrap, workdir)
    admin = Admin(settings)
    total = len(joined.events)
    try:
        # Until the first commit (start-up and the group join), then a fixed window.
        t0 = time.monotonic()
        while _committed_events(admin, app_id, topic, None) == 0:
            if proc.poll() is not None:
                raise RuntimeError(f"the Faust baseline exited; see {log.name}")
            if time.monotonic() - t0 > 120:
                raise TimeoutError("the Faust baseline committed nothing in 120 s")
            time.sleep(0.1)
        series = _follow(admin, app_id, topic, total, None, timeout=seconds)
    finally:
        admin.close()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    # The window's rate from its 10% point to its end.
    (t_a, n_a), (t_b, n_b) = series[len(series) // 10], series[-1]
    return (n_b - n_a) / (t_b - t_a) if t_b > t_a else float("nan"), series


def publish_single(bootstrap: str, joined: Joined, topic: str) -> None:
    """One message per event, keyed by household, in the partition the contract gives."""
    _create_topic(bootstrap, topic, PARTITIONS)
    producer = _producer(bootstrap)
    for ev in joined.events:
        key = ev.household_id.encode()
        producer.send(topic, key=key, value=encode(ev),
                      partition=partition_of(key, PARTITIONS))
    producer.flush()
    producer.close()


def run_raw(bootstrap: str, joined: Joined, topic: str, limit: int) -> float:
    from fanpin.baselines.raw_aiokafka import run_sync

    n = min(limit, len(joined.events))
    res = run_sync(bootstrap, topic, joined.lines, n)
    return res.events / res.seconds if res.seconds else float("nan")


# --- ingest ----------------------------------------------------------------------------------

def run_ingest(bootstrap: str, root: Path, *, batched_publish: bool, jobs: int = 1) -> float:
    """rows/s for parse + validate + pseudonymise + publish (kafka-python) of the monthly
    files of ``root``, flushed."""
    from fanpin.kafka_admin import Admin
    from producers.common import ParseContext
    from producers.publish import Publisher

    settings = _settings(bootstrap, Path(tempfile.gettempdir()))
    admin = Admin(settings)
    try:
        admin.ensure_topics()
    finally:
        admin.close()
    files = [f for f in scenario_files(root) if "/" in f[0]]
    ctx = ParseContext(Pseudonymiser(KEY), None)
    publisher = Publisher(settings, batch_events=BATCH if batched_publish else 1, jobs=jobs)
    rows = 0
    t = time.perf_counter()
    try:
        for rel, path, module in files:
            res = publisher.publish_file(module, path, rel, ctx, progress=False)
            rows += res.events + len(res.rejects)
        publisher.flush()
        took = time.perf_counter() - t
    finally:
        publisher.close()
    return rows / took


# --- latency ---------------------------------------------------------------------------------

#: One row as the latency rig hands it over: (topic name without the prefix, key, encoded
#: event, (household, month) for an income row whose alert latency is measured, else None).
Item = tuple[str, bytes, bytes, tuple[str, str] | None]


def latency_item(ev: object) -> Item | None:
    """Where the latency rig (and ``fanpin.soak``) sends a parsed event: monitoring lines to
    the reference topic, roster, medical and employment rows to person-events, income
    reports to household-events; anything else (rejects, regions) is not sent."""
    if isinstance(ev, MonitoringLine):
        return ("reference", ev.id.encode(), encode(ev), None)
    if isinstance(ev, RosterMember | MedicalSettlement | EmploymentEvent):
        return ("person-events", ev.person.encode(), encode(ev), None)
    if isinstance(ev, IncomeReport):
        return ("household-events", ev.household_id.encode(), encode(ev),
                (ev.household_id, ev.month))
    return None


def hand_over(producer: Any, settings: Any, items: list[Item]) -> int:
    """One tick's rows to the producer, the way a real-time publisher sends them: a batch
    message per topic and partition (placed by ``partition_of``), monitoring lines one by
    one, then a flush. Returns the messages sent."""
    bufs: dict[tuple[str, int], list[bytes]] = {}
    sent = 0
    for topic, key, value, _ in items:
        if topic == "reference":
            producer.send(settings.topic(topic), key=key, value=value)
            sent += 1
            continue
        bufs.setdefault((topic, partition_of(key, settings.partitions)), []).append(value)
    for (topic, p), values in bufs.items():
        producer.send(settings.topic(topic), value=encode_batch(values), partition=p)
    producer.flush()
    return sent + len(bufs)


def run_latency(bootstrap: str, root: Path, workdir: Path, *, rate: float,
                seconds: float) -> tuple[list[float], list[tuple[float, float]]]:
    """Rows of ``root`` published at ``rate`` rows/s (batches every 50 ms, as a real-time
    publisher would) through worker, sink and SQLite. Returns each alert's latency (row
    handed over -> its watch-list record) and (time, latency) points."""
    from sqlalchemy import create_engine, select

    from consumers.watchlist.models import AlertRecord
    from fanpin.kafka_admin import sink_group, worker_group
    from fanpin.services import Services

    var = workdir / f"lat-{uuid.uuid4().hex[:6]}"
    db = var / "watchlist.db"
    var.mkdir(parents=True)
    settings = _settings(bootstrap, var, database_url=f"sqlite:///{db}")
    items = [it for ev in parse_scenario(root, Pseudonymiser(KEY))
             if (it := latency_item(ev)) is not None]
    items = items[: int(rate * seconds)]
    handed: dict[tuple[str, str], float] = {}
    tick = TICK
    per_tick = max(1, int(rate * tick))
    with Services(settings, need=("worker", "sink")) as services:
        producer = _producer(bootstrap)
        producer.partitions_for(settings.topic("person-events"))
        start = time.time()
        for i in range(0, len(items), per_tick):
            due = start + (i // per_tick) * tick
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            now = time.time()
            chunk = items[i:i + per_tick]
            for _, _, _, mark in chunk:
                if mark is not None:
                    handed.setdefault(mark, now)
            hand_over(producer, settings, chunk)
        sent_for = time.time() - start
        producer.close()
        assert services.admin is not None
        for group, topics in ((worker_group(settings), ["person-events", "household-events"]),
                              (sink_group(settings), ["alerts"])):
            services.admin.wait_caught_up(group, [settings.topic(t) for t in topics],
                                          timeout=300, alive=services.check_alive)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(AlertRecord.household_id, AlertRecord.month,
                                   AlertRecord.received_at)).all()
    engine.dispose()
    lat: list[float] = []
    points: list[tuple[float, float]] = []
    for hid, month, received in rows:
        t0 = handed.get((hid, month))
        if t0 is None:
            continue
        got = received.replace(tzinfo=dt.UTC).timestamp() if received.tzinfo is None \
            else received.timestamp()
        lat.append(got - t0)
        points.append((t0 - start, got - t0))
    if sent_for > seconds * 1.2:
        print(f"  (publishing fell behind: {len(items)} rows took {sent_for:.0f}s)",
              file=sys.stderr)
    return sorted(lat), sorted(points)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, round(q * (len(v) - 1))))
    return v[k]


# --- state, recovery, cost -----------------------------------------------------------------

def final_states(joined: Joined) -> dict[bytes, bytes]:
    from streams.batch import HOUSEHOLD_KINDS, MemoryStore, detect, unpack
    from streams.rules.config import RuleConfig
    from streams.rules.engine import Policy

    store = MemoryStore(PARTITIONS)
    policy = Policy(lines=dict(joined.lines), config=RuleConfig.load())
    messages, _ = batched(joined.events, PARTITIONS)

    async def go() -> None:
        for _, value in messages:
            await detect(unpack(value, HOUSEHOLD_KINDS), store, policy)

    asyncio.run(go())
    return {k: v for d in store.data.values() for k, v in d.items()}


def run_recovery(bootstrap: str, blobs: list[bytes], households: int, runs: int
                 ) -> tuple[list[float], int]:
    """Write ``households`` state records (real blobs, distinct keys) to a compacted
    changelog and time the worker's store reading every partition back."""
    from aiokafka import AIOKafkaProducer

    from fanpin.kafka_admin import CHANGELOG_CONFIG
    from streams.store import StateStore

    topic = f"bench-recovery-{uuid.uuid4().hex[:6]}"
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=dict(CHANGELOG_CONFIG))])
    admin.close()
    written = 0

    async def fill() -> None:
        nonlocal written
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                    max_batch_size=1024 * 1024, acks=1)
        await producer.start()
        try:
            batches = {p: producer.create_batch() for p in range(PARTITIONS)}
            futures = []
            for i in range(households):
                key = f"99{i:014d}".encode()
                p = partition_of(key, PARTITIONS)
                if batches[p].append(key=key, value=blobs[i % len(blobs)],
                                     timestamp=None) is None:
                    batches[p].close()
                    futures.append(await producer.send_batch(batches[p], topic, partition=p))
                    batches[p] = producer.create_batch()
                    batches[p].append(key=key, value=blobs[i % len(blobs)], timestamp=None)
                written += 1
            for p, b in batches.items():
                if b.record_count():
                    b.close()
                    futures.append(await producer.send_batch(b, topic, partition=p))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(fill())
    rates = []
    keys = 0
    for _ in range(runs):
        store = StateStore("bench", topic, PARTITIONS, bootstrap=bootstrap, client_options={},
                           producer=lambda: None)

        async def recover(store: StateStore = store) -> None:
            for p in range(PARTITIONS):
                await store.ready(p)

        t = time.perf_counter()
        asyncio.run(recover())
        took = time.perf_counter() - t
        keys = store.keys()
        rates.append(took)
        del store
        gc.collect()
    return rates, keys


COPY_LIMIT = 1_000_000


def run_cost(joined: Joined, blobs: dict[bytes, bytes], households: int) -> tuple[float, float]:
    """CPU seconds per million rows for the detector's message-level path (decode, fold,
    judge, serialise), with ``households`` states held: the scenario's own households plus
    filler ones with real state blobs. Returns (seconds per million rows, MB held)."""
    from streams.batch import HOUSEHOLD_KINDS, MemoryStore, detect, unpack
    from streams.rules.config import RuleConfig
    from streams.rules.engine import Policy

    store = MemoryStore(PARTITIONS)
    for p in range(PARTITIONS):
        store.data[p] = {}
    values = list(blobs.values())
    for i in range(max(0, households - len(blobs))):
        key = f"98{i:014d}".encode()
        v = values[i % len(values)]
        # A copy of a real blob (memory held like a real store's) up to a million
        # households; beyond, shared blobs: ten million real ones would not fit here.
        store.data[partition_of(key, PARTITIONS)][key] = \
            bytes(memoryview(v)) if households <= COPY_LIMIT else v
    held_bytes = sum(sys.getsizeof(k) + sys.getsizeof(v) for d in store.data.values()
                     for k, v in d.items()) if households <= COPY_LIMIT else 0
    held = (held_bytes + sum(sys.getsizeof(d) for d in store.data.values())) / 2**20
    policy = Policy(lines=dict(joined.lines), config=RuleConfig.load())
    # The scenario's own households start empty and build up as in production; the
    # filler is what makes the store big.
    events = joined.events
    messages, _ = batched(events, PARTITIONS)

    async def go() -> None:
        for _, value in messages:
            await detect(unpack(value, HOUSEHOLD_KINDS), store, policy)

    t = time.process_time()
    asyncio.run(go())
    cpu = time.process_time() - t
    store.data.clear()
    gc.collect()
    return cpu / len(events) * 1e6, held


# --- the report ------------------------------------------------------------------------------

def hardware() -> str:
    """"2 cores (the CPU's model name), 24 GB RAM; Python 3.11.7", for every report."""
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GB RAM; Python {platform.python_version()}"


def machine() -> str:
    import aiokafka
    import faust
    import kafka
    import msgspec

    return (f"{hardware()}, faust-streaming {faust.__version__}, aiokafka "
            f"{aiokafka.__version__}, kafka-python {kafka.__version__}, msgspec "
            f"{msgspec.__version__}; Apache Kafka {_kafka_version()} (single KRaft node)")


def _kafka_version() -> str:
    libs = REPO / "var" / "kafka" / "libs"
    for p in sorted(libs.glob("kafka_2.13-*.jar")):
        return p.stem.split("-", 1)[1]
    return "?"


METHOD = """
## How each figure is measured

- **Detector throughput.** One simulated scenario (`fanpin simulate`, 24 months), parsed and
  joined to households in memory, is published twice: as batch messages of 1,000 events per
  partition for the real worker (`fanpin worker`, its own process, a fresh topic prefix and
  state per run), and one message per event for both baselines. The rate is the steady
  rate between 10% and 90% of the events, read from the consumer group's committed offsets
  every 0.1 s, so start-up and the group join are left out. The plain Faust agent is slow,
  so it runs for a 30 s window after its first commit. The raw aiokafka consumer runs in
  the benchmark's process with the states as Python objects (no durability at all).
- **Two workers.** The same as the detector run, with two worker processes sharing the
  partitions on this 2-core machine (which also runs the broker).
- **Ingest.** The medical, employment and income files of a 20,000-household, 3-month
  scenario, published by `producers.publish.Publisher` with kafka-python: batched (one
  message per 1,000 events) against the same parsing with the plain per-row `send()`.
  Rows per second over all rows, rejects included, until the producer is flushed.
- **Latency.** The detector scenario's rows are handed to a producer at a steady rate, in
  50 ms batches (a real-time publisher's linger), with a worker and a sink writing to
  SQLite. Each alert's latency is from its income row being handed over to its
  `watchlist_alerts.received_at`.
- **State.** The serialised `HouseholdState` of every household after 24 months.
- **Recovery.** Real 24-month states written under distinct keys to a compacted changelog,
  then read back by the worker's own `StateStore`, one partition after the other, as a
  worker does after a crash.
- **Cost.** The detector's message path (`streams.batch.detect`: decode, fold, judge, encode)
  in one process without Kafka, on the whole detector scenario, while the store also holds
  filler households with real 24-month state blobs.
"""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)  # file name -> SVG
    notes: list[str] = field(default_factory=list)

    def markdown(self, args: argparse.Namespace) -> str:
        out = ["# Benchmarks", "",
               "Written by `make bench` (`python -m fanpin.bench`); do not edit by hand.",
               "", f"- Machine: {machine()}.",
               f"- Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
               f"{args.runs} runs per throughput figure (median; spread is max − min).",
               "- Every ratio compares figures measured in this same run, on this machine.",
               "", "## Goals", "",
               "| figure | measured (median) | spread | baseline (same run) | baseline | "
               "ratio | goal | met |",
               "|---|---:|---:|---|---:|---:|---|:-:|"]
        for f in self.figures:
            met = "–" if f.met is None else ("yes" if f.met else "**no**")
            out.append(f"| {f.name} | {_fmt(f.median)} {f.unit} | {_fmt(f.spread)} | "
                       f"{f.baseline or '–'} | {_fmt(f.baseline_median)} | "
                       f"{_fmt(f.ratio) + '×' if f.baseline_runs else '–'} | "
                       f"{f.goal or '–'} | {met} |")
        out.append("")
        out += METHOD.strip().splitlines() + [""]
        for t in self.tables:
            out += [t, ""]
        for name in self.plots:
            out += [f"![{name}](benchmarks/{name})", ""]
        if self.notes:
            out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(out)


def run(args: argparse.Namespace) -> Report:
    from fanpin import svgplot

    quick = args.quick
    runs = 1 if quick else args.runs
    rep = Report()
    work = Path(tempfile.mkdtemp(prefix="fanpin-bench-"))
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    try:
        hh = 150 if quick else args.households
        root = simulate(work / "detector", hh, 24, 11)
        joined = joined_events(root)
        say(f"scenario: {hh} households x 24 months, {len(joined.events):,} joined events")

        # State bytes per household (24 months).
        states = final_states(joined)
        sizes = sorted(len(v) for v in states.values())
        mean = sum(sizes) / len(sizes)
        rep.figures.append(Figure(
            "state per household", "bytes", [mean], goal="≤ 300 bytes", met=mean <= 300,
            note=f"median {sizes[len(sizes) // 2]}, p90 {sizes[int(len(sizes) * .9)]}, "
                 f"max {sizes[-1]}"))
        rep.notes.append(f"State after 24 months, {len(sizes):,} households: mean "
                         f"{mean:.0f} B, median {sizes[len(sizes) // 2]} B, p90 "
                         f"{sizes[int(len(sizes) * .9)]} B, max {sizes[-1]} B (the value; "
                         "the key is the 16-digit household number).")

        if args.no_broker:
            return rep
        with local_broker(args.bootstrap) as bootstrap:
            single = f"bench-single-{uuid.uuid4().hex[:6]}"
            publish_single(bootstrap, joined, single)
            ours, faust_, raw = [], [], []
            series_plot: dict[str, list[tuple[float, float]]] = {}
            for i in range(runs):
                say(f"detector run {i + 1}/{runs}: worker ...")
                rate, series = run_worker(bootstrap, joined, work)
                ours.append(rate)
                say(f"  worker {rate:,.0f} events/s; plain Faust ...")
                frate, fseries = run_faust_baseline(bootstrap, joined, single, work,
                                                    seconds=5 if quick else 30)
                faust_.append(frate)
                say(f"  Faust {frate:,.0f} events/s; raw aiokafka ...")
                raw.append(run_raw(bootstrap, joined, single, 20_000 if quick else 400_000))
                say(f"  raw aiokafka {raw[-1]:,.0f} events/s")
                if i == 0:
                    series_plot["Fanpin worker"] = [(t, n) for t, n in series]
                    series_plot["plain Faust + Table"] = [(t, n) for t, n in fseries]
            rep.figures.append(Figure("detector throughput", "events/s", ours,
                                      "plain Faust agent + Table, same rules", faust_,
                                      "≥ 10×", None))
            rep.figures[-1].met = rep.figures[-1].ratio >= 10
            rep.figures.append(Figure("detector throughput", "events/s", ours,
                                      "raw aiokafka consumer, same rules", raw, "≥ 0.25×",
                                      None))
            rep.figures[-1].met = rep.figures[-1].ratio >= 0.25
            rep.plots["detector.svg"] = svgplot.bar_chart(
                "Detector throughput, events/s (median of runs, whiskers: min–max)",
                ["Fanpin worker", "plain Faust agent + Table", "raw aiokafka + same rules"],
                [statistics.median(ours), statistics.median(faust_), statistics.median(raw)],
                errors=[(min(x), max(x)) for x in (ours, faust_, raw)], unit="events/s")
            rep.plots["progress.svg"] = svgplot.line_chart(
                "Events committed over time (first run)", series_plot, "seconds", "events")

            two = []
            for i in range(runs):
                say(f"two workers run {i + 1}/{runs} ...")
                rate, _ = run_worker(bootstrap, joined, work, workers=2)
                two.append(rate)
            rep.figures.append(Figure("2 workers", "events/s", two, "1 worker (above)", ours,
                                      "reported", None))

            ing_root = simulate(work / "ingest", 300 if quick else 20000, 2 if quick else 3, 7)
            batched_r, single_r = [], []
            for i in range(runs):
                say(f"ingest run {i + 1}/{runs} ...")
                batched_r.append(run_ingest(bootstrap, ing_root, batched_publish=True))
                single_r.append(run_ingest(bootstrap, ing_root, batched_publish=False))
            rep.figures.append(Figure("ingest: parse + validate + pseudonymise + publish",
                                      "rows/s", batched_r, "per-row send() loop", single_r,
                                      "≥ 100,000 rows/s", None))
            rep.figures[-1].met = rep.figures[-1].median >= 100_000

            say(f"latency at {args.rate:,.0f} rows/s ...")
            lat, points = run_latency(bootstrap, root, work, rate=args.rate,
                                      seconds=10 if quick else args.latency_seconds)
            p99 = percentile(lat, 0.99)
            rep.figures.append(Figure(
                f"row → watch-list entry at {args.rate:,.0f} rows/s, p99", "s", [p99],
                goal="< 2 s", met=p99 < 2 if lat else None))
            rep.tables.append(
                "## Latency\n\n| alerts | p50 | p95 | p99 | max |\n|---:|---:|---:|---:|---:|\n"
                f"| {len(lat)} | {_fmt(percentile(lat, .5))} s | {_fmt(percentile(lat, .95))} s"
                f" | {_fmt(p99)} s | {_fmt(lat[-1] if lat else float('nan'))} s |")
            rep.plots["latency.svg"] = svgplot.line_chart(
                f"Row handed over → watch-list record, seconds (at {args.rate:,.0f} rows/s)",
                {"latency": points}, "seconds into the run", "seconds")

            n_rec = 20_000 if quick else args.recovery_households
            say(f"recovery of {n_rec:,} households ...")
            secs, keys = run_recovery(bootstrap, list(states.values()), n_rec, runs)
            rep.figures.append(Figure(f"recover {keys:,} households", "s", secs,
                                      goal="< 60 s for 1,000,000", met=(
                                          statistics.median(secs) * 1_000_000 / keys < 60)))

        cost_rows = ["## Cost per million rows", "",
                     "CPU seconds per million rows for the detector's message-level path "
                     "(decode, fold, judge, serialise state), with this many households' "
                     "states held in the worker; in one process, no Kafka. Python memory "
                     "held is keys, values and dicts (`sys.getsizeof`); state bytes are "
                     "households × (mean state + 16-byte key).", "",
                     "| households held | CPU s per million rows | Python memory held (MB) "
                     "| state bytes, computed (MB) |",
                     "|---:|---:|---:|---:|"]
        points_cost: list[tuple[float, float]] = []
        for n in ([2_000, 20_000] if quick else [100_000, 1_000_000, 10_000_000]):
            say(f"cost with {n:,} households held ...")
            cost, held = run_cost(joined, states, n)
            computed = n * (mean + 16) / 2**20
            shown = f"{held:,.0f}" if n <= COPY_LIMIT else "– (blobs shared)"
            cost_rows.append(f"| {n:,} | {cost:.1f} | {shown} | {computed:,.0f} |")
            points_cost.append((n, cost))
        rep.tables.append("\n".join(cost_rows))
        rep.plots["cost.svg"] = svgplot.line_chart(
            "CPU seconds per million rows vs households held", {"detector": points_cost},
            "households held", "CPU s per million rows")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fanpin.bench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the Markdown report here (plots go to "
                    "a 'benchmarks' folder next to it)")
    ap.add_argument("--runs", type=int, default=3, help="runs per throughput figure")
    ap.add_argument("--households", type=int, default=4000,
                    help="households in the detector scenario (24 months)")
    ap.add_argument("--rate", type=float, default=LATENCY_RATE,
                    help="rows/s for the latency run")
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument("--recovery-households", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one run (a smoke test)")
    ap.add_argument("--no-broker", action="store_true", help="only the in-process figures")
    ap.add_argument("--check", type=float, default=None, metavar="RATIO",
                    help="only the detector figure; exit 1 when it is below RATIO × plain "
                    "Faust")
    ap.add_argument("--bootstrap", help="use this running broker instead of starting one")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.check is not None:
        return check(args)
    rep = run(args)
    text = rep.markdown(args)
    sys.stdout.write(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        plots = args.out.parent / "benchmarks"
        plots.mkdir(exist_ok=True)
        for name, svg in rep.plots.items():
            (plots / name).write_text(svg, encoding="utf-8")
    return 0


def check(args: argparse.Namespace) -> int:
    """``make bench-check``: the detector against plain Faust, best of ``--runs``."""
    work = Path(tempfile.mkdtemp(prefix="fanpin-bench-"))
    try:
        root = simulate(work / "detector", 150 if args.quick else args.households, 24, 11)
        joined = joined_events(root)
        with local_broker(args.bootstrap) as bootstrap:
            single = f"bench-single-{uuid.uuid4().hex[:6]}"
            publish_single(bootstrap, joined, single)
            ours = [run_worker(bootstrap, joined, work)[0] for _ in range(args.runs)]
            base = [run_faust_baseline(bootstrap, joined, single, work,
                                       seconds=5 if args.quick else 30)[0]
                    for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = statistics.median(ours) / statistics.median(base)
    print(f"detector {statistics.median(ours):,.0f} events/s, plain Faust + Table "
          f"{statistics.median(base):,.0f} events/s: {ratio:.1f}× (need ≥ {args.check}×)")
    return 0 if ratio >= args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""``make soak``: sustained publishing at twice the benchmark's steady rate, to show that
consumer lag and memory stay bounded.

The latency rig of ``fanpin.bench`` hands a simulated scenario's rows to a producer at a
steady rate in 50 ms batches, through a real worker and sink. This load test does the same
at ``--rate`` rows/s (default twice the latency rate, 4,000 rows/s) for ``--minutes``
(default 10), on a bounded set of ``--households``: their months are simulated once
(``fanpin simulate``) and replayed in passes, each pass moved whole years later (new
months, new settlement and business ids, the monitoring lines of the new years), so the
stream never ends and the households' state should plateau once it holds the months the
rules keep.

Every ``--interval`` seconds (default 5) it samples the rows published so far, the
consumer lag of the worker's and the sink's groups (from the broker), the resident memory
(``VmRSS``) and CPU time of the worker, the sink and the broker, the machine's busy CPU and
the watch-list entries. It writes a Markdown report with the samples, two SVG plots (lag
and memory over time), every sample as CSV, and the verdicts: lag bounded and not trending
up over the second half, memory not growing over the second half, and the publish rate
achieved. It exits 1 when a verdict fails.

By default it starts its own broker on free loopback ports (stopped at the end);
``--bootstrap`` uses a running one, which must be on this machine: the load stays on
loopback. Either way the topics get a fresh prefix and the watch list is SQLite in a
temporary folder.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import datetime as dt
import math
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec

from fanpin.bench import (
    BROKER_HEAP,
    KEY,
    LATENCY_RATE,
    PARTITIONS,
    TICK,
    Item,
    hand_over,
    latency_item,
    local_broker,
    machine,
    simulate,
)
from fanpin.simulate import monitoring_line
from schemas.events import EmploymentEvent, IncomeReport, MedicalSettlement, MonitoringLine
from streams.rules.state import INCOME_MONTHS_KEPT, SETTLEMENT_MONTHS_KEPT

#: Twice the benchmark's steady rate (the latency figure's rows/s).
DEFAULT_RATE = 2 * LATENCY_RATE
DEFAULT_MINUTES = 10.0
DEFAULT_HOUSEHOLDS = 10_000
DEFAULT_MONTHS = 24
SAMPLE_EVERY = 5.0

# The verdicts' thresholds (stated in the report).
#: Lag over the second half may reach at most this many sampling intervals of input.
LAG_BOUND_INTERVALS = 3.0
#: Least-squares slope of the lag over the second half, in seconds of input per minute.
LAG_SLOPE_LIMIT = 1.0
#: Least-squares slope of each process's RSS over the second half, MB per minute.
RSS_SLOPE_LIMIT = 2.0
#: A 1-minute load average from which the machine counts as busy with other jobs.
BUSY_LOAD = 1.5
#: The publisher must achieve at least this share of ``--rate``.
RATE_SHARE = 0.98

GROUPS = ("worker", "sink")
PROCESSES = ("worker", "sink", "broker")
PRETOUCH = ("-XX:+AlwaysPreTouch",)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


# --- the endless stream ------------------------------------------------------------------

_MONTH_FILE = re.compile(r"([0-9]{4})-([0-9]{2})\.csv$")


def _later(day: dt.date, years: int) -> dt.date:
    y = day.year + years
    if day.day <= 28:
        return day.replace(year=y)
    return day.replace(year=y, day=min(day.day, calendar.monthrange(y, day.month)[1]))


def _file_later(origin: Any, years: int) -> Any:
    m = _MONTH_FILE.search(origin.file)
    if m is None:
        return origin
    name = origin.file[:m.start()] + f"{int(m.group(1)) + years:04d}-{m.group(2)}.csv"
    return msgspec.structs.replace(origin, file=name)


def shift(ev: Any, years: int, tag: str) -> Any:
    """``ev`` moved ``years`` later, as the same department would send it that year:
    months, dates and file names moved; settlement and business ids (and the event ids
    built from them) suffixed with ``tag``, so a later pass's rows are new rows rather than
    repeats; a monitoring line becomes the line of its new year. Anything else is returned
    as it is."""
    if not years:
        return ev
    if isinstance(ev, IncomeReport):
        month = f"{int(ev.month[:4]) + years:04d}{ev.month[4:]}"
        return msgspec.structs.replace(ev, id=f"income:{ev.household_id}:{month}", month=month,
                                       origin=_file_later(ev.origin, years))
    if isinstance(ev, MedicalSettlement):
        sid = ev.settlement_id + tag
        return msgspec.structs.replace(
            ev, id=f"medical:{sid}", settlement_id=sid,
            reverses=ev.reverses + tag if ev.reverses else ev.reverses,
            admitted=_later(ev.admitted, years), settled=_later(ev.settled, years),
            origin=_file_later(ev.origin, years))
    if isinstance(ev, EmploymentEvent):
        bid = ev.business_id + tag
        return msgspec.structs.replace(ev, id=f"employment:{bid}", business_id=bid,
                                       date=_later(ev.date, years),
                                       origin=_file_later(ev.origin, years))
    if isinstance(ev, MonitoringLine):
        year = ev.year + years
        return msgspec.structs.replace(ev, id=f"line:{year}", year=year,
                                       line=Decimal(monitoring_line(year)))
    return ev


def endless(root: Path, years_per_pass: int) -> Iterator[tuple[int, Item]]:
    """``(pass, item)`` for ever: the scenario's rows in publish order as the latency rig
    sends them, then again ``years_per_pass`` years later (without the roster and the
    regions, which do not change), and so on. Files are parsed as they are reached, so
    memory does not depend on how long it runs."""
    from fanpin.privacy import Pseudonymiser
    from producers.common import ParseContext
    from producers.scenario import load_known_households, scenario_files

    ctx = ParseContext(Pseudonymiser(KEY), load_known_households(root / "roster.csv"))
    files = scenario_files(root)
    k = 0
    while True:
        for rel, path, fmt in files:
            if k and rel in ("regions.csv", "roster.csv"):
                continue
            for ev in fmt.parse_file(path, rel, ctx):
                item = latency_item(shift(ev, k * years_per_pass, f".p{k}"))
                if item is not None:
                    yield k, item
        k += 1


# --- what is sampled -----------------------------------------------------------------------

def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (``VmRSS`` in /proc/<pid>/status), MB."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listener_pid(port: int) -> int | None:
    """The PID of the process listening on TCP ``port`` on this machine (one this user
    can see), or None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh, None)
            for line in fh:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1],
                                                             16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in inodes:
                        return int(entry.name)
    return None


def machine_busy() -> float | None:
    """CPU seconds the whole machine has been busy (all cores, everything but idle and
    I/O wait) since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            cols = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(cols[:8]) - cols[3] - cols[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def watchlist_counts(db: Path) -> tuple[int, int]:
    """(entries, alerts) on the SQLite watch list; zeros before the sink created it."""
    if not db.exists():
        return 0, 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            entries = conn.execute("SELECT count(*) FROM watchlist_entries").fetchone()[0]
            alerts = conn.execute("SELECT count(*) FROM watchlist_alerts").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0, 0
    return int(entries), int(alerts)


@dataclass
class Sample:
    t: float  # seconds since publishing began
    rows: int  # rows handed to the producer so far
    lag: dict[str, int | None]  # group -> messages published, not yet committed
    appended: dict[str, int | None]  # group -> end offsets summed over its topics
    rss: dict[str, float | None]  # process -> MB
    cpu: dict[str, float | None]  # process -> CPU seconds so far
    entries: int
    alerts: int
    load: float
    busy: float | None = None  # the machine's busy CPU seconds so far (all cores)


class Sampler(threading.Thread):
    """Takes a :class:`Sample` at ``t0``, then every ``every`` seconds until stopped, with
    its own admin client (the publisher's pacing is not held up by the broker's answers)."""

    def __init__(self, settings: Any, pids: dict[str, int | None], db: Path,
                 rows: Callable[[], int], t0: float, every: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        from fanpin.kafka_admin import Admin, pipeline_groups, sink_group, worker_group

        self.admin = Admin(settings)
        groups = pipeline_groups(settings)
        self.groups = {"worker": (worker_group(settings), groups[worker_group(settings)]),
                       "sink": (sink_group(settings), groups[sink_group(settings)])}
        self.pids = pids
        self.db = db
        self.rows = rows
        self.t0 = t0
        self.every = every
        self.samples: list[Sample] = []
        self.on_sample: Callable[[Sample], None] | None = None
        self._halt = threading.Event()

    def sample(self) -> Sample:
        from kafka.errors import KafkaError

        t = time.monotonic() - self.t0
        rows = self.rows()
        lag: dict[str, int | None] = {}
        appended: dict[str, int | None] = {}
        for name, (group, topics) in self.groups.items():
            try:
                lag[name] = sum(self.admin.partition_lag(group, topics).values())
                appended[name] = sum(n for topic in topics
                                     for n in self.admin.end_offsets(topic).values())
            except KafkaError:
                lag[name] = appended[name] = None
        rss = {p: rss_mb(pid) if pid else None for p, pid in self.pids.items()}
        cpu = {p: cpu_seconds(pid) if pid else None for p, pid in self.pids.items()}
        entries, alerts = watchlist_counts(self.db)
        s = Sample(t, rows, lag, appended, rss, cpu, entries, alerts, load1(), machine_busy())
        self.samples.append(s)
        if self.on_sample is not None:
            self.on_sample(s)
        return s

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            self.sample()
            n += 1
            pause = self.t0 + n * self.every - time.monotonic()
            if pause > 0 and self._halt.wait(pause):
                break

    def stop(self) -> None:
        """Stop, wait for the thread, take a last sample and close the admin client."""
        self._halt.set()
        self.join()
        self.sample()
        self.admin.close()


# --- verdicts --------------------------------------------------------------------------------

def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y against x; 0 for fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    return float(statistics.linear_regression(xs, ys).slope)


@dataclass
class Verdict:
    check: str
    measured: str
    threshold: str
    ok: bool


@dataclass
class Result:
    args: argparse.Namespace
    samples: list[Sample]
    seconds: float  # publishing time
    rows: int
    messages: int
    late: float  # how far the publisher fell behind its schedule at most, s
    passes: int
    scenario_rows: int  # rows of the first pass (roster included); 0 if not completed
    generated_in: float
    load_start: float
    load_end: float
    load_before: float = float("nan")  # before the scenario, broker, worker and sink
    fill_s: float = float("nan")  # publishing time until the state holds all it keeps
    drain: dict[str, float | None] = field(default_factory=dict)
    dead_letters: int = 0
    broker_pid: int | None = None
    started_broker: bool = True
    verdicts: list[Verdict] = field(default_factory=list)
    lag_stats: dict[str, dict[str, float]] = field(default_factory=dict)  # by group
    mem_stats: dict[str, dict[str, float]] = field(default_factory=dict)  # by process

    @property
    def achieved(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def series(samples: Sequence[Sample], figure: str, name: str) -> list[tuple[float, float]]:
    """(t, value) of ``figure`` (``lag``, ``appended``, ``rss``, ``cpu``) for ``name`` (a
    group or a process), over the samples that have it."""
    out: list[tuple[float, float]] = []
    for s in samples:
        v = getattr(s, figure)[name]
        if v is not None:
            out.append((s.t, float(v)))
    return out


def judge(res: Result) -> None:
    """Fill ``res.verdicts``, ``res.lag_stats`` and ``res.mem_stats`` from the samples; the
    checks use the second half of the publishing time."""
    every = res.args.interval
    late = [s for s in res.samples if s.t >= res.seconds / 2]
    target = res.args.rate
    res.verdicts.append(Verdict(
        "publish rate achieved", f"{res.achieved:,.0f} rows/s ({res.achieved / target:.1%})",
        f"≥ {RATE_SHARE:.0%} of {target:,.0f} rows/s", res.achieved >= RATE_SHARE * target))
    for g in GROUPS:
        pts = series(late, "lag", g)
        ends = series(late, "appended", g)
        if len(pts) < 2 or len(ends) < 2:
            res.verdicts.append(Verdict(f"{g} lag bounded", "too few samples", "–", False))
            continue
        (ta, na), (tb, nb) = ends[0], ends[-1]
        rate = (nb - na) / (tb - ta) if tb > ta else 0.0  # messages appended per second
        # messages committed per second: appended, less what the lag grew by
        done = (nb - na - (pts[-1][1] - pts[0][1])) / (tb - ta) if tb > ta else 0.0
        bound = LAG_BOUND_INTERVALS * every * rate
        lag_max = max(n for _, n in pts)
        lag_slope = slope(pts) * 60  # messages per minute
        behind = lag_max / rate if rate else (0.0 if not lag_max else math.inf)
        per_min = lag_slope / rate if rate else (0.0 if lag_slope <= 0 else math.inf)
        res.lag_stats[g] = {
            "append_rate": rate, "commit_rate": done, "lag_max": lag_max,
            "lag_last": pts[-1][1], "lag_slope": lag_slope, "lag_slope_s_per_min": per_min,
            "lag_max_all": max(n for _, n in series(res.samples, "lag", g))}
        res.verdicts.append(Verdict(
            f"{g} lag bounded: max over the second half",
            f"{lag_max:,.0f} messages (≈ {behind:.1f} s of input at {rate:,.1f} messages/s)",
            f"≤ {LAG_BOUND_INTERVALS:g} sampling intervals of input "
            f"({LAG_BOUND_INTERVALS:g} × {every:g} s = {bound:,.0f} messages)",
            lag_max <= bound))
        res.verdicts.append(Verdict(
            f"{g} lag not trending up: least-squares slope over the second half",
            f"{lag_slope:+,.1f} messages/min ({per_min:+.2f} s of input per minute)",
            f"≤ {LAG_SLOPE_LIMIT:g} s of input per minute", per_min <= LAG_SLOPE_LIMIT))
    for p in PROCESSES:
        rss = series(res.samples, "rss", p)
        half = [(t / 60, v) for t, v in rss if t >= res.seconds / 2]  # minutes, MB
        if len(half) < 2:
            if p == "broker" and res.broker_pid is None:
                continue  # a broker this machine does not show us
            res.verdicts.append(Verdict(f"{p} memory", "too few samples", "–", False))
            continue
        mb_slope = slope(half)
        res.mem_stats[p] = {"rss_start": rss[0][1], "rss_end": rss[-1][1],
                            "rss_max": max(v for _, v in rss), "rss_half": half[0][1],
                            "rss_slope": mb_slope}
        cpus = series(res.samples, "cpu", p)
        if len(cpus) >= 2 and cpus[-1][0] > cpus[0][0]:
            res.mem_stats[p]["cpu_share"] = (
                (cpus[-1][1] - cpus[0][1]) / (cpus[-1][0] - cpus[0][0]))
        res.verdicts.append(Verdict(
            f"{p} memory not growing: RSS slope over the second half",
            f"{mb_slope:+.2f} MB/min ({half[0][1]:,.0f} → {half[-1][1]:,.0f} MB)",
            f"≤ {RSS_SLOPE_LIMIT:g} MB/min", mb_slope <= RSS_SLOPE_LIMIT))


# --- the report ------------------------------------------------------------------------------

def _plural(n: float, word: str) -> str:
    return f"{n:g} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def _n(v: float | None, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:,.{digits}f}"


def cpu_between(a: Sample, b: Sample) -> tuple[float | None, float | None]:
    """Between two samples: the worker's CPU (cores) and the CPU of everything on the
    machine that is not the soak's own processes (broker, worker, sink, publisher)."""
    dt_ = b.t - a.t
    if dt_ <= 0:
        return None, None
    ours = [(b.cpu[p], a.cpu[p]) for p in b.cpu]
    used = [(y - x) / dt_ for y, x in ours if x is not None and y is not None]
    w1, w0 = b.cpu.get("worker"), a.cpu.get("worker")
    worker = (w1 - w0) / dt_ if w1 is not None and w0 is not None else None
    if a.busy is None or b.busy is None or len(used) < len(ours):
        return worker, None
    return worker, max(0.0, (b.busy - a.busy) / dt_ - sum(used))


def samples_csv(res: Result) -> str:
    """Every sample, one line each, for a closer look than the table."""
    procs = sorted({p for s in res.samples for p in s.rss})
    head = ["seconds", "rows", *(f"{g}_lag" for g in GROUPS),
            *(f"{g}_appended" for g in GROUPS), *(f"{p}_rss_mb" for p in procs),
            *(f"{p}_cpu_s" for p in procs), "machine_busy_cpu_s", "watchlist_entries",
            "watchlist_alerts", "load1"]
    lines = [",".join(head)]

    def v(x: float | int | None, fmt: str = "") -> str:
        return "" if x is None else format(x, fmt)

    for s in res.samples:
        lines.append(",".join([
            f"{s.t:.2f}", str(s.rows), *(v(s.lag[g]) for g in GROUPS),
            *(v(s.appended[g]) for g in GROUPS), *(v(s.rss.get(p), ".1f") for p in procs),
            *(v(s.cpu.get(p), ".2f") for p in procs), v(s.busy, ".2f"), str(s.entries),
            str(s.alerts), f"{s.load:.2f}"]))
    return "\n".join(lines) + "\n"


def table_samples(res: Result) -> list[Sample]:
    """About one sample a minute (more for short runs: at least ten rows), and the last."""
    every = res.args.interval
    step = max(1, round(min(60.0, res.seconds / 10) / every))
    rows = res.samples[::step]
    if res.samples and rows[-1] is not res.samples[-1]:
        rows.append(res.samples[-1])
    return rows


def plots(res: Result) -> dict[str, str]:
    from fanpin import svgplot

    lag = {f"{g} group": [(t / 60, v) for t, v in series(res.samples, "lag", g)]
           for g in GROUPS}
    mem = {p: [(t / 60, v) for t, v in series(res.samples, "rss", p)]
           for p in PROCESSES}
    mem = {k: v for k, v in mem.items() if v}
    rate = f"{res.args.rate:,.0f} rows/s"
    return {
        "lag.svg": svgplot.line_chart(
            f"Consumer lag at {rate}: messages published, not yet committed",
            lag, "minutes", "messages"),
        "memory.svg": svgplot.line_chart(
            f"Resident memory (VmRSS) at {rate}", mem, "minutes", "MB"),
    }


def markdown(res: Result, plot_dir: str) -> str:
    a = res.args
    first = res.samples[0] if res.samples else None
    loads = [s.load for s in res.samples if math.isfinite(s.load)]
    mean_load = statistics.fmean(loads) if loads else None
    max_load = max(loads) if loads else None
    out = ["# Soak test", "",
           "Written by `make soak` (`python -m fanpin.soak`); do not edit by hand.", "",
           f"- Machine: {machine()}.",
           f"- Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {_plural(a.minutes, 'minute')}"
           f" of publishing at {a.rate:,.0f} rows/s ({a.rate / LATENCY_RATE:g}× the benchmark's "
           f"steady rate of {LATENCY_RATE:,.0f} rows/s, the latency figure in "
           "[benchmarks.md](benchmarks.md)).",
           f"- Load average (1 min): {_n(res.load_before, 2)} before the soak started anything, "
           f"{_n(mean_load, 2)} on average while publishing (at most {_n(max_load, 2)}; "
           f"the pipeline's own processes count too), on {os.cpu_count()} cores. "
           + ("Other jobs were running: the pipeline competed with them for CPU."
              if res.load_before >= BUSY_LOAD else "The machine was otherwise quiet."),
           f"- Data: {a.households:,} simulated households (`fanpin simulate`, {a.months} "
           f"months, seed {a.seed}; generated in {res.generated_in:.0f} s), "
           + (f"{res.scenario_rows:,} rows in the first pass with the roster. "
              if res.scenario_rows else "")
           + f"The months are replayed in passes, each moved "
           f"{_plural(math.ceil(a.months / 12), 'year')} later; "
           f"{_plural(res.passes, 'pass')} reached.",
           f"- Pipeline: {'its own' if res.started_broker else 'a running'} single Kafka "
           f"broker on loopback, topics with a fresh prefix, {PARTITIONS} partitions; one "
           "`fanpin worker` and one `fanpin sink` writing to SQLite in a temporary folder.",
           ""]
    out += ["## Verdict", "",
            f"**{'Pass' if res.ok else 'FAIL'}**: "
            + ("lag and memory stay bounded at this rate."
               if res.ok else "see the checks marked **no** below."), "",
            "| check | measured | threshold | met |", "|---|---|---|:-:|"]
    for v in res.verdicts:
        out.append(f"| {v.check} | {v.measured} | {v.threshold} | "
                   f"{'yes' if v.ok else '**no**'} |")
    out.append("")
    if res.achieved < RATE_SHARE * a.rate:
        out += [f"The publisher did not keep up: it handed over {res.rows:,} rows in "
                f"{res.seconds:.0f} s ({res.achieved:,.0f} rows/s) against "
                f"{a.rate:,.0f} rows/s asked, and was up to {res.late:.1f} s behind its "
                "schedule. The lag and memory figures hold for the rate achieved, not the "
                "one asked.", ""]
    out += ["## Figures", "",
            "| process | RSS at start (MB) | at half time | at the end | peak | slope, second "
            "half (MB/min) | CPU (cores, mean) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for p in PROCESSES:
        st = res.mem_stats.get(p)
        if not st:
            continue
        out.append(f"| {p} | {_n(st['rss_start'])} | {_n(st['rss_half'])} | "
                   f"{_n(st['rss_end'])} | {_n(st['rss_max'])} | {st['rss_slope']:+.2f} | "
                   f"{_n(st.get('cpu_share'), 2)} |")
    out += ["", "| consumer group | messages appended/s (second half) | committed/s | "
            "max lag, whole run | "
            "max lag, second half | last lag | lag slope, second half (messages/min) | "
            "caught up after publishing stopped |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for g in GROUPS:
        st = res.lag_stats.get(g) or {}
        drain = res.drain.get(g)
        out.append(f"| {g} | {_n(st.get('append_rate'), 1)} | {_n(st.get('commit_rate'), 1)} | "
                   f"{_n(st.get('lag_max_all'))} | "
                   f"{_n(st.get('lag_max'))} | {_n(st.get('lag_last'))} | "
                   f"{_n(st.get('lag_slope'), 1)} | "
                   f"{'not within the timeout' if drain is None else f'{drain:.1f} s'} |")
    last = res.samples[-1] if res.samples else None
    out += ["",
            f"- Rows handed to the producer: {res.rows:,} in {res.seconds:.0f} s "
            f"({res.achieved:,.0f} rows/s) as {res.messages:,} messages; the publisher was "
            f"at most {res.late:.2f} s behind its 50 ms schedule.",
            f"- Watch list at the end: {last.entries if last else 0:,} entries from "
            f"{last.alerts if last else 0:,} alerts; dead letters: {res.dead_letters:,}.",
            ""]
    out += ["## Samples", "",
            f"Every {a.interval:g} s a sample; the table shows about one a minute. Lag is in "
            "messages (batch messages of up to a tick's rows per partition, as the broker "
            "counts them).", "",
            "| time (min:s) | rows published | rows/s since previous | worker lag | sink lag | "
            "worker RSS (MB) | sink RSS (MB) | broker RSS (MB) | watch-list entries | "
            "worker CPU (cores) | other jobs' CPU (cores) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    prev = first
    for s in table_samples(res):
        rate = worker_cpu = others = None
        if prev is not None and s.t > prev.t:
            rate = (s.rows - prev.rows) / (s.t - prev.t)
            worker_cpu, others = cpu_between(prev, s)
        out.append(f"| {int(s.t // 60)}:{int(s.t % 60):02d} | {s.rows:,} | {_n(rate)} | "
                   f"{_n(s.lag['worker'])} | {_n(s.lag['sink'])} | {_n(s.rss['worker'])} | "
                   f"{_n(s.rss['sink'])} | {_n(s.rss['broker'])} | {s.entries:,} | "
                   f"{_n(worker_cpu, 2)} | {_n(others, 2)} |")
        prev = s
    out += ["", f"Every sample: [{plot_dir}/samples.csv]({plot_dir}/samples.csv).", "",
            f"![lag]({plot_dir}/lag.svg)", "", f"![memory]({plot_dir}/memory.svg)", ""]
    out += ["## How it is measured", "",
            "- **Publishing.** The latency rig of `make bench` (`fanpin.bench.hand_over`): "
            "every 50 ms the next rows go to a kafka-python producer as one batch message "
            "per topic and partition, then a flush. Rows are parsed from the scenario's "
            "files as they are reached (parse, validate, pseudonymise, as `fanpin publish` "
            "does) in the publishing process; a pass after the first moves every month, "
            "date and file name whole years later, suffixes settlement and business ids, "
            "and adds the new years' monitoring lines, so later passes are new data for "
            "the same households, not repeats.",
            "- **Lag.** Per consumer group, end offsets minus committed offsets summed over "
            "its topics (`Admin.partition_lag`, the figure `fanpin status` and "
            "`fanpin_consumer_lag_messages` show): the worker's group on person-events and "
            "household-events (which also carries the worker's own joined batches), the "
            "sink's group on alerts and files. *Seconds of input* divide messages by the "
            "rate messages were appended to the group's topics over the second half.",
            "- **Memory.** `VmRSS` from `/proc/<pid>/status` of the worker, the sink and "
            "the broker. "
            + (f"The broker is a JVM with a fixed {BROKER_HEAP} heap (`-Xms` = `-Xmx`) "
               "touched at start (`-XX:+AlwaysPreTouch`), so its RSS holds the whole heap "
               "from the first sample and any growth is memory outside the heap."
               if res.started_broker else
               "The broker is the one given with `--bootstrap`, as it runs (a JVM's RSS "
               "also grows while its heap is first touched)."),
            "- **Verdicts** use the second half of the run, after start-up. The detector "
            f"keeps {INCOME_MONTHS_KEPT} months of income and {SETTLEMENT_MONTHS_KEPT} of "
            "settlements per household; at this rate and number of households that much "
            f"has been published after about {res.fill_s:.0f} s, "
            + ("before the second half begins, so the state is full there."
               if res.fill_s <= res.seconds / 2 else
               f"after the second half begins ({res.seconds / 2:.0f} s): the state was "
               "still filling then.")
            + " Slopes are least-squares fits over every "
            f"sample of the second half. Lag bounded: its maximum ≤ {LAG_BOUND_INTERVALS:g} "
            f"sampling intervals' worth of the messages appended, and its slope ≤ "
            f"{LAG_SLOPE_LIMIT:g} s of input per minute (a consumer that kept "
            f"{1 - LAG_SLOPE_LIMIT / 60:.1%} of the pace or less would fail). Memory: RSS "
            f"slope ≤ {RSS_SLOPE_LIMIT:g} MB/min per process. Rate: at least "
            f"{RATE_SHARE:.0%} of the rate asked.",
            "- **CPU.** A process's user and system CPU time (`/proc/<pid>/stat`) between "
            "two rows of the table, in cores; *other jobs* is the whole machine's busy CPU "
            "(`/proc/stat`) less the soak's own processes (broker, worker, sink and the "
            "publishing process): what else on the machine competed with the pipeline.",
            "- **Caught up** is the time after the last row until the group's lag was zero "
            f"(at most {a.drain_timeout:g} s waited).", ""]
    return "\n".join(out)


# --- the run -----------------------------------------------------------------------------------

def fill_seconds(root: Path, months: int, rate: float) -> float:
    """About how long, at ``rate``, until every household's state holds all the months the
    detector keeps (the roster, then ``INCOME_MONTHS_KEPT`` months of rows); from the
    scenario's line counts."""
    from producers.scenario import scenario_files

    roster = monthly = 0
    for rel, path, _ in scenario_files(root):
        lines = path.read_bytes().count(b"\n") - 1
        if rel == "roster.csv":
            roster = lines
        elif "/" in rel:
            monthly += lines
    return (roster + monthly / max(months, 1) * INCOME_MONTHS_KEPT) / rate


def _check_loopback(bootstrap: str) -> None:
    for server in bootstrap.split(","):
        host = server.strip().rpartition(":")[0]
        if host not in LOOPBACK:
            raise SystemExit(f"--bootstrap {server.strip()}: the soak test runs on loopback "
                             "only (127.0.0.1, localhost or ::1)")


def _port(bootstrap: str) -> int:
    return int(bootstrap.split(",")[0].strip().rpartition(":")[2])


def run(args: argparse.Namespace) -> Result:
    from fanpin import bench
    from fanpin.kafka_admin import pipeline_groups
    from fanpin.services import Services

    if args.bootstrap:
        _check_loopback(args.bootstrap)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    load_before = load1()
    work = Path(tempfile.mkdtemp(prefix="fanpin-soak-"))
    try:
        say(f"simulating {args.households:,} households x {args.months} months ...")
        t = time.monotonic()
        root = simulate(work / "scenario", args.households, args.months, args.seed)
        generated_in = time.monotonic() - t
        var = work / f"run-{uuid.uuid4().hex[:6]}"
        var.mkdir()
        db = var / "watchlist.db"
        duration = args.minutes * 60
        # Its own broker's heap is touched up front, so that its RSS starts with the whole
        # heap and growth after that is memory outside it.
        with local_broker(args.bootstrap, jvm_args=PRETOUCH) as bootstrap:
            settings = bench._settings(bootstrap, var, database_url=f"sqlite:///{db}")
            broker_pid = listener_pid(_port(bootstrap))
            with Services(settings, need=("worker", "sink")) as services:
                pids = {"worker": services.children["worker"].pid,
                        "sink": services.children["sink"].pid, "broker": broker_pid,
                        "publisher": os.getpid()}
                res = _publish(args, settings, services, pids, db, root, duration, say)
                res.generated_in = generated_in
                res.load_before = load_before
                res.fill_s = fill_seconds(root, args.months, args.rate)
                res.broker_pid = broker_pid
                res.started_broker = not args.bootstrap
                assert services.admin is not None
                groups = pipeline_groups(settings)
                t_end = time.monotonic()
                for name, (group, topics) in zip(GROUPS, groups.items(), strict=True):
                    try:
                        services.admin.wait_caught_up(
                            group, topics, alive=services.check_alive,
                            timeout=max(1.0, args.drain_timeout - (time.monotonic() - t_end)))
                        res.drain[name] = time.monotonic() - t_end
                    except TimeoutError:
                        res.drain[name] = None
                res.dead_letters = sum(
                    services.admin.end_offsets(settings.topic("dead-letters")).values())
        judge(res)
        return res
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _publish(args: argparse.Namespace, settings: Any, services: Any,
             pids: dict[str, int | None], db: Path, root: Path, duration: float,
             say: Callable[..., None]) -> Result:
    from fanpin.bench import _producer

    rate = float(args.rate)
    per_tick = max(1, round(rate * TICK))
    tick = per_tick / rate
    stream = endless(root, math.ceil(args.months / 12))
    producer = _producer(settings.bootstrap_servers)
    producer.partitions_for(settings.topic("person-events"))
    producer.partitions_for(settings.topic("household-events"))
    count = {"rows": 0, "messages": 0, "pass": 0, "first": 0}
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=int(rate * duration), desc="soak", unit="row", unit_scale=True,
                   file=sys.stderr, mininterval=1.0, smoothing=0.1)
    load_start = load1()
    start = time.monotonic()
    sampler = Sampler(settings, pids, db, lambda: count["rows"], start, args.interval)

    def show(s: Sample) -> None:
        if bar is not None:
            bar.set_postfix_str(
                f"lag w {_n(s.lag['worker'])} s {_n(s.lag['sink'])} | RSS MB w "
                f"{_n(s.rss['worker'])} s {_n(s.rss['sink'])} b {_n(s.rss['broker'])} | "
                f"entries {s.entries:,}", refresh=False)

    sampler.on_sample = show
    sampler.start()
    late = 0.0
    i = 0
    next_check = start
    try:
        while True:
            due = start + i * tick
            now = time.monotonic()
            if due - start >= duration or now - start >= duration:
                break
            if due > now:
                time.sleep(due - now)
            else:
                late = max(late, now - due)
            chunk = list(islice(stream, per_tick))
            count["messages"] += hand_over(producer, settings, [it for _, it in chunk])
            count["rows"] += len(chunk)
            count["pass"] = chunk[-1][0]
            count["first"] += sum(1 for k, _ in chunk if k == 0)
            if bar is not None:
                bar.update(len(chunk))
            i += 1
            if now >= next_check:
                services.check_alive()
                next_check = now + 1.0
        seconds = time.monotonic() - start
    finally:
        producer.close()
        sampler.stop()
        if bar is not None:
            bar.close()
    say(f"published {count['rows']:,} rows in {seconds:.0f} s "
        f"({count['rows'] / seconds:,.0f} rows/s); waiting for the pipeline to catch up ...")
    return Result(args=args, samples=sampler.samples, seconds=seconds, rows=count["rows"],
                  messages=count["messages"], late=late, passes=count["pass"] + 1,
                  scenario_rows=count["first"] if count["pass"] else 0, generated_in=0.0,
                  load_start=load_start, load_end=load1())


def write(res: Result, out: Path) -> None:
    """The report at ``out``; its plots and every sample (``samples.csv``) in a folder named
    after it (``docs/soak.md``: ``docs/soak/lag.svg``, ``memory.svg``, ``samples.csv``)."""
    plot_dir = out.parent / out.stem
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, svg in plots(res).items():
        (plot_dir / name).write_text(svg, encoding="utf-8")
    (plot_dir / "samples.csv").write_text(samples_csv(res), encoding="utf-8")
    out.write_text(markdown(res, out.stem), encoding="utf-8")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m fanpin.soak", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                    help="how long to publish (default %(default)g)")
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE,
                    help="rows/s handed to the producer (default %(default)g: twice the "
                    "benchmark's latency rate)")
    ap.add_argument("--households", type=int, default=DEFAULT_HOUSEHOLDS,
                    help="households simulated and replayed (default %(default)d)")
    ap.add_argument("--months", type=int, default=DEFAULT_MONTHS,
                    help="months simulated per pass (default %(default)d)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--interval", type=float, default=SAMPLE_EVERY,
                    help="seconds between samples (default %(default)g)")
    ap.add_argument("--drain-timeout", type=float, default=120.0,
                    help="seconds to wait, after publishing, for the lag to reach zero")
    ap.add_argument("--out", type=Path, help="write the Markdown report here, and the plots "
                    "into a folder named after it (docs/soak.md: docs/soak/*.svg)")
    ap.add_argument("--bootstrap", help="use this running broker (on loopback) instead of "
                    "starting one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (scenario, "
                    "logs, watch list)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.interval <= 0 or args.households < 1:
        raise SystemExit("--minutes, --rate, --interval and --households must be positive")
    res = run(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write(res, args.out)
    for v in res.verdicts:
        print(f"{'ok  ' if v.ok else 'FAIL'} {v.check}: {v.measured} (threshold {v.threshold})")
    return 0 if res.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

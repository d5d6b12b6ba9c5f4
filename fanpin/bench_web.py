"""``make bench-web``: the duty officers' workspace on a watch list of 1,000,000 entries.

The issue's goal: with 1,000,000 entries in PostgreSQL, report the p95 latency of the list
page and the JSON API; the target is under 200 ms for a filtered first page.

What it does, all in one run:

1. Starts its own throwaway PostgreSQL from Debian's packages (``initdb`` + ``pg_ctl`` in a
   temporary folder, 127.0.0.1 on a free port, never 5432) unless ``--url`` names one, and
   stops it by its PID at the end, also on an error or Ctrl-C.
2. Creates the watch-list tables with ``models.init_db`` and fills them with ``--entries``
   realistic entries by ``COPY`` (psycopg 3): one province of ~100 counties × 10 townships ×
   15 villages, entries arriving over two years (ids in arrival order, as the sink writes
   them), states that follow the workflow's timeline (some left pending past their 15 days,
   i.e. overdue), severities, risk types, assignees, alert records with their payloads,
   the audit trail, visit notes, measures, an account for every village, township and
   county, and the region names. The secondary indexes and foreign keys are dropped for
   the load and rebuilt afterwards (each index's build time and size are reported), then
   ``VACUUM (ANALYZE)``.
3. Serves the real app (``consumers.watchlist.views.create_app``) with uvicorn on
   127.0.0.1 (a free port, a thread of this process) and, for each scenario, logs in as the
   scenario's user with httpx, warms up, then sends ``--requests`` sequential requests and
   reports p50/p95/p99/max in milliseconds (client side: the whole HTTP round trip), and
   the p50 of the time spent inside the database per request. ``/healthz`` (a ``SELECT 1``
   through the same stack) is the baseline measured in the same run.
4. Runs ``EXPLAIN (ANALYZE, BUFFERS)`` on the slowest statement of the slowest list/API
   scenario, measures ``record_alerts`` throughput with and without the indexes added for
   the workspace, and writes the report (``--out``) and a bar chart of the p95s.

``--keep`` leaves the server running (for poking at it with psql); ``--url ... --reuse``
measures an already filled database again without loading it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import math
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

from fanpin.broker import pid_alive

REPO: Final = Path(__file__).resolve().parents[1]
DAY: Final = 86400.0
UTC: Final = dt.UTC
PASSWORD: Final = "bench-password-1"  # noqa: S105 (throwaway accounts)
TARGET_MS: Final = 200.0
PROVINCE: Final = "99"  # the fictional 示范省, as in the tests
RULE_VERSION: Final = "2026.11-1"
# The indexes on watchlist_entries before the workspace's query work (issue 4); the others
# in models.Entry.__table_args__ were added for the list page and the API.
ORIGINAL_INDEXES: Final = frozenset({
    "uq_watchlist_entries_open_household",
    "ix_watchlist_entries_region_code",
    "ix_watchlist_entries_state",
    "ix_watchlist_entries_first_month",
    "ix_watchlist_entries_household_id",
    "ix_watchlist_entries_assignee",
})
SERVER_SETTINGS: Final[dict[str, str]] = {
    # A modest dedicated server; everything else is PostgreSQL's default (jit included).
    "shared_buffers": "1GB",
    "effective_cache_size": "8GB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_connections": "50",
}


# --- a throwaway PostgreSQL ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found: list[tuple[float, Path]] = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        with contextlib.suppress(ValueError):
            found.append((float(initdb.parent.parent.name), initdb.parent))
    return max(found)[1] if found else None


class PgServer:
    """A private PostgreSQL in a temporary folder. As root, the folder is handed to the
    ``postgres`` system user and the server runs as that user (initdb refuses root)."""

    SERVER_USER: Final = "postgres"

    def __init__(self, bin_dir: Path, root: Path | None = None,
                 settings: dict[str, str] | None = None) -> None:
        self.bin_dir = bin_dir
        self.root = root or Path(tempfile.mkdtemp(prefix="fanpin-bench-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.settings = dict(SERVER_SETTINGS if settings is None else settings)
        self.port = 0
        self.pid: int | None = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.SERVER_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)

    def _cmd(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.SERVER_USER, "--", *cmd] if os.geteuid() == 0 else cmd

    def _run(self, cmd: list[str], timeout: float = 300) -> None:
        result = subprocess.run(self._cmd(cmd), capture_output=True, text=True,
                                timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}\n{self.log_tail()}")

    def start(self) -> str:
        """initdb, start, create the database; returns its SQLAlchemy URL."""
        self._run([str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        last: Exception | None = None
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.port = free_port()
            try:
                self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l",
                           str(self.log), "-w", "-t", "120", "-o",
                           f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                           + options, "start"])
            except RuntimeError as exc:
                last = exc
                continue
            self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
            break
        else:
            raise RuntimeError(f"PostgreSQL did not start: {last}")
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE fanpin_bench")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/fanpin_bench"

    def version(self) -> str:
        out = subprocess.run([str(self.bin_dir / "postgres"), "--version"],
                             capture_output=True, text=True, check=False)
        return out.stdout.strip()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, remove: bool = True) -> None:
        """Fast shutdown of exactly this server, by its postmaster's PID."""
        try:
            if self.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGINT)  # SIGINT = "fast" shutdown
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and pid_alive(self.pid):
                    time.sleep(0.1)
                if pid_alive(self.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGQUIT)  # immediate shutdown
                self.pid = None
        finally:
            if remove:
                shutil.rmtree(self.root, ignore_errors=True)


def psycopg_connect(url: str, autocommit: bool = False):  # type: ignore[no-untyped-def]
    """A psycopg connection to the database named by a SQLAlchemy URL."""
    import psycopg

    u = make_url(url)
    return psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                           user=u.username or "postgres", password=u.password,
                           dbname=u.database or "postgres", autocommit=autocommit)


# --- the province and its entries -------------------------------------------------------------

RISK_WEIGHTS: Final[dict[str, float]] = {
    "因病": 0.27, "因务工就业不稳": 0.22, "因残": 0.10, "缺劳动力": 0.10, "因学": 0.07,
    "因意外事故": 0.06, "因自然灾害": 0.05, "因产业项目失败": 0.05, "因安全住房": 0.03,
    "因安全饮水": 0.02, "其他": 0.03,
}
RULE_OF: Final[dict[str, str]] = {
    "因病": "illness", "因务工就业不稳": "job-loss", "因产业项目失败": "business-failure",
}
SEVERITY_WEIGHTS: Final = (("高", 0.15), ("中", 0.45), ("低", 0.40))
HOUSEHOLD_TYPES: Final = (("脱贫户", 0.55), ("一般农户", 0.35), ("监测户", 0.10))
LINES: Final[dict[int, int]] = {2023: 7200, 2024: 7600, 2025: 8000, 2026: 8300, 2027: 8600}
NAME_CHARS: Final = "安平和兴顺丰泰宁福昌盛康永新华龙凤山水河桥石林松柏青云阳明东西南北中"
MEASURES: Final = ("产业帮扶", "就业帮扶", "健康帮扶", "教育帮扶", "综合保障", "公益岗位")


@dataclass(frozen=True)
class Province:
    """``counties`` counties (10 per city), each of ``townships`` townships of
    ``villages`` villages: codes 99 CC KK TTT VVV."""

    counties: int = 100
    townships: int = 10
    villages: int = 15

    def county_codes(self) -> list[str]:
        return [f"{PROVINCE}{c // 10 + 1:02d}{c % 10 + 1:02d}" for c in range(self.counties)]

    def township_codes(self) -> list[str]:
        return [f"{k}{t:03d}" for k in self.county_codes()
                for t in range(1, self.townships + 1)]

    def village_codes(self) -> list[str]:
        return [f"{t}{v:03d}" for t in self.township_codes()
                for v in range(1, self.villages + 1)]


def _name(code: str, suffix: str) -> str:
    h = int(hashlib.blake2b(code.encode(), digest_size=4).hexdigest(), 16)
    n = len(NAME_CHARS)
    return NAME_CHARS[h % n] + NAME_CHARS[(h // n) % n] + suffix


def region_rows(p: Province) -> list[tuple[str, str, str]]:
    rows = [(f"{PROVINCE}0000000000", "示范省", "省")]
    cities = sorted({k[:4] for k in p.county_codes()})
    rows += [(f"{c}00000000", _name(c, "市"), "市") for c in cities]
    rows += [(f"{k}000000", _name(k, "县"), "县") for k in p.county_codes()]
    rows += [(f"{t}000", _name(t, "镇"), "乡镇") for t in p.township_codes()]
    rows += [(v, _name(v, "村"), "村") for v in p.village_codes()]
    return rows


@dataclass(slots=True)
class Spec:
    """One entry, light enough to hold a million of (the heavy columns are made when the
    entry is written)."""

    household_id: str
    episode: int
    household_type: str
    created: float  # epoch seconds
    state: str
    severity: str
    risk_types: tuple[str, ...]  # the main one first
    alert_count: int
    ack: float | None = None
    visit: float | None = None
    decided: float | None = None  # identified or dismissed
    measured: float | None = None
    closed: float | None = None
    identified: bool = False
    assignee: str | None = None
    snoozed_until: float | None = None
    escalated: float | None = None
    measure_count: int = 0


def _pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    r = rng.random() * sum(w for _, w in weighted)
    for value, w in weighted:
        r -= w
        if r <= 0:
            return value
    return weighted[-1][0]


def _delay(rng: random.Random, mean_days: float, p_long: float) -> float:
    """A handling delay: usually days, sometimes (``p_long``) weeks or months."""
    d = rng.expovariate(1 / mean_days)
    if rng.random() < p_long:
        d += rng.uniform(15, 240)
    return d * DAY


def _episode(rng: random.Random, hid: str, episode: int, hh_type: str, t0: float,
             now: float) -> Spec:
    """One episode's timeline, cut at ``now``."""
    severity = _pick(rng, SEVERITY_WEIGHTS)
    main = _pick(rng, list(RISK_WEIGHTS.items()))
    types = [main]
    for _ in range(2):
        if rng.random() < 0.25:
            extra = _pick(rng, list(RISK_WEIGHTS.items()))
            if extra not in types:
                types.append(extra)
    spec = Spec(household_id=hid, episode=episode, household_type=hh_type, created=t0,
                state="新预警", severity=severity, risk_types=tuple(types), alert_count=1)
    village, township = hid[:12], hid[:9]
    officer = f"v{village}" if rng.random() < 0.75 else f"t{township}"
    stuck = rng.random() < 0.006  # never picked up at all
    ack = math.inf if stuck else t0 + _delay(rng, 1.5, 0.02)
    visit = ack + _delay(rng, 3, 0.02)
    decided = visit + _delay(rng, 5, 0.03)
    identify = rng.random() < 0.45
    measured = decided + _delay(rng, 12, 0.12) if identify and rng.random() < 0.92 else math.inf
    eliminated = (max(decided + 183 * DAY, measured) + rng.uniform(0, 365) * DAY
                  if identify and rng.random() < 0.8 else math.inf)
    if ack <= now:
        spec.state, spec.ack, spec.assignee = "已接收", ack, officer
    elif rng.random() < 0.05:
        spec.assignee = f"v{village}"  # assigned by the county lead, not yet taken
    if visit <= now:
        spec.state, spec.visit = "核实中", visit
    if decided <= now:
        spec.decided = decided
        if identify:
            spec.state, spec.identified = "已纳入监测", True
        else:
            spec.state, spec.closed = "核实排除", decided
    if spec.identified and measured <= now:
        spec.state, spec.measured = "帮扶中", measured
        last = min(now, eliminated)
        spec.measure_count = 1 + min(4, int((last - measured) / (90 * DAY)))
    if spec.identified and eliminated <= now:
        spec.state, spec.closed = "风险消除", eliminated
    end = spec.closed or now
    spec.alert_count = 1 + min(int(rng.expovariate(1.2)), max(0, int((end - t0) / (30 * DAY))))
    pending = spec.state in ("新预警", "已接收", "核实中")
    if pending and now - t0 > 15 * DAY and rng.random() < 0.3:
        spec.escalated = t0 + 20 * DAY
    if pending and rng.random() < 0.03:
        spec.snoozed_until = now + rng.uniform(1, 60) * DAY
    return spec


def generate_specs(n: int, province: Province, now: float, seed: int = 7) -> list[Spec]:
    """``n`` entries, in arrival order (the order the sink would have written them)."""
    rng = random.Random(seed)
    villages = province.village_codes()
    weights = [rng.lognormvariate(0, 0.6) for _ in villages]
    cum: list[float] = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    next_no = dict.fromkeys(villages, 1)
    specs: list[Spec] = []
    start = now - 730 * DAY
    while len(specs) < n:
        village = rng.choices(villages, cum_weights=cum)[0]
        no = next_no[village]
        if no > 8999:
            continue
        next_no[village] = no + 1
        hid = f"{village}{no:04d}"
        hh_type = _pick(rng, HOUSEHOLD_TYPES)
        t0 = rng.uniform(start, now)
        episode = 1
        while len(specs) < n:
            spec = _episode(rng, hid, episode, hh_type, t0, now)
            specs.append(spec)
            if spec.closed is None or rng.random() < 0.75:
                break
            t0 = spec.closed + rng.uniform(30, 400) * DAY
            if t0 > now:
                break
            episode += 1
    specs.sort(key=lambda s: s.created)
    return specs


# --- writing rows ------------------------------------------------------------------------------


_DAYS: dict[int, tuple[str, int]] = {}


def _day(t: float) -> tuple[str, int]:
    """("YYYY-MM-DD ", month index) of the UTC day holding ``t``, cached."""
    day = int(t // DAY)
    found = _DAYS.get(day)
    if found is None:
        d = dt.datetime.fromtimestamp(day * DAY, UTC)
        found = _DAYS[day] = (d.strftime("%Y-%m-%d "), d.year * 12 + d.month - 1)
    return found


def _iso(t: float | None) -> str | None:
    """A UTC timestamp as COPY reads it (whole seconds)."""
    if t is None:
        return None
    sec = int(t % DAY)
    return f"{_day(t)[0]}{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}+00"


def _month_index(t: float) -> int:
    return _day(t)[1]


def _month_label(m: int) -> str:
    return f"{m // 12:04d}-{m % 12 + 1:02d}"


def _copy_text(v: str) -> str:
    if "\\" in v or "\t" in v or "\n" in v or "\r" in v:
        return (v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                .replace("\r", "\\r"))
    return v


def copy_line(values: Sequence[object]) -> str:
    """One row in PostgreSQL's COPY text format."""
    return "\t".join(
        _copy_text(v) if type(v) is str else "\\N" if v is None
        else ("t" if v else "f") if type(v) is bool else str(v)
        for v in values) + "\n"


ENTRY_COLUMNS: Final = (
    "id", "entry_key", "household_id", "region_code", "household_type", "episode",
    "risk_type", "risk_types", "rules", "severity", "state", "first_month", "last_month",
    "alert_count", "evidence_json", "rule_version", "created_at", "updated_at", "assignee",
    "acknowledged_at", "identified_at", "monitored_type", "dismiss_reason",
    "elimination_kind", "closed_at", "measure_count", "snoozed_until", "snooze_reason",
    "escalated_at", "reminded_at", "high_notified_at",
)
ALERT_COLUMNS: Final = ("id", "alert_id", "entry_id", "household_id", "month", "received_at",
                        "payload")
HISTORY_COLUMNS: Final = ("id", "entry_id", "at", "actor", "action", "old_value", "new_value")
NOTE_COLUMNS: Final = ("id", "entry_id", "at", "author", "kind", "text")
MEASURE_COLUMNS: Final = ("id", "entry_id", "at", "author", "category", "text")
USER_COLUMNS: Final = ("id", "username", "display_name", "password_hash", "role",
                       "region_code", "active", "channels", "email", "created_at")
REGION_COLUMNS: Final = ("code", "name", "level")
TABLES: Final[dict[str, tuple[str, ...]]] = {
    "watchlist_entries": ENTRY_COLUMNS,
    "watchlist_alerts": ALERT_COLUMNS,
    "watchlist_history": HISTORY_COLUMNS,
    "watchlist_notes": NOTE_COLUMNS,
    "watchlist_measures": MEASURE_COLUMNS,
    "users": USER_COLUMNS,
    "regions": REGION_COLUMNS,
}


class RowMaker:
    """Turns specs into the rows of every table, with evidence and alert payloads that
    decode as the app expects (``service.evidence_of``, ``schemas.decode_event``)."""

    def __init__(self, seed: int = 11) -> None:
        from consumers.watchlist.service import EvidenceView
        from schemas.events import Alert, Evidence, MonthFigures, Origin, Reason, encode

        self.rng = random.Random(seed)
        self._types = (EvidenceView, Alert, Evidence, MonthFigures, Origin, Reason)
        self._encode = encode
        import msgspec

        self._ev_encoder = msgspec.json.Encoder(decimal_format="string")
        self.money = [Decimal(f"{c / 100:.2f}") for c in range(0, 900_000, 997)]
        self.zero = Decimal("0.00")
        self.ids = {"alert": 0, "history": 0, "note": 0, "measure": 0}

    def _next(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def rows(self, entry_id: int, s: Spec, now: float
             ) -> dict[str, list[tuple[object, ...]]]:
        EvidenceView, Alert, Evidence, MonthFigures, Origin, Reason = self._types  # noqa: N806
        rng = self.rng
        hid, village = s.household_id, s.household_id[:12]
        first = _month_index(s.created) - 1
        last = first + s.alert_count - 1
        months = [_month_label(m) for m in range(first, last + 1)]
        line_year = last // 12
        line = LINES.get(line_year, 8300)
        factor = {"高": rng.uniform(0.45, 0.8), "中": rng.uniform(0.8, 1.0),
                  "低": rng.uniform(1.0, 1.1)}[s.severity]
        per_capita = Decimal(f"{line * factor:.2f}")
        size = rng.randint(1, 6)
        reasons = [Reason(RULE_OF.get(t, "projected-below-line"), t,  # type: ignore[arg-type]
                          f"{t}：{_month_label(first)} 起家庭收入下降，预计人均纯收入 "
                          f"{per_capita} 元") for t in s.risk_types if t in RULE_OF]
        reasons.append(Reason("projected-below-line", s.risk_types[0],  # type: ignore[arg-type]
                              f"{_month_label(last - 11)} 至 {_month_label(last)} 人均纯收入"
                              f"（扣除刚性支出后）预计 {per_capita} 元，低于 {line_year} 年"
                              f"监测线 {line} 元"))
        rules = ";".join(sorted({r.rule for r in reasons}))
        n_hist = rng.randint(6, 24)
        money = self.money
        history = [MonthFigures(_month_label(m),
                                None if rng.random() < 0.05 else money[int(rng.random() * 300)],
                                self.zero if rng.random() < 0.8 else money[int(rng.random() * 900)],
                                1 if rng.random() < 0.03 else 0, 0)
                   for m in range(last - n_hist + 1, last + 1)]
        evidence = Evidence(
            monitoring_line=Decimal(line), line_year=line_year, household_size=size,
            projected_income_12m=Decimal(f"{float(per_capita) * size:.2f}"),
            rigid_spending_12m=money[int(rng.random() * 900)],
            projected_per_capita=per_capita,
            baseline_income_12m=Decimal(f"{line * size * 1.2:.2f}"),
            months_of_history=n_hist,
            sources=[Origin("rural", f"income/{months[-1]}.csv", rng.randint(2, 90000)),  # type: ignore[arg-type]
                     Origin("medical", f"medical/{months[-1]}.csv", rng.randint(2, 90000))],  # type: ignore[arg-type]
            history=history,
        )
        out: dict[str, list[tuple[object, ...]]] = {t: [] for t in TABLES}
        alert_ids = []
        for i, month in enumerate(months):
            digest = hashlib.sha256(f"{hid}|{month}|{RULE_VERSION}".encode()).hexdigest()
            alert_id = "a" + digest[:31]
            alert_ids.append(alert_id)
            received = min(now, s.created + i * 30 * DAY)
            payload = self._encode(Alert(
                id=alert_id, household_id=hid, region_code=village,
                household_type=s.household_type,  # type: ignore[arg-type]
                month=month, rule_version=RULE_VERSION,
                risk_type=s.risk_types[0],  # type: ignore[arg-type]
                severity=s.severity,  # type: ignore[arg-type]
                reasons=reasons, evidence=evidence)).decode()
            out["watchlist_alerts"].append((self._next("alert"), alert_id, entry_id, hid, month,
                                            _iso(received), payload))
        ev_json = self._ev_encoder.encode(EvidenceView(
            alert_id=alert_ids[-1], month=months[-1], rule_version=RULE_VERSION,
            reasons=reasons, evidence=evidence)).decode()

        hist = out["watchlist_history"]

        def audit(at: float, actor: str, action: str, old: str | None, new: str | None) -> None:
            hist.append((self._next("history"), entry_id, _iso(at), actor, action, old, new))

        risk_types = "、".join(sorted(s.risk_types))
        audit(s.created, "system", "created", None,
              f"{months[0]} {s.severity} {risk_types} ({alert_ids[0]})")
        for i in range(1, len(months)):
            audit(min(now, s.created + i * 30 * DAY), "system", "alert merged", None,
                  f"{months[i]} {s.severity} ({alert_ids[i]})")
        actor = s.assignee or f"v{village}"
        state = "新预警"

        def move(at: float, new: str) -> None:
            nonlocal state
            audit(at, actor, "state changed", state, new)
            state = new

        monitored = dismiss = elimination = None
        if s.ack is not None:
            audit(s.ack, actor, "claimed", None, actor)
            move(s.ack, "已接收")
        if s.visit is not None:
            text_ = (f"入户核实：家庭 {size} 人，{s.risk_types[0]}情况属实，"
                     "收入来源主要为务农和零工。")
            audit(s.visit, actor, "visit recorded", None, text_)
            out["watchlist_notes"].append((self._next("note"), entry_id, _iso(s.visit), actor,
                                           "visit", text_))
            move(s.visit, "核实中")
        if s.decided is not None:
            if s.identified:
                monitored = ("脱贫不稳定户", "边缘易致贫户", "突发严重困难户")[rng.randrange(3)]
                audit(s.decided, actor, "identified", None, monitored)
                move(s.decided, "已纳入监测")
            else:
                dismiss = ("not_at_risk", "data_error", "duplicate")[
                    0 if rng.random() < 0.8 else rng.randrange(1, 3)]
                audit(s.decided, actor, "dismissed", None, dismiss)
                move(s.decided, "核实排除")
        if s.measured is not None:
            for k in range(s.measure_count):
                at = min(now, s.measured + k * 90 * DAY)
                category = MEASURES[rng.randrange(len(MEASURES))]
                out["watchlist_measures"].append((
                    self._next("measure"), entry_id, _iso(at), actor, category,
                    f"{category}：落实帮扶措施第 {k + 1} 项"))
                audit(at, actor, "measure added", None, category)
            move(s.measured, "帮扶中")
        if s.state == "风险消除" and s.closed is not None:
            elimination = "帮扶消除" if s.measure_count else "自然消除"
            audit(s.closed, actor, "eliminated", None, elimination)
            move(s.closed, "风险消除")
        if s.escalated is not None:
            audit(s.escalated, f"c{hid[:6]}", "escalated", None, "超期未核实")
        overdue = state in ("新预警", "已接收", "核实中") and now - s.created > 15 * DAY
        updated = max(t for t in (s.created, s.ack, s.visit, s.decided, s.measured, s.closed)
                      if t is not None)
        out["watchlist_entries"].append((
            entry_id, f"{hid}#{s.episode}", hid, village, s.household_type, s.episode,
            s.risk_types[0], risk_types, rules, s.severity, s.state, months[0], months[-1],
            s.alert_count, ev_json, RULE_VERSION, _iso(s.created), _iso(min(now, updated)),
            s.assignee, _iso(s.ack), _iso(s.decided) if s.identified else None, monitored,
            dismiss, elimination, _iso(s.closed), s.measure_count, _iso(s.snoozed_until),
            "外出务工，春节后返乡再核实" if s.snoozed_until else None, _iso(s.escalated),
            _iso(s.created + 12 * DAY) if overdue else None,
            _iso(s.created + 60) if s.severity == "高" else None,
        ))
        return out


def user_rows(province: Province, password_hash: str, now: float) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    created = _iso(now - 800 * DAY)

    def add(username: str, role: str, region: str, name: str) -> None:
        rows.append((len(rows) + 1, username, name, password_hash, role, region, True, "",
                     None, created))

    add("admin", "admin", "", "管理员")
    add("publisher", "publisher", "", "数据发布员")
    for k in province.county_codes():
        add(f"c{k}", "county_lead", k, _name(k, "县负责人"))
    for t in province.township_codes():
        add(f"t{t}", "township", t, _name(t, "镇干部"))
    for v in province.village_codes():
        add(f"v{v}", "village", v, _name(v, "村干部"))
    return rows


# --- loading -----------------------------------------------------------------------------------


@dataclass
class IndexInfo:
    name: str
    table: str
    definition: str
    bytes: int = 0
    build_s: float = 0.0
    added: bool = False  # added for the workspace (not in ORIGINAL_INDEXES)


@dataclass
class LoadStats:
    entries: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    generate_s: float = 0.0
    copy_s: float = 0.0
    index_s: float = 0.0
    vacuum_s: float = 0.0
    table_bytes: dict[str, int] = field(default_factory=dict)
    indexes: list[IndexInfo] = field(default_factory=list)


def _secondary_ddl(conn: Any, tables: Sequence[str]) -> tuple[list[tuple[str, str, str]],
                                                               list[tuple[str, str, str]]]:
    """(constraints, indexes) of ``tables`` other than primary keys, as (table, name, DDL)."""
    constraints = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE conrelid::regclass::text = ANY(%s) AND contype IN ('u', 'f')"
        " ORDER BY contype DESC, conname", (list(tables),)).fetchall()
    indexes = conn.execute(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u'))"
        " ORDER BY indexname", (list(tables),)).fetchall()
    return constraints, indexes


def fill(url: str, n: int, province: Province, now: float, *, seed: int = 7,
         progress: bool = True) -> LoadStats:
    """Create the watch-list tables (``init_db``) and fill them by COPY."""
    from consumers.watchlist.auth import hash_password
    from consumers.watchlist.models import create_engine_for, init_db

    stats = LoadStats(entries=n)
    engine = create_engine_for(url)
    try:
        init_db(engine)
    finally:
        engine.dispose()

    t = time.perf_counter()
    specs = generate_specs(n, province, now, seed)
    stats.generate_s = time.perf_counter() - t

    tables = list(TABLES)
    with psycopg_connect(url, autocommit=True) as admin:
        constraints, indexes = _secondary_ddl(admin, tables)
        for table, name, _ddl in reversed(constraints):  # foreign keys first
            admin.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for _table, name, _ddl in indexes:
            admin.execute(f'DROP INDEX "{name}"')

    t = time.perf_counter()
    maker = RowMaker(seed + 1)
    counts = dict.fromkeys(tables, 0)
    conns = {tb: psycopg_connect(url) for tb in tables}
    bar = _progress(n, progress)
    try:
        with contextlib.ExitStack() as stack:
            copies = {}
            for tb, cols in TABLES.items():
                cur = stack.enter_context(conns[tb].cursor())
                copies[tb] = stack.enter_context(
                    cur.copy(f"COPY {tb} ({', '.join(cols)}) FROM STDIN"))
            buffers: dict[str, list[str]] = {tb: [] for tb in tables}
            sizes = dict.fromkeys(tables, 0)

            def emit(tb: str, row: Sequence[object]) -> None:
                line = copy_line(row)
                buffers[tb].append(line)
                sizes[tb] += len(line)
                counts[tb] += 1
                if sizes[tb] > 1 << 20:
                    copies[tb].write("".join(buffers[tb]).encode())
                    buffers[tb].clear()
                    sizes[tb] = 0

            for i, spec in enumerate(specs, start=1):
                for tb, rows in maker.rows(i, spec, now).items():
                    for row in rows:
                        emit(tb, row)
                if i % 2000 == 0:
                    bar(2000)
            bar(len(specs) % 2000)
            for row in user_rows(province, hash_password(PASSWORD), now):
                emit("users", row)
            for row in region_rows(province):
                emit("regions", row)
            for tb in tables:
                if buffers[tb]:
                    copies[tb].write("".join(buffers[tb]).encode())
        for c in conns.values():
            c.commit()
    finally:
        bar(None)
        for c in conns.values():
            c.close()
    del specs
    stats.copy_s = time.perf_counter() - t
    stats.rows = counts

    t = time.perf_counter()
    with psycopg_connect(url, autocommit=True) as admin:
        for tb in tables:
            if "id" in TABLES[tb]:
                # Table names from TABLES above, not from outside.
                admin.execute(f"SELECT setval(pg_get_serial_sequence('{tb}', 'id'), "  # noqa: S608
                              f"(SELECT coalesce(max(id), 0) + 1 FROM {tb}), false)")
        for table, name, ddl in indexes:
            t1 = time.perf_counter()
            admin.execute(ddl)
            stats.indexes.append(IndexInfo(name, table, ddl,
                                           build_s=time.perf_counter() - t1))
        for table, name, ddl in constraints:
            admin.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {ddl}')
    stats.index_s = time.perf_counter() - t
    t = time.perf_counter()
    vacuum(url)
    stats.vacuum_s = time.perf_counter() - t
    save_load_stats(url, stats)
    return stats


_META: Final = "fanpin_bench_web_meta"


def save_load_stats(url: str, stats: LoadStats) -> None:
    """Keep how the load went in the benchmark's database, for ``--reuse``."""
    import json
    from dataclasses import asdict

    with psycopg_connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_META} (k text PRIMARY KEY, v text)")
        conn.execute(f"INSERT INTO {_META} VALUES ('load', %s) ON CONFLICT (k) DO UPDATE "  # noqa: S608
                     "SET v = EXCLUDED.v", (json.dumps(asdict(stats)),))


def read_load_stats(url: str) -> LoadStats | None:
    import json

    with psycopg_connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (_META,)).fetchone()[0] is None:
            return None
        row = conn.execute(f"SELECT v FROM {_META} WHERE k = 'load'").fetchone()  # noqa: S608
    if row is None:
        return None
    data = json.loads(row[0])
    data["indexes"] = [IndexInfo(**ix) for ix in data.get("indexes", [])]
    return LoadStats(**data)


def vacuum(url: str) -> None:
    with psycopg_connect(url, autocommit=True) as admin:
        admin.execute("VACUUM (ANALYZE) watchlist_entries")
        admin.execute("ANALYZE")


def _progress(total: int, enabled: bool) -> Callable[[int | None], None]:
    """A tqdm bar on stderr; call with a count to advance, None to close."""
    if not enabled:
        return lambda _n: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="entries", unit="entry", file=sys.stderr, mininterval=1.0,
               unit_scale=True)

    def update(k: int | None) -> None:
        if k is None:
            bar.close()
        else:
            bar.update(k)

    return update


def sync_entry_indexes(url: str) -> list[str]:
    """Make watchlist_entries' indexes what models.Entry declares (for ``--reuse`` after
    the model changed): create the missing ones, drop the others. Returns what changed."""
    from consumers.watchlist.models import Base, Entry, create_engine_for

    engine = create_engine_for(url)
    changed = []
    try:
        declared = {str(ix.name): ix for ix in Base.metadata.tables[Entry.__tablename__].indexes}
        with engine.begin() as conn:
            present = {r[0] for r in conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'watchlist_entries' AND "
                "indexname NOT IN (SELECT conname FROM pg_constraint)")}
            for name in sorted(present - set(declared)):
                conn.exec_driver_sql(f'DROP INDEX "{name}"')
                changed.append(f"dropped {name}")
            for name, ix in declared.items():
                if name not in present:
                    ix.create(conn)
                    changed.append(f"created {name}")
    finally:
        engine.dispose()
    if changed:
        vacuum(url)
    return changed


def index_info(url: str) -> list[IndexInfo]:
    """Every index on watchlist_entries with its size."""
    with psycopg_connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT i.indexname, i.tablename, i.indexdef, "
            "pg_relation_size(quote_ident(i.indexname)::regclass) FROM pg_indexes i "
            "WHERE i.tablename = 'watchlist_entries' ORDER BY i.indexname").fetchall()
    return [IndexInfo(name, table, ddl, size, added=name not in ORIGINAL_INDEXES
                      and not name.endswith(("_pkey", "_key")))
            for name, table, ddl, size in rows]


def table_sizes(url: str) -> dict[str, int]:
    with psycopg_connect(url, autocommit=True) as conn:
        return {t: int(conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0])
                for t in TABLES}


# --- measuring ---------------------------------------------------------------------------------


class SqlRecorder:
    """Times every statement the app's engine runs. Requests are sequential, so the
    statements between ``start()`` and ``take()`` are one request's."""

    def __init__(self, engine: Engine) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, Any, float]] = []
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                context: Any, executemany: bool) -> None:
        conn.info.setdefault("fanpin_t0", []).append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any,
               context: Any, executemany: bool) -> None:
        elapsed = time.perf_counter() - conn.info["fanpin_t0"].pop()
        with self.lock:
            self.calls.append((statement, parameters, elapsed))

    def start(self) -> None:
        with self.lock:
            self.calls = []

    def take(self) -> list[tuple[str, Any, float]]:
        with self.lock:
            out, self.calls = self.calls, []
        return out


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    user: str  # village | township | county | admin
    path: str  # "{id}" is replaced by an entry id of the user's region, cycling
    kind: str  # baseline | page | api | entry
    target: bool  # the 200 ms target applies (a filtered first page)


def scenarios() -> list[Scenario]:
    new_overdue = "state=新预警&overdue=1"
    s = [
        Scenario("healthz", "baseline: /healthz (SELECT 1)", "admin", "/healthz", "baseline",
                 False),
        Scenario("api-me", "baseline: /api/me (session lookup)", "county", "/api/me",
                 "baseline", False),
    ]
    for prefix, kind, path in (("page", "page", "/"), ("api", "api", "/api/entries")):
        sep = "?"
        word = "list page" if kind == "page" else "API"
        s += [
            Scenario(f"{prefix}-village", f"{word}: village officer", "village", path, kind,
                     True),
            Scenario(f"{prefix}-township", f"{word}: township officer", "township", path, kind,
                     True),
            Scenario(f"{prefix}-county", f"{word}: county lead", "county", path, kind, True),
            Scenario(f"{prefix}-county-new-overdue", f"{word}: county, 新预警 + overdue",
                     "county", f"{path}{sep}{new_overdue}", kind, True),
            Scenario(f"{prefix}-county-high", f"{word}: county, severity 高", "county",
                     f"{path}{sep}severity=高", kind, True),
            Scenario(f"{prefix}-county-illness", f"{word}: county, risk 因病", "county",
                     f"{path}{sep}risk_type=因病", kind, True),
            Scenario(f"{prefix}-admin-new-overdue", f"{word}: province, 新预警 + overdue",
                     "admin", f"{path}{sep}{new_overdue}", kind, True),
            # (Administrators may not filter by 因病/因残: health details.)
            Scenario(f"{prefix}-admin-high-jobs", f"{word}: province, 高 + 因务工就业不稳",
                     "admin", f"{path}{sep}severity=高&risk_type=因务工就业不稳", kind, True),
            Scenario(f"{prefix}-admin-unassigned", f"{word}: province, unassigned", "admin",
                     f"{path}{sep}flag=unassigned", kind, True),
            Scenario(f"{prefix}-admin", f"{word}: province, unfiltered", "admin", path, kind,
                     False),
            Scenario(f"{prefix}-admin-deep", f"{word}: province, unfiltered, page 50",
                     "admin", f"{path}{sep}page=50", kind, False),
            Scenario(f"{prefix}-admin-high-deep", f"{word}: province, 高, page 50", "admin",
                     f"{path}{sep}severity=高&page=50", kind, False),
        ]
    s += [
        Scenario("entry-village", "entry page: village officer", "village", "/entries/{id}",
                 "entry", False),
        Scenario("entry-county", "entry page: county lead", "county", "/entries/{id}",
                 "entry", False),
        Scenario("api-entry-county", "API entry: county lead", "county", "/api/entries/{id}",
                 "entry", False),
    ]
    return s


@dataclass
class Result:
    scenario: Scenario
    times_ms: list[float]
    sql_ms: list[float]
    statements: int  # per request (the last one)
    matching: int | None  # entries matching the filters (the API's total)
    bytes: int
    slowest_sql: tuple[str, Any, float] | None = None

    def pct(self, q: float) -> float:
        return percentile(self.times_ms, q)

    def outside_sql(self, q: float = 50) -> float:
        """Time per request spent outside the database (the app, the template, HTTP)."""
        return percentile([t - d for t, d in zip(self.times_ms, self.sql_ms, strict=True)], q)

    @property
    def met(self) -> bool:
        return self.pct(95) < TARGET_MS


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass(frozen=True)
class Users:
    village: str
    township: str
    county: str
    admin: str = "admin"

    def username(self, role: str) -> str:
        return str(getattr(self, role))


def pick_users(url: str) -> Users:
    """A village of typical size (the median village of the busiest county's median
    township would be arbitrary; take the county with the median number of entries, and in
    it the township and village with the median)."""
    with psycopg_connect(url, autocommit=True) as conn:
        def median(prefix: str, digits: int) -> str:
            rows = conn.execute(
                "SELECT left(region_code, %s) AS k, count(*) FROM watchlist_entries "
                "WHERE region_code LIKE %s GROUP BY k ORDER BY 2, 1",
                (digits, prefix + "%")).fetchall()
            return str(rows[len(rows) // 2][0])

        county = median(PROVINCE, 6)
        township = median(county, 9)
        village = median(township, 12)
    return Users(village=f"v{village}", township=f"t{township}", county=f"c{county}")


def entry_ids(url: str, prefix: str, n: int, seed: int = 3) -> list[int]:
    with psycopg_connect(url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM watchlist_entries WHERE region_code LIKE %s ORDER BY id",
            (prefix + "%",)).fetchall()]
    random.Random(seed).shuffle(ids)
    return ids[:n] or [1]


@contextlib.contextmanager
def serve(engine: Engine) -> Iterator[str]:
    """The real app under uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    from consumers.watchlist.views import create_app

    port = free_port()
    config = uvicorn.Config(create_app(engine=engine), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bench-web-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def measure(url: str, *, requests: int, warmup: int, only: Sequence[str] = (),
            log: TextIO = sys.stderr) -> tuple[list[Result], Users]:
    """Every scenario against the app served over ``url``'s database."""
    import httpx

    from consumers.watchlist.models import create_engine_for

    users = pick_users(url)
    prefixes = {"village": users.village[1:], "county": users.county[1:]}
    ids = {role: entry_ids(url, prefix, requests + warmup) for role, prefix in prefixes.items()}
    engine = create_engine_for(url)
    recorder = SqlRecorder(engine)
    results: list[Result] = []
    try:
        with serve(engine) as base:
            clients: dict[str, httpx.Client] = {}
            for role in ("village", "township", "county", "admin"):
                client = httpx.Client(base_url=base, timeout=120)
                r = client.post("/api/login", json={"username": users.username(role),
                                                    "password": PASSWORD})
                r.raise_for_status()
                clients[role] = client
            try:
                for sc in scenarios():
                    if only and sc.key not in only:
                        continue
                    results.append(_run_scenario(sc, clients[sc.user], recorder, ids,
                                                 requests, warmup))
                    res = results[-1]
                    print(f"{sc.key:28s} p50 {res.pct(50):7.1f}  p95 {res.pct(95):7.1f}  "
                          f"p99 {res.pct(99):7.1f}  max {max(res.times_ms):7.1f} ms  "
                          f"sql p50 {percentile(res.sql_ms, 50):6.1f} ms  "
                          f"matching {res.matching}", file=log, flush=True)
                    if res.matching == 0:
                        print(f"warning: {sc.key} selects no entries", file=log, flush=True)
            finally:
                for c in clients.values():
                    c.close()
    finally:
        engine.dispose()
    return results, users


def _run_scenario(sc: Scenario, client: Any, recorder: SqlRecorder,
                  ids: dict[str, list[int]], requests: int, warmup: int) -> Result:
    pool = ids.get(sc.user, ids["county"])
    times: list[float] = []
    sql: list[float] = []
    statements = 0
    size = 0
    slowest: tuple[str, Any, float] | None = None
    for i in range(warmup + requests):
        path = sc.path.replace("{id}", str(pool[i % len(pool)]))
        recorder.start()
        t = time.perf_counter()
        r = client.get(path)
        elapsed = (time.perf_counter() - t) * 1000
        calls = recorder.take()
        if r.status_code != 200:
            raise RuntimeError(f"{sc.key}: GET {path} answered {r.status_code}: "
                               f"{r.text[:300]}")
        if i < warmup:
            continue
        times.append(elapsed)
        sql.append(sum(c[2] for c in calls) * 1000)
        statements = len(calls)
        size = len(r.content)
        top = max(calls, key=lambda c: c[2], default=None)
        if top is not None and (slowest is None or top[2] > slowest[2]):
            slowest = top
    matching = None
    if sc.kind in ("page", "api"):
        api = sc.path.replace("/api/entries", "/", 1) if sc.kind == "api" else sc.path
        api = "/api/entries" + api[1:]
        matching = int(client.get(api).json()["total"])
    return Result(sc, times, sql, statements, matching, size, slowest)


def explain(url: str, statement: str, parameters: Any) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement as the app sent it."""
    from consumers.watchlist.models import create_engine_for

    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                        parameters).all()
            conn.rollback()
    finally:
        engine.dispose()
    return "\n".join(r[0] for r in rows)


def sql_literal(statement: str, parameters: Any) -> str:
    """The statement with its parameters written in, for the report (not for running)."""
    if not isinstance(parameters, dict):
        return statement
    out = statement
    for k in sorted(parameters, key=len, reverse=True):
        v = parameters[k]
        lit = "NULL" if v is None else (str(v) if isinstance(v, int | float) else
                                        "'" + str(v).replace("'", "''") + "'")
        out = out.replace(f"%({k})s", lit)
    return out.replace("%%", "%")


# --- record_alerts throughput -------------------------------------------------------------------


def record_rate(url: str, n: int, batch: int, start_no: int) -> float:
    """Alerts per second through ``service.record_alerts`` into the filled database, for
    ``n`` new households (numbers ``start_no``.. in the first villages)."""
    from sqlalchemy.orm import Session

    from consumers.watchlist.models import create_engine_for
    from consumers.watchlist.service import record_alerts
    from schemas.events import Alert, Evidence, Reason

    with psycopg_connect(url, autocommit=True) as conn:
        villages = [r[0] for r in conn.execute(
            "SELECT code FROM regions WHERE level = '村' ORDER BY code LIMIT 200").fetchall()]
    now = dt.datetime.now(UTC)
    alerts = []
    for i in range(n):
        hid = f"{villages[i % len(villages)]}{start_no + i // len(villages):04d}"
        alerts.append(Alert(
            id=f"bench:{hid}:2026-10", household_id=hid, region_code=hid[:12],
            household_type="脱贫户", month="2026-10", rule_version=RULE_VERSION,
            risk_type="因病", severity="中",
            reasons=[Reason("illness", "因病", "自付医疗费用 12,000 元")],
            evidence=Evidence(Decimal(8300), 2026, 4, Decimal("30000.00"), Decimal("9000.00"),
                              Decimal("5250.00"), Decimal("36000.00"), 12)))
    engine = create_engine_for(url)
    try:
        t = time.perf_counter()
        for k in range(0, n, batch):
            with Session(engine) as session:
                record_alerts(session=session, alerts=alerts[k:k + batch], now=now)
        return n / (time.perf_counter() - t)
    finally:
        engine.dispose()


def record_comparison(url: str, n: int = 3000, batch: int = 500
                      ) -> tuple[float, float] | None:
    """record_alerts throughput with every index, then without the added ones (which are
    rebuilt afterwards). None when no index was added."""
    added = [ix for ix in index_info(url) if ix.added]
    if not added:
        return None
    with_all = record_rate(url, n, batch, 9000)
    with psycopg_connect(url, autocommit=True) as conn:
        for ix in added:
            conn.execute(f'DROP INDEX "{ix.name}"')
    try:
        without = record_rate(url, n, batch, 9500)
    finally:
        with psycopg_connect(url, autocommit=True) as conn:
            for ix in added:
                conn.execute(ix.definition)
    return with_all, without


# --- the report --------------------------------------------------------------------------------


def machine(pg_version: str) -> str:
    import sqlalchemy
    import uvicorn

    from fanpin.bench import hardware

    return (f"{hardware()}, SQLAlchemy {sqlalchemy.__version__}, uvicorn "
            f"{uvicorn.__version__}; {pg_version}")


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def _ms(v: float) -> str:
    return f"{v:,.1f}"


@dataclass
class Report:
    n: int
    requests: int
    warmup: int
    machine: str
    settings: dict[str, str]
    results: list[Result]
    users: Users
    load: LoadStats | None
    indexes: list[IndexInfo]
    tables: dict[str, int]
    plans: list[tuple[str, str, str]]  # (what, SQL, plan)
    record: tuple[float, float] | None
    started: dt.datetime
    chart: str = "benchmarks/web-latency.svg"
    reused: bool = False
    counties: int = 100


def write_report(rep: Report, out: Path) -> None:
    lines: list[str] = []
    add = lines.append
    base = {r.scenario.key: r for r in rep.results if r.scenario.kind == "baseline"}
    healthz = base.get("healthz")
    add("# The workspace on 1,000,000 entries: list page and API latency")
    add("")
    add("Written by `make bench-web` (`python -m fanpin.bench_web`); do not edit by hand.")
    add("")
    add(f"- Machine: {rep.machine}.")
    add(f"- Run: {rep.started:%Y-%m-%d %H:%M} UTC. {rep.n:,} watch-list entries in a "
        "throwaway PostgreSQL started by the benchmark; server settings "
        + ", ".join(f"`{k}={v}`" for k, v in rep.settings.items())
        + " (everything else, JIT included, PostgreSQL's default).")
    add(f"- Each scenario: {rep.warmup} warm-up requests, then {rep.requests} sequential "
        "requests through uvicorn on 127.0.0.1 (real HTTP, one client, one at a time), timed "
        "at the client. *SQL p50* is the time inside the database per request (every "
        "statement, from the driver's side).")
    add(f"- Users: village officer `{rep.users.village}`, township officer "
        f"`{rep.users.township}`, county lead `{rep.users.county}` (the median village, "
        "township and county by number of entries), administrator `admin`.")
    if healthz:
        add(f"- Baseline in the same run: `/healthz` (a `SELECT 1` through the same stack) "
            f"p50 {_ms(healthz.pct(50))} ms, p95 {_ms(healthz.pct(95))} ms. The machine is "
            "noisy: read the figures against it.")
    add("")
    add(f"![p95 latency per scenario]({rep.chart})")
    add("")
    add("## Latency per scenario")
    add("")
    add(f"Target: p95 under {TARGET_MS:.0f} ms for a filtered first page (every first page "
        "below except the administrator's unfiltered one; deep pages and entry pages are "
        "reported without a target). *matching* is the number of entries the filters select "
        "(the region scope included). Administrators may not filter by 因病 or 因残 "
        "(health details), so their risk-type scenario uses 因务工就业不稳; the county lead's "
        "uses 因病.")
    add("")
    add("| scenario | request | matching | p50 ms | p95 ms | p99 ms | max ms | SQL p50 ms "
        "| outside SQL p50 ms | statements | target met |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
    for r in rep.results:
        sc = r.scenario
        met = ("**yes**" if r.met else "**no**") if sc.target else (
            "–" if sc.kind == "baseline" else ("(yes)" if r.met else "(no)"))
        path = sc.path.replace("{id}", "{id}")
        add(f"| {sc.label} | `{path}` | {'' if r.matching is None else f'{r.matching:,}'} | "
            f"{_ms(r.pct(50))} | {_ms(r.pct(95))} | {_ms(r.pct(99))} | "
            f"{_ms(max(r.times_ms))} | {_ms(percentile(r.sql_ms, 50))} | "
            f"{_ms(r.outside_sql(50))} | {r.statements} | {met} |")
    targeted = [r for r in rep.results if r.scenario.target]
    missed = [r for r in targeted if not r.met]
    add("")
    if missed:
        add(f"**Target missed** by {len(missed)} of {len(targeted)} filtered first pages: "
            + ", ".join(r.scenario.label for r in missed) + ".")
    else:
        add(f"**Target met** by all {len(targeted)} filtered first pages.")
    add("")
    add("Entry pages (`{id}`) cycle over random entries of the user's village or county; "
        "each view also writes its audit row (a commit).")
    add("")
    heavy = [r for r in rep.results if r.scenario.kind != "baseline"
             and r.outside_sql(50) > max(percentile(r.sql_ms, 50), 1.0)
             and r.outside_sql(50) > 50]
    if heavy:
        add("Where the time goes outside the database (*outside SQL p50* above 50 ms and "
            "above the SQL time): " + ", ".join(
                f"{r.scenario.label} ({_ms(r.outside_sql(50))} ms vs "
                f"{_ms(percentile(r.sql_ms, 50))} ms in SQL)" for r in heavy)
            + ". Two things in the views account for it, not the list queries: the "
            "administrator's list page renders a region `<select>` "
            "of up to 3,000 regions (`REGION_OPTIONS_MAX`) on every request, and the county "
            "lead's entry page builds its list of officers to assign from every officer "
            "account, filtered in Python (`views._officers_for`), which here is "
            "16,100 accounts.")
        add("")
    add("## What keeps the list queries fast")
    add("")
    add("- **Region scope as a range.** `service._filters` adds `region_code >= prefix AND "
        "region_code < next prefix` next to the `LIKE 'prefix%'` (kept, so the rows are the "
        "same). A LIKE prefix can use a b-tree index only under the C collation and only "
        "when the planner sees the value; the range works under any collation and in the "
        "generic plan of a prepared statement (psycopg prepares a statement after 5 runs).")
    add("- **Covering indexes** (the *added* ones below): every column the filters, the state "
        "counts and the default sort read (`severity`, `state`, `created_at`, `risk_types`, "
        "`assignee`, `region_code`, `first_month`, `id`) is in the index, so the total, the "
        "counts by state and the page's ids are index-only scans of a narrow index instead "
        "of reads of the wide rows (each holds its evidence JSON, ~1.4 KB per row here). One "
        "is keyed by region (officers), one by state and one by severity (province-wide "
        "filters, in `first_month` order), and a small partial one holds the unassigned "
        "entries.")
    add("- **The page's ids first.** `service.list_entries` picks the page's ids with the "
        "filters, sort, `LIMIT` and `OFFSET` (index-only), then reads just those rows; a "
        "page past the end is answered from the count without a second query. Every sort "
        "ends in a unique key, so the rows and their order are the same as before.")
    add("- Counts stay exact (no cap, no estimate): the filtered totals are index-only and "
        "fast; only an unfiltered province-wide count still reads one index entry per entry.")
    add("")
    add("## Data")
    add("")
    if rep.load:
        ld = rep.load
        add("| table | rows | size (with indexes and TOAST) |")
        add("|---|---:|---:|")
        for t, n in ld.rows.items():
            add(f"| {t} | {n:,} | {_mb(rep.tables.get(t, 0))} |")
        add("")
        add(f"Load: entries generated in {ld.generate_s:.0f} s; rows made and sent by COPY in "
            f"{ld.copy_s:.0f} s; indexes and constraints rebuilt in {ld.index_s:.0f} s; "
            f"`VACUUM (ANALYZE)` {ld.vacuum_s:.0f} s.")
    if rep.load is None or rep.reused:
        add("Measured an already filled database again (`--reuse`).")
    add("")
    add(f"One province (99, 示范省): {rep.counties} counties (10 per city) × 10 townships × "
        "15 villages, "
        "village sizes log-normal. Entries arrive uniformly over two years (ids in arrival "
        "order). Each follows the workflow's timeline — taken after ~1.5 days, visited after "
        "~3 more, identified (45%) or dismissed after ~5 more, measures, risk eliminated 6–18 "
        "months after identification — with a few per cent of the steps left waiting weeks "
        "or months and 0.6% never taken, so some entries are overdue; 25% of closed "
        "households come back as a later episode. Severities 高/中/低 15/45/40%; main risk "
        "types from 因病 27% and 因务工就业不稳 22% down to 因安全饮水 2%, a quarter with a "
        "second or third. Evidence holds 6–24 months of history (as the detector writes it); "
        "every alert is stored with its payload; the audit trail, visit notes and measures "
        "follow the timeline. Accounts: one per village, township and county "
        f"({rep.load.rows.get('users', 0) if rep.load else 16102:,} in all), which is what "
        "the entry page's list of officers to assign reads.")
    add("")
    add("## Indexes on watchlist_entries")
    add("")
    add("| index | size | build s | added for the workspace | definition |")
    add("|---|---:|---:|:-:|---|")
    built = {ix.name: ix.build_s for ix in (rep.load.indexes if rep.load else [])}
    for ix in rep.indexes:
        b = built.get(ix.name)
        add(f"| {ix.name} | {_mb(ix.bytes)} | {'' if b is None else f'{b:.1f}'} | "
            f"{'yes' if ix.added else ''} | `{ix.definition.split(' USING ', 1)[-1]}` |")
    add("")
    if rep.record:
        with_all, without = rep.record
        add(f"Write cost: `record_alerts` (new households, batches of 500, into the filled "
            f"table) {with_all:,.0f} alerts/s with every index, {without:,.0f} alerts/s "
            f"without the added ones ({(with_all / without - 1) * 100:+.0f}%; single short "
            "runs, so within the machine's noise unless large).")
        add("")
    if rep.plans:
        add("## The slowest statements")
        add("")
    for what, sql, plan in rep.plans:
        add(f"The slowest statement of {what}, run again under "
            "`EXPLAIN (ANALYZE, BUFFERS)` with the parameters the app sent:")
        add("")
        add("```sql")
        add(sql)
        add("```")
        add("")
        add("```")
        add(plan)
        add("```")
        add("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_chart(results: Sequence[Result], path: Path) -> None:
    from fanpin.svgplot import bar_chart

    svg = bar_chart(
        f"p95 latency per scenario (target {TARGET_MS:.0f} ms for filtered first pages)",
        [r.scenario.label for r in results], [round(r.pct(95), 1) for r in results],
        errors=[(r.pct(50), r.pct(99)) for r in results], unit="ms")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg + "\n", encoding="utf-8")


# --- main --------------------------------------------------------------------------------------


@dataclass
class Options:
    entries: int = 1_000_000
    requests: int = 200
    warmup: int = 10
    out: Path | None = None
    chart: Path | None = None
    url: str | None = None
    reuse: bool = False
    keep: bool = False
    counties: int = 100
    progress: bool = True
    record: bool = True
    record_alerts: int = 3000
    only: tuple[str, ...] = ()


def run(opts: Options, log: TextIO = sys.stderr) -> Report:
    """The whole benchmark; returns the report (written to ``opts.out`` when set)."""
    started = dt.datetime.now(UTC)
    server: PgServer | None = None
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(143)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    try:
        url = opts.url
        pg_version = "PostgreSQL (external)"
        settings: dict[str, str] = {}
        if url is None:
            bin_dir = pg_bin_dir()
            if bin_dir is None:
                raise SystemExit("PostgreSQL not found under /usr/lib/postgresql/*/bin "
                                 "(apt-get install postgresql)")
            server = PgServer(bin_dir)
            url = server.start()
            pg_version = server.version()
            settings = server.settings
            print(f"PostgreSQL at {url} (data in {server.root})", file=log, flush=True)
        else:
            with psycopg_connect(url, autocommit=True) as conn:
                pg_version = str(conn.execute("SELECT version()").fetchone()[0]).split(",")[0]
                settings = {k: str(conn.execute(f"SHOW {k}").fetchone()[0])
                            for k in SERVER_SETTINGS}
        load: LoadStats | None = None
        now = time.time()
        if opts.reuse:
            from consumers.watchlist.models import create_engine_for, init_db

            engine = create_engine_for(url)
            try:
                init_db(engine)  # columns a newer model added
            finally:
                engine.dispose()
            changed = sync_entry_indexes(url)
            if changed:
                print("indexes: " + ", ".join(changed), file=log, flush=True)
            load = read_load_stats(url)
        else:
            province = Province(counties=opts.counties)
            load = fill(url, opts.entries, province, now, progress=opts.progress)
            print(f"loaded {load.rows} in {load.generate_s + load.copy_s:.0f} s, indexes "
                  f"{load.index_s:.0f} s, vacuum {load.vacuum_s:.0f} s", file=log, flush=True)
        with psycopg_connect(url, autocommit=True) as conn:
            n = int(conn.execute("SELECT count(*) FROM watchlist_entries").fetchone()[0])
        results, users = measure(url, requests=opts.requests, warmup=opts.warmup,
                                 only=opts.only, log=log)
        plans: list[tuple[str, str, str]] = []
        listing = [r for r in results if r.scenario.kind in ("page", "api") and r.slowest_sql]
        targeted = [r for r in listing if r.scenario.target]
        for what, pool in (("the slowest list/API scenario", listing),
                           ("the slowest filtered first page", targeted)):
            if not pool:
                continue
            worst = max(pool, key=lambda r: r.pct(95))
            assert worst.slowest_sql is not None
            stmt, params, _t = worst.slowest_sql
            sql = sql_literal(stmt, params)
            if any(p[1] == sql for p in plans):
                continue
            plans.append((f"{what} ({worst.scenario.label})", sql,
                          explain(url, stmt, params)))
        indexes = index_info(url)
        tables = table_sizes(url)
        record = record_comparison(url, opts.record_alerts) if opts.record else None
        report = Report(n=n, requests=opts.requests, warmup=opts.warmup,
                        machine=machine(pg_version), settings=settings, results=results,
                        users=users, load=load, indexes=indexes, tables=tables, plans=plans,
                        record=record, started=started, reused=opts.reuse,
                        counties=opts.counties)
        if opts.out is not None:
            chart = opts.chart or opts.out.parent / "benchmarks" / "web-latency.svg"
            write_chart(results, chart)
            report.chart = os.path.relpath(chart, opts.out.parent)
            write_report(report, opts.out)
            print(f"wrote {opts.out} and {chart}", file=log, flush=True)
        return report
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        if server is not None:
            if opts.keep:
                print(f"kept PostgreSQL running: pid {server.pid}, port {server.port}, "
                      f"data {server.data}; stop it with kill -INT {server.pid}", file=log)
            else:
                server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fanpin.bench_web",
        description="Fill a throwaway PostgreSQL with N watch-list entries and report the "
        "p50/p95/p99 latency of the duty officers' list page, API and entry page, per "
        "scenario, next to a /healthz baseline measured in the same run.")
    parser.add_argument("--entries", type=int, default=1_000_000,
                        help="watch-list entries to load (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=200,
                        help="timed requests per scenario (default 200)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed requests before each scenario (default 10)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the report here (e.g. docs/benchmarks-web.md); the chart "
                        "goes to benchmarks/web-latency.svg beside it")
    parser.add_argument("--url", default=None,
                        help="use this (disposable!) PostgreSQL database instead of starting "
                        "one: postgresql://user@host:port/db")
    parser.add_argument("--reuse", action="store_true",
                        help="with --url: measure the data already there, do not load")
    parser.add_argument("--keep", action="store_true",
                        help="leave the started PostgreSQL running at the end")
    parser.add_argument("--counties", type=int, default=100,
                        help="counties in the province (default 100)")
    parser.add_argument("--only", default="",
                        help="comma-separated scenario keys to run (default all)")
    parser.add_argument("--record-alerts", type=int, default=3000,
                        help="alerts per record_alerts write-cost run (default 3000)")
    parser.add_argument("--no-record", action="store_true",
                        help="skip the record_alerts write-cost comparison")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.reuse and not args.url:
        parser.error("--reuse needs --url")
    opts = Options(entries=args.entries, requests=args.requests, warmup=args.warmup,
                   out=args.out, url=args.url, reuse=args.reuse, keep=args.keep,
                   counties=args.counties, progress=not args.no_progress,
                   record=not args.no_record, record_alerts=args.record_alerts,
                   only=tuple(k for k in args.only.split(",") if k))
    run(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())

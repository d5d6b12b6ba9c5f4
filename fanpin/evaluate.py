"""Judging a watch list against a scenario's truth.csv (the feeds README's test).

A household counts as flagged when it has any entry. Delay is measured from the shock
month (冲击月份) when the scenario gave the household a shock, else from the first month
it was at risk (首次风险月份): a warning cannot precede the event that causes it.

The watch list can come from an export (``fanpin watchlist export``, ``replay --export``)
or be made here, offline, by the very rules the worker runs (``run_rules``) or by one of the
anchor methods officers have today (:mod:`fanpin.anchors`).
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path


def _month(s: str) -> int:
    return int(s[:4]) * 12 + int(s[5:7]) - 1


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@dataclass
class Evaluation:
    at_risk: int = 0
    flagged: int = 0
    true_positives: int = 0
    recall: float = 0.0
    precision: float = 0.0
    median_delay_months: float | None = None
    risk_type_accuracy: float | None = None
    entries_per_at_risk_household: float = 0.0
    by_cause: dict[str, tuple[int, int]] = field(default_factory=dict)  # cause -> (found, all)
    delay_by_cause: dict[str, float | None] = field(default_factory=dict)
    median_delay_after_shock: float | None = None  # households the scenario gave a shock
    false_positives_by_shock: dict[str, int] = field(default_factory=dict)
    entries: int = 0
    # At-risk households split by whether the files themselves show it: a 12-month window
    # inside the data already below the line, or only windows running past the last file
    # (their risk depends on months nobody has sent yet).
    at_risk_in_data: int | None = None
    recall_in_data: float | None = None
    at_risk_after_data: int | None = None
    recall_after_data: float | None = None

    def report(self) -> str:
        lines = [
            f"真实风险户 at-risk households: {self.at_risk}",
            f"预警户 flagged households:     {self.flagged}",
            f"召回率 recall:    {self.recall:.3f}",
            f"精确率 precision: {self.precision:.3f}",
            f"中位延迟 median delay (months): {self.median_delay_months}",
            f"冲击后中位延迟 median delay after a shock (months): "
            f"{self.median_delay_after_shock}",
            "风险类型准确率 risk-type accuracy: "
            + ("-" if self.risk_type_accuracy is None else f"{self.risk_type_accuracy:.3f}"),
            f"每个风险户的条目数 entries per at-risk household: "
            f"{self.entries_per_at_risk_household:.2f}",
        ]
        if self.at_risk_in_data is not None:
            lines += [
                f"  数据内可见的风险户 at risk within the data: {self.at_risk_in_data}, "
                f"recall {_rate(self.recall_in_data)}",
                f"  仅在最后一个月之后显现 at risk only after the last file: "
                f"{self.at_risk_after_data}, recall {_rate(self.recall_after_data)}",
            ]
        lines += [
            "按原因 by cause (found/all, median delay):",
        ]
        lines += [f"  {cause}: {found}/{total}, {_fmt(self.delay_by_cause.get(cause))}"
                  for cause, (found, total) in sorted(self.by_cause.items())]
        lines.append("误报按冲击类型 false leads by shock:")
        lines += [f"  {shock}: {n}" for shock, n in sorted(self.false_positives_by_shock.items())]
        return "\n".join(lines)


def evaluate(scenario: Path, export: Path, events: list[object] | None = None) -> Evaluation:
    """Score a watch-list export (one row per entry) against ``scenario/truth.csv``."""
    entries: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for e in _rows(export):
        entries[e["户编号"]].append((e["预警月份"], e["风险类型"]))
    return score(scenario, entries, events)


def score(scenario: Path, entries: dict[str, list[tuple[str, str]]],
          events: list[object] | None = None) -> Evaluation:
    """Score ``{household: [(first alert month YYYY-MM, risk type), ...]}``, one item per
    watch-list entry, against ``scenario/truth.csv``. With the scenario's ``events``,
    recall is also split into risk visible within the data and risk after it."""
    truth = {r["户编号"]: r for r in _rows(scenario / "truth.csv")}
    entries = {h: e for h, e in entries.items() if e}
    at_risk = {h for h, r in truth.items() if r["风险"] == "1"}
    flagged = set(entries)
    tp = flagged & at_risk
    ev = Evaluation(at_risk=len(at_risk), flagged=len(flagged), true_positives=len(tp),
                    entries=sum(len(e) for e in entries.values()))
    ev.recall = len(tp) / len(at_risk) if at_risk else 1.0
    ev.precision = len(tp) / len(flagged) if flagged else 1.0
    delays: dict[str, int] = {}
    right_type = 0
    for h in tp:
        month, risk_type = min(entries[h])
        start = truth[h].get("冲击月份") or truth[h]["首次风险月份"]
        delays[h] = _month(month) - _month(start)
        if truth[h]["风险原因"] and truth[h]["风险原因"] in risk_type.split("、")[0]:
            right_type += 1
    ev.median_delay_months = statistics.median(delays.values()) if delays else None
    shocked = [d for h, d in delays.items() if truth[h].get("冲击月份")]
    ev.median_delay_after_shock = statistics.median(shocked) if shocked else None
    ev.risk_type_accuracy = right_type / len(tp) if tp else None
    ev.entries_per_at_risk_household = (
        sum(len(entries[h]) for h in tp) / len(tp) if tp else 0.0)
    causes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    cause_delays: dict[str, list[int]] = defaultdict(list)
    for h in at_risk:
        cause = truth[h]["风险原因"] or "?"
        causes[cause][1] += 1
        causes[cause][0] += h in flagged
        if h in delays:
            cause_delays[cause].append(delays[h])
    ev.by_cause = {c: (v[0], v[1]) for c, v in causes.items()}
    ev.delay_by_cause = {c: statistics.median(cause_delays[c]) if cause_delays[c] else None
                         for c in causes}
    ev.false_positives_by_shock = dict(Counter(
        truth[h].get("冲击类型") or "无" for h in flagged - at_risk if h in truth))
    if events is not None:
        seen = visible_risk(events)
        inside, after = at_risk & seen, at_risk - seen
        ev.at_risk_in_data, ev.at_risk_after_data = len(inside), len(after)
        ev.recall_in_data = len(inside & flagged) / len(inside) if inside else None
        ev.recall_after_data = len(after & flagged) / len(after) if after else None
    return ev


def visible_risk(events: list[object]) -> set[str]:
    """Households the files themselves show at risk: some 12-month window that lies inside
    the reported months has income minus out-of-pocket cost (each settlement once,
    reversals netted) per head below that window's line."""
    from decimal import Decimal

    from fanpin.anchors import scenario_of

    sc = scenario_of(events)
    months = sorted({m for inc in sc.income.values() for m in inc})
    if not months:
        return set()
    first, last = months[0], months[-1]
    out = set()
    for hh, inc in sc.income.items():
        n = sc.roster_size.get(hh) or 1
        oop = sc.oop[hh]
        for start in range(first, last - 10):
            line = sc.lines.get(start // 12)
            if line is None:
                continue
            total = sum((inc.get(m, Decimal(0)) - oop.get(m, Decimal(0))
                         for m in range(start, start + 12)), Decimal(0))
            if total / n < line:
                out.add(hh)
                break
    return out


def scenario_events(scenario: Path) -> list[object]:
    """The events of a scenario folder, as the producers make them (rejects left out).
    Pseudonyms use a throwaway key: nothing leaves this process."""
    import secrets

    from fanpin.privacy import Pseudonymiser
    from producers.common import Reject
    from producers.scenario import parse_scenario

    key = Pseudonymiser(secrets.token_bytes(32))
    return [e for e in parse_scenario(scenario, key) if not isinstance(e, Reject)]


def run_rules(scenario: Path, events: list[object] | None = None,
              rules_file: Path | None = None) -> Evaluation:
    """The worker's rules over the scenario in memory, their alerts recorded in a scratch
    SQLite watch list by the sink's own code (so merging into open entries is the real
    one), then scored."""
    import tempfile

    from sqlalchemy.orm import Session

    from consumers.watchlist.export import export_csv
    from consumers.watchlist.models import create_engine_for, init_db
    from consumers.watchlist.service import record_alerts
    from streams.offline import OfflinePipeline
    from streams.rules.config import RuleConfig

    config = RuleConfig.load(rules_file)
    if events is None:
        events = scenario_events(scenario)
    pipeline = OfflinePipeline(config=config).feed(events)
    with tempfile.TemporaryDirectory(prefix="fanpin-eval-") as tmp:
        engine = create_engine_for(f"sqlite:///{Path(tmp) / 'watchlist.db'}")
        try:
            init_db(engine)
            with Session(engine) as session:
                record_alerts(session=session, alerts=pipeline.alerts)
                export_csv(session=session, out=Path(tmp) / "export.csv", health=True)
        finally:
            engine.dispose()
        return evaluate(scenario, Path(tmp) / "export.csv", events)


def run_anchor(scenario: Path, method: str, events: list[object] | None = None) -> Evaluation:
    """One of the anchor methods (:data:`fanpin.anchors.METHODS`), scored."""
    from fanpin.anchors import flags

    if events is None:
        events = scenario_events(scenario)
    found = flags(method, events)
    return score(scenario, {h: [(m, "")] for h, m in found.items()}, events)


def comparison(results: dict[str, Evaluation]) -> str:
    """A side-by-side table of several methods on one scenario."""
    head = f"{'method':<12} {'recall':>7} {'precision':>9} {'delay':>6} {'shock delay':>11} " \
           f"{'flagged':>8} {'entries/hh':>10}"
    rows = [head]
    for name, ev in results.items():
        rows.append(f"{name:<12} {ev.recall:>7.3f} {ev.precision:>9.3f} "
                    f"{_fmt(ev.median_delay_months):>6} {_fmt(ev.median_delay_after_shock):>11} "
                    f"{ev.flagged:>8} {ev.entries_per_at_risk_household:>10.2f}")
    return "\n".join(rows)


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"

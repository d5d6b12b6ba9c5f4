"""Judging a watch-list export against a scenario's truth.csv (the feeds README's test).

A household counts as flagged when it has any entry. Delay is measured from the shock
month (冲击月份) when the scenario gave the household a shock, else from the first month
it was at risk (首次风险月份): a warning cannot precede the event that causes it.
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
    false_positives_by_shock: dict[str, int] = field(default_factory=dict)

    def report(self) -> str:
        lines = [
            f"真实风险户 at-risk households: {self.at_risk}",
            f"预警户 flagged households:     {self.flagged}",
            f"召回率 recall:    {self.recall:.3f}",
            f"精确率 precision: {self.precision:.3f}",
            f"中位延迟 median delay (months): {self.median_delay_months}",
            "风险类型准确率 risk-type accuracy: "
            + ("-" if self.risk_type_accuracy is None else f"{self.risk_type_accuracy:.3f}"),
            f"每个风险户的条目数 entries per at-risk household: "
            f"{self.entries_per_at_risk_household:.2f}",
            "按原因 by cause (found/all):",
        ]
        lines += [f"  {cause}: {found}/{total}" for cause, (found, total)
                  in sorted(self.by_cause.items())]
        lines.append("误报按冲击类型 false leads by shock:")
        lines += [f"  {shock}: {n}" for shock, n in sorted(self.false_positives_by_shock.items())]
        return "\n".join(lines)


def evaluate(scenario: Path, export: Path) -> Evaluation:
    truth = {r["户编号"]: r for r in _rows(scenario / "truth.csv")}
    entries: dict[str, list[dict[str, str]]] = defaultdict(list)
    for e in _rows(export):
        entries[e["户编号"]].append(e)
    at_risk = {h for h, r in truth.items() if r["风险"] == "1"}
    flagged = set(entries)
    tp = flagged & at_risk
    ev = Evaluation(at_risk=len(at_risk), flagged=len(flagged), true_positives=len(tp))
    ev.recall = len(tp) / len(at_risk) if at_risk else 1.0
    ev.precision = len(tp) / len(flagged) if flagged else 1.0
    delays, right_type = [], 0
    for h in tp:
        first = min(entries[h], key=lambda e: e["预警月份"])
        start = truth[h].get("冲击月份") or truth[h]["首次风险月份"]
        delays.append(_month(first["预警月份"]) - _month(start))
        if truth[h]["风险原因"] and truth[h]["风险原因"] in first["风险类型"].split("、")[0]:
            right_type += 1
    ev.median_delay_months = statistics.median(delays) if delays else None
    ev.risk_type_accuracy = right_type / len(tp) if tp else None
    ev.entries_per_at_risk_household = (
        sum(len(entries[h]) for h in tp) / len(tp) if tp else 0.0)
    causes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for h in at_risk:
        cause = truth[h]["风险原因"] or "?"
        causes[cause][1] += 1
        causes[cause][0] += h in flagged
    ev.by_cause = {c: (v[0], v[1]) for c, v in causes.items()}
    ev.false_positives_by_shock = dict(Counter(
        truth[h].get("冲击类型") or "无" for h in flagged - at_risk if h in truth))
    return ev

"""The two methods Fanpin is measured against, run on the same scenario.

* ``naive``: the triggers local departments publish today. A household is flagged in the
  first month any of these fires: a month's income 30% under the median of the three months
  before it; an inpatient stay with more than 10,000 yuan out of pocket; any ended
  contract; a year's income (the trailing 12 months, once there are 12) under the line.
* ``projection``: a plain projection. From the third month on, the year ahead is taken as
  half the trailing 12 months (scaled up while there are fewer) and half twelve times the
  mean of the latest three months; out-of-pocket spending of the trailing 12 months is
  deducted; per head against the line.

Both read the parsed events directly (no Kafka, no state store), so they can be scored on
any scenario next to the real rules. They are deliberately simple: they are what officers
have today, not detectors to tune.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from schemas.events import (
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    RosterMember,
)
from streams.rules.months import month_index, month_of

METHODS = ("naive", "projection")


class _Scenario:
    def __init__(self, events: Iterable[object]) -> None:
        self.lines: dict[int, Decimal] = {}
        self.household_of: dict[str, str] = {}
        self.size: dict[str, int] = {}  # the latest income report's, else the roster's
        self.roster_size: dict[str, int] = {}
        self.income: dict[str, dict[int, Decimal]] = defaultdict(dict)
        self.oop: dict[str, dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        self.stays: dict[str, dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        self.ended: dict[str, set[int]] = defaultdict(set)
        settlements: dict[str, MedicalSettlement] = {}
        reversed_ids: set[str] = set()
        employment: list[EmploymentEvent] = []
        for ev in events:
            if isinstance(ev, MonitoringLine):
                self.lines[ev.year] = ev.line
            elif isinstance(ev, RosterMember):
                self.household_of[ev.person] = ev.household_id
                self.size.setdefault(ev.household_id, ev.household_size)
                self.roster_size.setdefault(ev.household_id, ev.household_size)
            elif isinstance(ev, IncomeReport):
                self.income[ev.household_id][month_index(ev.month)] = ev.total
                self.size[ev.household_id] = ev.household_size
            elif isinstance(ev, MedicalSettlement):
                if ev.reversal:
                    if ev.reverses:
                        reversed_ids.add(ev.reverses)
                else:
                    settlements.setdefault(ev.settlement_id, ev)
            elif isinstance(ev, EmploymentEvent):
                employment.append(ev)
        for sid, s in settlements.items():
            hh = self.household_of.get(s.person)
            if hh is None or sid in reversed_ids:
                continue
            m = month_of(s.settled)
            self.oop[hh][m] += s.out_of_pocket
            if s.visit_type == "住院":
                self.stays[hh][m] = max(self.stays[hh][m], s.out_of_pocket)
        for e in employment:
            hh = self.household_of.get(e.person)
            if hh is not None and e.business_type == "解除劳动合同":
                self.ended[hh].add(month_of(e.date))

    def line(self, month: int) -> Decimal | None:
        known = [y for y in self.lines if y <= month // 12]
        return self.lines[max(known)] if known else None


def _naive(sc: _Scenario, hh: str) -> int | None:
    inc = sc.income[hh]
    size = sc.size.get(hh) or 1
    for m in sorted(inc):
        before = [inc[k] for k in range(m - 3, m) if k in inc]
        if len(before) == 3 and inc[m] < Decimal("0.7") * statistics.median(before):
            return m
        if sc.stays[hh].get(m, Decimal(0)) > 10000:
            return m
        if m in sc.ended[hh]:
            return m
        year = [inc[k] for k in range(m - 11, m + 1) if k in inc]
        line = sc.line(m)
        if len(year) == 12 and line is not None and sum(year) / size < line:
            return m
    return None


def _projection(sc: _Scenario, hh: str) -> int | None:
    inc = sc.income[hh]
    size = sc.size.get(hh) or 1
    for m in sorted(inc):
        trailing = [inc[k] for k in range(m - 11, m + 1) if k in inc]
        latest = [inc[k] for k in range(m - 2, m + 1) if k in inc]
        if len(trailing) < 3 or len(latest) < 3:
            continue
        year = sum(trailing, Decimal(0)) * 12 / len(trailing)
        projected = year / 2 + 12 * (sum(latest, Decimal(0)) / 3) / 2
        oop = sum(sc.oop[hh].get(k, Decimal(0)) for k in range(m - 11, m + 1))
        line = sc.line(m)
        if line is not None and (projected - oop) / size < line:
            return m
    return None


def scenario_of(events: Iterable[object]) -> _Scenario:
    """Per-household monthly income, out-of-pocket cost (each settlement once, reversals
    netted, by settlement month), stays, contract endings and the lines of a scenario."""
    return _Scenario(events)


def flags(method: str, events: Iterable[object]) -> dict[str, str]:
    """``{household: first month flagged (YYYY-MM)}`` for one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    sc = scenario_of(events)
    judge = _naive if method == "naive" else _projection
    out: dict[str, str] = {}
    for hh in sorted(sc.income):
        m = judge(sc, hh)
        if m is not None:
            out[hh] = f"{m // 12:04d}-{m % 12 + 1:02d}"
    return out

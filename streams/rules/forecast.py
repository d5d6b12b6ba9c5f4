"""The policy's test, applied forward: will a household's next 12 months fall below the line?

Pure functions of a :class:`HouseholdState`; no Faust, Kafka or SQL.

The monitoring policy counts a household at risk in month M when its per-capita net income
over the 12 months starting at M, minus rigid spending (out-of-pocket medical cost after all
three insurance layers), is below the line of M's year. At the end of month ``t`` the rules
know months up to ``t`` and forecast the rest, for every window that is still open
(M = t-11 .. t): the months already reported count as they are, the months ahead are
forecast. The worst window decides.

The forecast of a month ahead has three parts:

* **The household's normal income**, component by component (wages, farm and business
  income, property income, transfers). The same month last year carries the season: the
  harvest, the Spring Festival month without wages, a December bonus. With less than a year
  of history, a robust level from the months seen stands in, with the farm season
  (``business_season``) applied to business income.
* **Shocks in progress.** When the latest months of wages (or of business income) sit well
  below what is normal for them, the household is in a wage loss (or a failed farm or
  business project). The loss is assumed to last ``job_loss_months`` (or
  ``business_failure_months``) from its first month, at the depth seen lately, and then to
  recover. A job change (a new registration after an ended contract) is not a loss.
* **Rigid spending.** The chronic out-of-pocket level of ordinary months continues. A
  serious illness episode (months with out-of-pocket cost over ``episode_min_yuan``) is
  expected to go on for a month or two more: the bigger the first bill, the likelier
  (``episode_second_month_yuan`` / ``episode_second_month_chance``).

Money is in fen. Floats are used inside the forecast (they are deterministic) and the
result is rounded to fen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from streams.rules.config import Thresholds
from streams.rules.months import calendar_month, first_day
from streams.rules.state import ENDED, REGISTERED, UNEMPLOYED, HouseholdState

WAGES, BUSINESS, PROPERTY, TRANSFERS = 0, 1, 2, 3
COMPONENTS = (WAGES, BUSINESS, PROPERTY, TRANSFERS)


@dataclass(frozen=True)
class Shock:
    """A loss in progress in one income component."""

    component: int
    start: int  # first month of the loss
    depth: float  # income as a share of normal, lately
    lasts_until: int  # first month expected to be back to normal
    normal_monthly: int  # fen: what the component would bring in a normal month lately


@dataclass(frozen=True)
class Episode:
    """A serious illness: months of large out-of-pocket cost."""

    start: int
    months: int
    spent: int  # fen so far in the episode
    expected_more: int  # fen still expected
    ongoing: bool


@dataclass(frozen=True)
class Forecast:
    month: int  # the month judged (t)
    window_start: int  # M of the worst window
    income: int  # fen over the worst window: reported months as reported, the rest forecast
    rigid: int  # fen of out-of-pocket cost over that window, reported plus expected
    normal_income: int  # fen over the same window had no shock happened
    normal_rigid: int  # fen of chronic out-of-pocket cost over that window
    months_of_history: int
    shocks: tuple[Shock, ...]
    episode: Episode | None
    ratio: float  # worst window's (income - rigid) per head / line; < 1 is below the line
    normal_ratio: float  # the same without shocks: below 1 means poor all along
    line: int  # the line of the worst window's year, yuan


def oop_by_month(state: HouseholdState) -> tuple[dict[int, int], dict[int, int]]:
    """Out-of-pocket cost (fen) by settlement month, each settlement once, reversed ones
    netted out: all settlements, and outpatient ones only."""
    reversed_ids = {s.reverses for s in state.settlements.values() if s.reverses}
    out: dict[int, int] = {}
    outpatient: dict[int, int] = {}
    for sid, s in state.settlements.items():
        if sid in reversed_ids or s.out_of_pocket <= 0:
            continue
        out[s.month] = out.get(s.month, 0) + s.out_of_pocket
        if not s.inpatient:
            outpatient[s.month] = outpatient.get(s.month, 0) + s.out_of_pocket
    return out, outpatient


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    if n == 0:
        return 0.0
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


class _Household:
    """One household's months seen, with the normal level of each income component."""

    def __init__(self, state: HouseholdState, t: int, th: Thresholds) -> None:
        self.t = t
        self.th = th
        self.inc = {m: parts for m, parts in state.income.items() if t - 23 <= m <= t}
        self.season = [float(x) for x in th.business_season]
        self.excluded: dict[int, set[int]] = {c: set() for c in COMPONENTS}
        self._levels: dict[int, float] = {}

    def seasonal(self, c: int, m: int) -> float:
        return self.season[calendar_month(m) - 1] if c == BUSINESS else 1.0

    def level(self, c: int) -> float:
        """A robust normal monthly level of component ``c``, deseasonalised, from the
        months seen outside the current loss (the Spring Festival month left out for
        wages). Months of an earlier loss are left out too: anything under the loss
        ratio of the upper quartile."""
        hit = self._levels.get(c)
        if hit is not None:
            return hit
        months = [m for m in self.inc if m not in self.excluded[c]]
        if c == WAGES:
            odd = (self.th.spring_festival_month, self.th.bonus_month)
            months = [m for m in months if calendar_month(m) not in odd] or months
        values = sorted(self.inc[m][c] / max(self.seasonal(c, m), 0.05) for m in months)
        level = 0.0
        if len(values) < 4:
            level = (_median(values) if c == WAGES else sum(values) / len(values)) if values \
                else 0.0
        else:
            upper = values[(3 * len(values)) // 4]
            ratio = float(self.th.wage_loss_ratio if c == WAGES else self.th.business_loss_ratio)
            normal = [v for v in values if v >= ratio * upper] or values
            level = _median(normal) if c == WAGES else sum(normal) / len(normal)
        self._levels[c] = level
        return level

    def normal(self, c: int, m: int) -> float:
        """What component ``c`` would bring in month ``m`` in a normal year."""
        ref = m - 12
        while ref > self.t:
            ref -= 12
        parts = self.inc.get(ref)
        if parts is not None and ref not in self.excluded[c]:
            return float(parts[c])
        return self.level(c) * self.seasonal(c, m)

    def reset(self) -> None:
        self._levels.clear()


def _loss(h: _Household, c: int, ratio: float, floor: float, lasts: int,
          ambiguous: Callable[[int], bool], confirmed: Callable[[int], bool]) -> Shock | None:
    """The run of latest months where component ``c`` sits below ``ratio`` of normal."""
    run: list[int] = []
    shares: list[float] = []
    t = h.t
    for j in range(t, t - 12, -1):
        parts = h.inc.get(j)
        if parts is None:
            break
        h.excluded[c] = set(run) | {j}
        h.reset()
        expected = h.normal(c, j)
        if expected < floor:
            break
        share = parts[c] / expected
        if share >= ratio:
            break
        if ambiguous(j) and not run:
            break  # a lone low month that has an ordinary explanation
        run.append(j)
        shares.append(share)
    if run and len(run) < h.th.loss_confirm_months and not confirmed(min(run)):
        run = []  # one low month alone is noise until a second one, or a record, confirms it
    h.excluded[c] = set(run)
    h.reset()
    if not run:
        return None
    start = min(run)
    depth = min(max(sum(shares[:2]) / len(shares[:2]), 0.0), 1.0)
    return Shock(c, start, depth, start + lasts, int(h.level(c) * h.seasonal(c, t)))


def _separated(state: HouseholdState, month: int, th: Thresholds) -> bool:
    """A member's contract ended (or they registered unemployed) in ``month`` or the month
    before, with no new registration since: a formal job loss."""
    first = first_day(month - 1)
    last = first_day(month + 1) - 1
    for events in state.jobs.values():
        for day, code in events:
            if code in (ENDED, UNEMPLOYED) and first <= day <= last and not any(
                    c == REGISTERED and d >= day for d, c in events):
                return True
    return False


def _job_change(state: HouseholdState, since: int, th: Thresholds) -> bool:
    """True when every formal separation since ``since`` (a day ordinal) was followed by a
    new registration within ``job_change_days``: the people changed jobs."""
    seps = 0
    for events in state.jobs.values():
        for day, code in events:
            if code in (ENDED, UNEMPLOYED) and day >= since:
                seps += 1
                if not any(c == REGISTERED and day <= d <= day + th.job_change_days
                           for d, c in events):
                    return False
    return seps > 0


def _episode(oop: dict[int, int], t: int, th: Thresholds) -> Episode | None:
    big = th.episode_min_yuan * 100
    if oop.get(t, 0) >= big:
        end, ongoing = t, True
    elif oop.get(t - 1, 0) >= big:
        end, ongoing = t - 1, False
    else:
        return None
    start = end
    while oop.get(start - 1, 0) >= big and start > end - 6:
        start -= 1
    months = end - start + 1
    spent = sum(oop.get(m, 0) for m in range(start, end + 1))
    more = 0.0
    if ongoing:
        mean = spent / months
        if months == 1:
            # The bigger the first bill, the likelier it is a serious illness that needs
            # another month of treatment, rather than a one-off stay.
            p2 = _interpolate(oop.get(end, 0) / 100, th.episode_second_month_yuan,
                              th.episode_second_month_chance)
            more = p2 * mean * (1 + float(th.episode_third_month_chance))
        elif months == 2:
            more = float(th.episode_third_month_chance) * mean
    return Episode(start, months, spent, int(more), ongoing)


def _interpolate(x: float, xs: tuple[Decimal, ...], ys: tuple[Decimal, ...]) -> float:
    """Piecewise-linear ys over xs, flat beyond the ends."""
    if not xs:
        return 0.0
    if x <= xs[0]:
        return float(ys[0])
    for i in range(1, min(len(xs), len(ys))):
        x0, x1, y0, y1 = float(xs[i - 1]), float(xs[i]), float(ys[i - 1]), float(ys[i])
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return float(ys[min(len(xs), len(ys)) - 1])


def forecast(state: HouseholdState, t: int, th: Thresholds,
             line_of: Callable[[int], int | None], size: int) -> Forecast | None:
    """The worst open 12-month window at the end of month ``t``, or None when no line is
    known or the household has no income report."""
    h = _Household(state, t, th)
    if t not in h.inc:
        return None
    n = len(h.inc)

    sf = th.spring_festival_month

    def sf_month(j: int) -> bool:
        return calendar_month(j) == sf and (j - 12) not in h.inc

    shocks: list[Shock] = []
    wage = _loss(h, WAGES, float(th.wage_loss_ratio), float(th.min_component_yuan) * 100,
                 th.job_loss_months, sf_month, lambda j: _separated(state, j, th))
    if wage is not None:
        start_day = first_day(wage.start) - th.job_change_days
        if t - wage.start < 2 and _job_change(state, start_day, th):
            h.excluded[WAGES] = set()
            h.reset()
        else:
            shocks.append(wage)
    business = _loss(h, BUSINESS, float(th.business_loss_ratio),
                     float(th.min_component_yuan) * 100, th.business_failure_months,
                     lambda j: False, lambda j: False)
    if business is not None:
        shocks.append(business)

    oop, outpatient = oop_by_month(state)
    episode = _episode(oop, t, th)
    big = th.episode_min_yuan * 100
    # Ordinary rigid spending ahead: the household's own outpatient level (shrunk towards a
    # prior per head while its history is short) plus the ordinary rate of hospital stays.
    seen = [outpatient.get(m, 0) for m in range(t - 11, t + 1)
            if m in h.inc and oop.get(m, 0) < big]
    k = th.chronic_prior_months
    prior = float(th.outpatient_oop_prior_yuan) * 100 * size
    chronic = ((sum(seen) + k * prior) / (len(seen) + k)
               + float(th.inpatient_oop_prior_yuan) * 100 * size)

    # Month by month: reported (t-11..t) and forecast (t+1..t+11), with and without shocks.
    first = min(h.inc)
    actual: dict[int, float] = {}
    normal: dict[int, float] = {}
    for m in range(t - 11, t + 12):
        base = sum(h.normal(c, m) for c in COMPONENTS)
        normal[m] = base
        if m <= t:
            parts = h.inc.get(m)
            actual[m] = float(sum(parts[:4])) if parts is not None else base
        else:
            v = base
            for s in shocks:
                if m < s.lasts_until:
                    v -= (1.0 - s.depth) * h.normal(s.component, m)
            actual[m] = v
    rigid_month: dict[int, float] = {}
    for m in range(t - 11, t + 12):
        rigid_month[m] = float(oop.get(m, 0)) if m <= t else chronic
    if episode is not None and episode.expected_more:
        rigid_month[t + 1] += episode.expected_more

    best: tuple[float, int, float, float, float, float, float, int] | None = None
    for start in range(max(t - 11, first), t + 1):
        line = line_of(start)
        if line is None:
            continue
        window = range(start, start + 12)
        income = sum(actual[m] for m in window)
        rigid = sum(rigid_month[m] for m in window)
        normal_income = sum(normal[m] for m in window)
        normal_rigid = chronic * 12
        ratio = (income - rigid) / 100 / size / line
        normal_ratio = (normal_income - normal_rigid) / 100 / size / line
        if best is None or ratio < best[0]:
            best = (ratio, start, income, rigid, normal_income, normal_rigid, normal_ratio, line)
    if best is None:
        return None
    ratio, start, income, rigid, normal_income, normal_rigid, normal_ratio, line = best
    return Forecast(
        month=t, window_start=start, income=round(income), rigid=round(rigid),
        normal_income=round(normal_income), normal_rigid=round(normal_rigid),
        months_of_history=n, shocks=tuple(shocks), episode=episode, ratio=ratio,
        normal_ratio=normal_ratio, line=line,
    )

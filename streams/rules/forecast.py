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

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain, compress, repeat
from operator import add, mul, sub, truediv
from typing import cast

from streams.rules.config import Numbers, Thresholds
from streams.rules.months import first_day
from streams.rules.state import ENDED, REGISTERED, UNEMPLOYED, HouseholdState

WAGES, BUSINESS, PROPERTY, TRANSFERS = 0, 1, 2, 3
COMPONENTS = (WAGES, BUSINESS, PROPERTY, TRANSFERS)
_EXACT = 2**50  # fen; see _Household.small_amounts
_WINDOWS = tuple(slice(i, i + 12) for i in range(12))  # window i: months lo+i ..


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
    if not state.settlements:
        return {}, {}
    settlements = state.settlements.items()
    reversed_ids = {s.reverses for _, s in settlements if s.reverses}
    out: dict[int, int] = {}
    outpatient: dict[int, int] = {}
    for sid, s in settlements:
        fen = s.out_of_pocket
        if fen <= 0 or sid in reversed_ids:
            continue
        m = s.month
        out[m] = out.get(m, 0) + fen
        if not s.inpatient:
            outpatient[m] = outpatient.get(m, 0) + fen
    return out, outpatient


def _median_sorted(v: Sequence[float]) -> float:
    """The median of values already in ascending order."""
    n = len(v)
    if n == 0:
        return 0.0
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _level_of(values: Sequence[float], median: bool, ratio: float) -> float:
    """A robust level of ``values`` (ascending): their median (``median``) or mean, once
    the values under ``ratio`` of the upper quartile are left out (an earlier loss)."""
    n = len(values)
    if n < 4:
        if not n:
            return 0.0
        return _median_sorted(values) if median else sum(values) / n
    cut = ratio * values[(3 * n) // 4]
    # values >= cut, in order ([v for v in values if v >= cut]: they are sorted)
    normal = values[bisect_left(values, cut):] or values
    return _median_sorted(normal) if median else sum(normal) / len(normal)


def _never(month: int) -> bool:
    return False


class _Household:
    """One household's months seen, with the normal level of each income component."""

    def __init__(self, state: HouseholdState, t: int, th: Thresholds) -> None:
        self.t = t
        self.th = th
        self.num = th.numbers
        first = t - 23
        self.inc = {m: parts for m, parts in state.income.items() if first <= m <= t}
        self.season = self.num.season
        # Months left out of each component's level (a loss in progress), by component.
        self.excluded: dict[int, set[int]] = {c: set() for c in COMPONENTS}
        self._levels: dict[int, float] = {}
        self._values: dict[int, tuple[list[float], list[float], list[float] | None]] = {}
        self._columns: list[tuple[int, ...]] | None = None  # by component, in ``inc`` order

    def seasonal(self, c: int, m: int) -> float:
        return self.season[m % 12] if c == BUSINESS else 1.0

    def exclude(self, c: int, months: set[int]) -> None:
        """Leave ``months`` out of component ``c``'s level from now on."""
        if months != self.excluded[c]:
            self.excluded[c] = months
            self._levels.pop(c, None)  # a level depends on its own component's months only

    def columns(self) -> list[tuple[int, ...]]:
        """The reports' fields by component, in ``inc`` order."""
        if self._columns is None:
            self._columns = list(zip(*self.inc.values(), strict=False))
        return self._columns

    def small_amounts(self) -> bool:
        """Every income amount is under 2**50 fen in size. Then adding a month's four
        components as floats, one by one from 0, gives exactly ``float()`` of their integer
        sum: every partial sum is an integer that a float holds exactly."""
        parts = self.columns()[:4]
        return -_EXACT < min(map(min, parts)) and max(map(max, parts)) < _EXACT

    def _deseasonalised(self, c: int) -> tuple[list[float], list[float], list[float] | None]:
        """Component ``c`` of the months seen, deseasonalised: by month (in ``inc`` order),
        sorted, and for wages sorted over the usual months only (not the Spring Festival
        or bonus month)."""
        hit = self._values.get(c)
        if hit is None:
            column = self.columns()[c]
            usual = None
            if c == BUSINESS:
                divisor = self.num.season_divisor
                by_month = list(map(truediv, column, [divisor[m % 12] for m in self.inc]))
            else:
                by_month = list(map(float, column))  # x / max(1.0, 0.05) is float(x)
                if c == WAGES:
                    counts = self.num.usual_wage_month
                    usual = sorted(compress(by_month, [counts[m % 12] for m in self.inc]))
            hit = self._values[c] = (by_month, sorted(by_month), usual)
        return hit

    def level(self, c: int) -> float:
        """A robust normal monthly level of component ``c``, deseasonalised, from the
        months seen outside the current loss (the Spring Festival month left out for
        wages). Months of an earlier loss are left out too: anything under the loss
        ratio of the upper quartile."""
        hit = self._levels.get(c)
        if hit is not None:
            return hit
        by_month, everything, usual = self._deseasonalised(c)
        excluded = self.excluded[c]
        if excluded:
            # Take the excluded months' values out of the sorted lists: a level depends on
            # the values only, not on the months that brought them.
            months = list(self.inc)
            everything = everything.copy()
            usual = usual.copy() if usual is not None else None
            counts = self.num.usual_wage_month
            for m in excluded:
                if m in self.inc:
                    v = by_month[months.index(m)]
                    del everything[bisect_left(everything, v)]
                    if usual is not None and counts[m % 12]:
                        del usual[bisect_left(usual, v)]
        # wages: all months when none is a usual one
        if c == WAGES:
            level = _level_of(usual or everything, True, self.num.wage_loss_ratio)
        else:
            level = _level_of(everything, False, self.num.business_loss_ratio)
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


def _loss(h: _Household, c: int, ratio: float, floor: float, lasts: int,
          ambiguous: Callable[[int], bool], confirmed: Callable[[int], bool]) -> Shock | None:
    """The run of latest months where component ``c`` sits below ``ratio`` of normal.

    Month ``j`` is judged against the same month last year when it was reported, else
    against the level of the months seen outside the run so far and ``j`` itself."""
    run: list[int] = []
    shares: list[float] = []
    t = h.t
    inc = h.inc
    for j in range(t, t - 12, -1):
        parts = inc.get(j)
        if parts is None:
            break
        last_year = inc.get(j - 12)  # never in the run, which is j..t
        if last_year is not None:
            expected = float(last_year[c])
        else:
            h.exclude(c, {*run, j})
            expected = h.level(c) * h.seasonal(c, j)
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
    h.exclude(c, set(run))
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
    big = th.numbers.episode_min_fen
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
        third = th.numbers.episode_third_month_chance
        if months == 1:
            # The bigger the first bill, the likelier it is a serious illness that needs
            # another month of treatment, rather than a one-off stay.
            p2 = _interpolate(oop.get(end, 0) / 100, th.episode_second_month_yuan,
                              th.episode_second_month_chance)
            more = p2 * mean * (1 + third)
        elif months == 2:
            more = third * mean
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
    return _fast_forecast(state, t, th, line_of, size) or \
        _general_forecast(state, t, th, line_of, size)


def _fast_forecast(state: HouseholdState, t: int, th: Thresholds,
                   line_of: Callable[[int], int | None], size: int) -> Forecast | None:
    """:func:`_general_forecast` in the common case, or None (left to the general path).

    The common case: month ``t`` is reported, the months seen (of ``t-23 .. t``) run
    without a gap up to ``t``, every amount is under 2**50 fen in size, every window has a
    line, and no loss is in progress: month ``t``'s wages and its business income each
    sit at or above the loss ratio of what was expected of them (or the expectation is
    under ``min_component_yuan``, or ``t`` is the Spring Festival month with no month a
    year before to compare with). Then the general path's ``_loss`` stops at its first
    month with no run, nothing is left out of any level and no shock is forecast: each
    month ahead is the same month last year, or where that is missing the components'
    levels (the business level times the season), and rigid spending is the reported
    out-of-pocket cost, then the chronic estimate (plus an episode's expected cost).

    Why it is exact: it is the general path's arithmetic, unfolded. Every float is made by
    the same expression from the same operands, and every sum() runs over a list equal
    element by element to the general path's slice, so the sums come out the same. With
    amounts under 2**50 fen, integer sums of them are exact as floats, so integers stand
    in for the general path's integral floats: a month's total, its components added as
    floats (``small_amounts``), and the wage, property and transfer levels (a median,
    or a mean as a quotient of an exact sum, of the same values either way). The worst
    window is the first minimum of the same ratios (``min`` keeps the first, as the
    general loop does). The shocks are none, the episode is ``_episode``'s own answer on
    the same out-of-pocket months, so every field of the :class:`Forecast` is the same.
    """
    income = state.income
    now = income.get(t)
    if now is None:
        return None
    first = t - 23
    seen = list(map(income.get, range(first, t + 1)))
    n = 24 - seen.count(None)  # months seen in t-23 .. t
    s = t - n + 1
    if None in seen[24 - n:]:
        return None  # a month missing between the first seen and t
    rows = cast(list[list[int]], seen[24 - n:])
    wages, business, property_, transfers = list(zip(*rows, strict=False))[:4]
    if not sum(map(abs, chain(wages, business, property_, transfers))) < _EXACT:
        return None
    # Each month's total, as a float (months s .. t).
    totals = list(map(float, map(add, map(add, map(add, wages, business), property_),
                                 transfers)))
    num = th.numbers
    floor = num.min_component_fen
    wage_ratio = num.wage_loss_ratio
    business_ratio = num.business_loss_ratio
    lo = t - 11
    r = lo % 12  # = first % 12
    # What a month would bring from the levels, by month % 12, three years running.
    levels: list[float] | None = None
    if n > 12:
        # _loss's first month, against the same month last year.
        last = rows[-13]
        expected = float(last[WAGES])
        if not (expected < floor or now[WAGES] / expected >= wage_ratio):
            return None
        expected = float(last[BUSINESS])
        if not (expected < floor or now[BUSINESS] / expected >= business_ratio):
            return None
        i0 = 0  # the first window with a month seen
        past = totals[n - 12:]
        actual = past + past[:-1]
        missing = 24 - n  # normal[j] for j < missing comes from the levels
    else:
        # _loss's first month, against the level of the months seen but t; then the levels.
        usual_month, everything, usual, farm = _seen_values(wages, business, s, n, num)
        w = now[WAGES]
        values = everything.copy()
        del values[bisect_left(values, w)]
        if usual_month[-1]:
            usual_t = usual.copy()
            del usual_t[bisect_left(usual_t, w)]
            values = usual_t or values
        else:
            values = usual or values
        expected = float(_level_of(values, True, wage_ratio))
        if not (expected < floor or w / expected >= wage_ratio
                or t % 12 + 1 == th.spring_festival_month):
            return None
        farm_sorted = sorted(farm)
        del farm_sorted[bisect_left(farm_sorted, farm[-1])]
        expected = _level_of(farm_sorted, False, business_ratio) * num.season[t % 12]
        if not (expected < floor or now[BUSINESS] / expected >= business_ratio):
            return None
        levels = _seen_levels(everything, usual, farm, property_, transfers, num)
        i0 = 12 - n
        missing = 12 + i0
        before = levels[r:r + i0]  # months lo .. s-1, not seen: from the levels
        actual = before + totals + before + totals[:-1]

    # Out-of-pocket cost of months lo .. t (oop_by_month, restricted to them).
    oop = [0] * 12
    outpatient = [0] * 12
    if state.settlements:
        settlements = state.settlements
        reversed_ids = {x.reverses for x in settlements.values() if x.reverses}
        for sid, x in settlements.items():
            fen = x.out_of_pocket
            i = x.month - lo
            if fen > 0 and 0 <= i < 12 and sid not in reversed_ids:
                oop[i] += fen
                if not x.inpatient:
                    outpatient[i] += fen
    big = num.episode_min_fen
    episode = None
    if oop[11] >= big or oop[10] >= big:  # else _episode finds none
        episode = _episode(dict(zip(range(lo, t + 1), oop, strict=True)), t, th)
    if big > 0 and max(oop[i0:]) < big:
        seen_fen, seen_months = sum(outpatient[i0:]), 12 - i0
    else:
        counted = [outpatient[i] for i in range(i0, 12) if oop[i] < big]
        seen_fen, seen_months = sum(counted), len(counted)
    k = th.chronic_prior_months
    prior = num.outpatient_prior_yuan * 100 * size
    chronic = ((seen_fen + k * prior) / (seen_months + k)
               + num.inpatient_prior_yuan * 100 * size)
    rigid_month = list(map(float, oop))
    rigid_month += [chronic] * 11
    if episode is not None and episode.expected_more:
        rigid_month[12] += episode.expected_more

    # Windows i0 .. 11: the first of the lowest ratios.
    found = list(map(line_of, range(lo + i0, t + 1)))
    if None in found:
        return None
    lines = cast(list[int], found)
    windows = _WINDOWS[i0:]
    incomes = list(map(sum, map(actual.__getitem__, windows)))
    rigids = list(map(sum, map(rigid_month.__getitem__, windows)))
    ratios = list(map(truediv, map(truediv, map(truediv, map(sub, incomes, rigids),
                                                repeat(100)), repeat(size)), lines))
    j = min(range(len(ratios)), key=ratios.__getitem__)
    i = i0 + j
    line = lines[j]
    if i >= missing:  # the window's months last year were all seen
        normal = totals[i - missing:i - missing + 12]
    else:
        if levels is None:
            _, everything, usual, farm = _seen_values(wages, business, s, n, num)
            levels = _seen_levels(everything, usual, farm, property_, transfers, num)
        normal = levels[r:r + missing] + totals[:-1]
        normal = normal[i:i + 12]
    normal_income = sum(normal)
    normal_rigid = chronic * 12
    normal_ratio = (normal_income - normal_rigid) / 100 / size / line
    return Forecast(
        month=t, window_start=lo + i, income=round(incomes[j]), rigid=round(rigids[j]),
        normal_income=round(normal_income), normal_rigid=round(normal_rigid),
        months_of_history=n, shocks=(), episode=episode, ratio=ratios[j],
        normal_ratio=normal_ratio, line=line,
    )


def _seen_values(wages: tuple[int, ...], business: tuple[int, ...], s: int, n: int,
                 num: Numbers) -> tuple[tuple[bool, ...], list[int], list[int], list[float]]:
    """For the months seen, ``s .. s+n-1``: whether each is a usual wage month, the wages
    sorted, the usual months' wages sorted, and business income deseasonalised by month
    (as ``_Household._deseasonalised``; integers stand in for integral floats)."""
    q = s % 12
    usual_month = num.usual_wage_month_3y[q:q + n]
    farm = list(map(truediv, business, num.season_divisor_3y[q:q + n]))
    return usual_month, sorted(wages), sorted(compress(wages, usual_month)), farm


def _seen_levels(everything: list[int], usual: list[int], farm: list[float],
                 property_: tuple[int, ...], transfers: tuple[int, ...],
                 num: Numbers) -> list[float]:
    """What a month brings from the levels of the months seen (none left out), by
    ``month % 12``, three years running."""
    business_ratio = num.business_loss_ratio
    return 3 * _month_levels(
        float(_level_of(usual or everything, True, num.wage_loss_ratio)),
        _level_of(sorted(farm), False, business_ratio),
        _mean_level(property_, business_ratio), _mean_level(transfers, business_ratio),
        num.season)


def _mean_level(values: tuple[int, ...], ratio: float) -> float:
    """``_level_of`` the values as a mean, for integers under 2**50 in size: a constant
    column's level is its value (n equal values sum exactly to n times it)."""
    v = values[0]
    if values.count(v) == len(values):
        return float(v)
    return _level_of(sorted(values), False, ratio)


def _month_levels(wages: float, business: float, property_: float, transfers: float,
                  season: tuple[float, ...]) -> list[float]:
    """A month's income from the levels, by calendar month (Jan..Dec), added up in the
    general path's order."""
    return list(map(add, map(add, map(add, repeat(0.0 + wages, 12),
                                      map(mul, repeat(business, 12), season)),
                             repeat(property_, 12)), repeat(transfers, 12)))


def _general_forecast(state: HouseholdState, t: int, th: Thresholds,
                      line_of: Callable[[int], int | None], size: int) -> Forecast | None:
    """:func:`forecast`, every case."""
    h = _Household(state, t, th)
    inc = h.inc
    if t not in inc:
        return None
    n = len(inc)
    num = h.num

    sf = th.spring_festival_month

    def sf_month(j: int) -> bool:
        return j % 12 + 1 == sf and (j - 12) not in inc

    shocks: list[Shock] = []
    wage = _loss(h, WAGES, num.wage_loss_ratio, num.min_component_fen,
                 th.job_loss_months, sf_month, lambda j: _separated(state, j, th))
    if wage is not None:
        start_day = first_day(wage.start) - th.job_change_days
        if t - wage.start < 2 and _job_change(state, start_day, th):
            h.exclude(WAGES, set())
        else:
            shocks.append(wage)
    business = _loss(h, BUSINESS, num.business_loss_ratio, num.min_component_fen,
                     th.business_failure_months, _never, _never)
    if business is not None:
        shocks.append(business)

    lo = t - 11
    past = range(lo, t + 1)  # the months of the open windows already reported or missed
    oop, outpatient = oop_by_month(state)
    episode = _episode(oop, t, th)
    # Ordinary rigid spending ahead: the household's own outpatient level (shrunk towards a
    # prior per head while its history is short) plus the ordinary rate of hospital stays.
    big = num.episode_min_fen
    if oop or big <= 0:
        seen = [outpatient.get(m, 0) for m in past if m in inc and oop.get(m, 0) < big]
        seen_fen, seen_months = sum(seen), len(seen)
    else:  # no cost at all: every month reported counts, at 0
        seen_fen, seen_months = 0, sum(map(inc.__contains__, past))
    k = th.chronic_prior_months
    prior = num.outpatient_prior_yuan * 100 * size
    chronic = ((seen_fen + k * prior) / (seen_months + k)
               + num.inpatient_prior_yuan * 100 * size)

    # Month by month, m = t-11 .. t+11 at index m - (t-11): reported (up to t) and forecast
    # (after t), with and without shocks. A component's normal value is the same month last
    # year, unless that month was not reported or is part of the component's loss: then
    # its level (seasonal for business income). The components are added in the order of
    # COMPONENTS, from 0, as sum() over h.normal() did, so the floats come out the same.
    reported = list(map(inc.get, range(lo - 12, t + 1)))  # months lo-12 .. t
    last_year = reported[:23]  # the same month last year, for m = lo .. t + 11
    excl_wages = h.excluded[WAGES]
    excl_business = h.excluded[BUSINESS]
    if h.small_amounts():
        normal = [float(parts[0] + parts[1] + parts[2] + parts[3]) if parts is not None
                  else 0.0 for parts in last_year]
    else:
        normal = [0.0 + float(parts[0]) + float(parts[1]) + float(parts[2]) + float(parts[3])
                  if parts is not None else 0.0 for parts in last_year]
    if excl_wages or excl_business or None in last_year:
        levels = [h.level(c) for c in COMPONENTS]
        season = h.season
        for i, parts in enumerate(last_year):
            ref = lo - 12 + i  # m = ref + 12 has the same calendar month
            if parts is None:
                normal[i] = (0.0 + levels[WAGES] + levels[BUSINESS] * season[ref % 12]
                             + levels[PROPERTY] + levels[TRANSFERS])
            elif ref in excl_wages or ref in excl_business:
                wages = levels[WAGES] if ref in excl_wages else float(parts[0])
                farm = levels[BUSINESS] * season[ref % 12] if ref in excl_business \
                    else float(parts[1])
                normal[i] = 0.0 + wages + farm + float(parts[2]) + float(parts[3])
    actual = [normal[i] if now is None else float(now[0] + now[1] + now[2] + now[3])
              for i, now in enumerate(reported[12:])]
    if shocks:
        for m in range(t + 1, t + 12):
            v = normal[m - lo]
            for s in shocks:
                if m < s.lasts_until:
                    v -= (1.0 - s.depth) * h.normal(s.component, m)
            actual.append(v)
    else:
        actual += normal[12:]
    rigid_month = list(map(float, map(oop.get, past, repeat(0, 12)))) if oop else [0.0] * 12
    rigid_month += [chronic] * 11
    if episode is not None and episode.expected_more:
        rigid_month[12] += episode.expected_more  # month t+1

    # The worst window by ratio (the first of equal ones); window i starts at month lo + i.
    best: tuple[float, int, float, float, int] | None = None
    for i in range(max(0, min(inc) - lo), 12):
        line = line_of(lo + i)
        if line is None:
            continue
        income = sum(actual[i:i + 12])
        rigid = sum(rigid_month[i:i + 12])
        ratio = (income - rigid) / 100 / size / line
        if best is None or ratio < best[0]:
            best = (ratio, i, income, rigid, line)
    if best is None:
        return None
    ratio, i, income, rigid, line = best
    normal_income = sum(normal[i:i + 12])
    normal_rigid = chronic * 12
    normal_ratio = (normal_income - normal_rigid) / 100 / size / line
    return Forecast(
        month=t, window_start=lo + i, income=round(income), rigid=round(rigid),
        normal_income=round(normal_income), normal_rigid=round(normal_rigid),
        months_of_history=n, shocks=tuple(shocks), episode=episode, ratio=ratio,
        normal_ratio=normal_ratio, line=line,
    )

"""Detection thresholds, readable and overridable per region and per year.

The bundled ``rules.toml`` holds the defaults; an operator points FANPIN_RULES_FILE at their
own copy. ``[[override]]`` blocks apply to a region code prefix and/or a year, most specific
last, so a county can tighten a threshold without touching the rest of the province.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

BUNDLED = Path(__file__).with_name("rules.toml")


def _decimals(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


@dataclass(frozen=True)
class Thresholds:
    # Alert when the worst open 12-month window's per-capita income after rigid spending,
    # forecast, is below line * alert_margin.
    alert_margin: Decimal = Decimal("1.0")
    # A wage loss: the latest months' wages under this share of normal (same month last
    # year, or the household's usual level). Expected to last job_loss_months from its start.
    wage_loss_ratio: Decimal = Decimal("0.75")
    job_loss_months: int = 8
    # A failed farm or business project: business income under this share of normal.
    business_loss_ratio: Decimal = Decimal("0.5")
    business_failure_months: int = 9
    # Months in a row a loss must show before it counts (one month is noise), unless a
    # record confirms it at once (an ended contract with no new job).
    loss_confirm_months: int = 2
    # Components smaller than this (yuan a month, normally) are not judged for a loss.
    min_component_yuan: Decimal = Decimal("300")
    # The month migrant workers are home for the Spring Festival and earn nothing.
    spring_festival_month: int = 2
    # The month of year-end bonuses: left out of a household's usual wage level.
    bonus_month: int = 12
    # Farm and business income by calendar month (Jan..Dec) against the yearly mean:
    # harvest July to October, lowest in winter. Used only until a year of history exists.
    business_season: tuple[Decimal, ...] = _decimals(
        "0.49", "0.39", "0.57", "0.77", "0.85", "0.96", "1.25", "1.73", "1.91", "1.54",
        "0.97", "0.58")
    # A serious illness episode: months with out-of-pocket cost over episode_min_yuan.
    # The chance that a first such month is followed by a second grows with its bill
    # (episode_second_month_chance at episode_second_month_yuan, linear in between); a
    # third follows two with episode_third_month_chance.
    episode_min_yuan: Decimal = Decimal("8000")
    episode_second_month_yuan: tuple[Decimal, ...] = _decimals(
        "7500", "12500", "17500", "22500", "27500")
    episode_second_month_chance: tuple[Decimal, ...] = _decimals(
        "0.04", "0.35", "0.66", "0.86", "1.0")
    episode_third_month_chance: Decimal = Decimal("0.5")
    # Ordinary out-of-pocket cost per head and month: outpatient (assumed until the
    # household's own months outweigh it, chronic_prior_months months of weight) and the
    # ordinary rate of hospital stays.
    outpatient_oop_prior_yuan: Decimal = Decimal("75")
    inpatient_oop_prior_yuan: Decimal = Decimal("20")
    chronic_prior_months: int = 6
    # Local medical triggers (named in the evidence): one inpatient stay over this
    # out-of-pocket, or out-of-pocket above this share of the household's yearly income.
    spike_single_stay_yuan: Decimal = Decimal("10000")
    spike_income_share: Decimal = Decimal("0.5")
    # An ended contract followed by a new registration within this many days is a job change.
    job_change_days: int = 45
    # Months of income needed before a household is judged at all.
    min_history_months: int = 1

    @cached_property
    def numbers(self) -> Numbers:
        """The thresholds the forecast uses on every evaluation, converted once per
        Thresholds object (each region and year has its own, so overrides are respected)."""
        return Numbers(self)


class Numbers:
    """Float (and whole-fen) forms of the :class:`Thresholds` the hot rules compare against.

    Each value is exactly what ``float(...)`` of the Decimal gives, so using them changes no
    result. Whole-fen limits compared with integer amounts are rounded up: for an integer x,
    ``x >= limit`` holds exactly when ``x >= ceil(limit)``.
    """

    __slots__ = ("season", "wage_loss_ratio", "business_loss_ratio", "min_component_fen",
                 "episode_min_fen", "episode_third_month_chance", "outpatient_prior_yuan",
                 "inpatient_prior_yuan", "alert_margin", "season_divisor", "usual_wage_month",
                 "season_divisor_3y", "usual_wage_month_3y")

    def __init__(self, th: Thresholds) -> None:
        self.season = tuple(float(x) for x in th.business_season)
        # Business income is deseasonalised by these (a season near zero would blow it up).
        self.season_divisor = tuple(max(s, 0.05) for s in self.season)
        # By month index % 12: whether the month counts towards a household's usual wage
        # level (not the Spring Festival month, not the bonus month).
        self.usual_wage_month = tuple(cm not in (th.spring_festival_month, th.bonus_month)
                                      for cm in range(1, 13))
        # The same, three years running: [m % 12 : m % 12 + n] covers months m .. m+n-1
        # for any n up to 24 (the months a forecast looks back on).
        self.season_divisor_3y = self.season_divisor * 3
        self.usual_wage_month_3y = self.usual_wage_month * 3
        self.wage_loss_ratio = float(th.wage_loss_ratio)
        self.business_loss_ratio = float(th.business_loss_ratio)
        self.min_component_fen = float(th.min_component_yuan) * 100
        self.episode_min_fen: int = math.ceil(th.episode_min_yuan * 100)
        self.episode_third_month_chance = float(th.episode_third_month_chance)
        self.outpatient_prior_yuan = float(th.outpatient_oop_prior_yuan)
        self.inpatient_prior_yuan = float(th.inpatient_oop_prior_yuan)
        self.alert_margin = float(th.alert_margin)


@dataclass(frozen=True)
class _Override:
    region_prefix: str
    year: int | None
    values: dict[str, Any]


class RuleConfig:
    def __init__(self, version: str, default: Thresholds, overrides: list[_Override]) -> None:
        self.version = version
        self.default = default
        self._overrides = overrides
        self._cache: dict[tuple[str, int], Thresholds] = {}

    def for_(self, region_code: str, year: int) -> Thresholds:
        key = (region_code, year)
        hit = self._cache.get(key)
        if hit is None:
            hit = self.default
            for o in self._overrides:
                if region_code.startswith(o.region_prefix) and o.year in (None, year):
                    hit = replace(hit, **o.values)
            self._cache[key] = hit
        return hit

    @classmethod
    def load(cls, path: Path | None = None) -> RuleConfig:
        data = tomllib.loads((path or BUNDLED).read_text(encoding="utf-8"))
        unknown = set(data) - {"version", "default", "override"}
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} in the rules file; expected "
                             "'version', '[default]' and '[[override]]'")
        names = {f.name: f for f in fields(Thresholds)}

        def convert(raw: dict[str, Any], where: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in raw.items():
                if k not in names:
                    raise ValueError(f"{where}: unknown threshold {k!r}; known: {sorted(names)}")
                kind = str(names[k].type)
                if kind.startswith("tuple"):
                    if not isinstance(v, list):
                        raise ValueError(f"{where}: {k!r} must be a list of numbers")
                    out[k] = tuple(Decimal(str(x)) for x in v)
                elif kind == "Decimal":
                    out[k] = Decimal(str(v))
                else:
                    out[k] = int(v)
            return out

        default = replace(Thresholds(), **convert(data.get("default", {}), "[default]"))
        _check(default, "[default]")
        overrides = []
        for i, block in enumerate(data.get("override", [])):
            block = dict(block)
            prefix = str(block.pop("region_prefix", ""))
            year = block.pop("year", None)
            overrides.append(_Override(prefix, int(year) if year is not None else None,
                                       convert(block, f"[[override]] #{i + 1}")))
        for o in overrides:
            _check(replace(default, **o.values), f"[[override]] for {o.region_prefix!r}")
        overrides.sort(key=lambda o: (len(o.region_prefix), o.year is not None))
        return cls(str(data.get("version", "unversioned")), default, overrides)


def _check(th: Thresholds, where: str) -> None:
    xs, ys = th.episode_second_month_yuan, th.episode_second_month_chance
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"{where}: episode_second_month_yuan and episode_second_month_chance "
                         f"must be lists of the same, non-zero length ({len(xs)} and {len(ys)})")
    if list(xs) != sorted(xs) or len(set(xs)) != len(xs):
        raise ValueError(f"{where}: episode_second_month_yuan must increase")
    if len(th.business_season) != 12:
        raise ValueError(f"{where}: business_season needs 12 monthly factors, "
                         f"got {len(th.business_season)}")

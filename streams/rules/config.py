"""Detection thresholds, readable and overridable per region and per year.

The bundled ``rules.toml`` holds the defaults; an operator points FANPIN_RULES_FILE at their
own copy. ``[[override]]`` blocks apply to a region code prefix and/or a year, most specific
last, so a county can tighten a threshold without touching the rest of the province.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

BUNDLED = Path(__file__).with_name("rules.toml")


@dataclass(frozen=True)
class Thresholds:
    # Alert when projected yearly per-capita income after rigid spending is below
    # line * alert_margin (no shock seen) or line * shock_margin (a shock was seen).
    alert_margin: Decimal = Decimal("0.97")
    shock_margin: Decimal = Decimal("1.05")
    # Sudden income drop: the latest months against the same months a year earlier.
    drop_ratio: Decimal = Decimal("0.7")
    drop_window_months: int = 3
    # Medical spike (local triggers in the README): one inpatient stay over this
    # out-of-pocket, or out-of-pocket above this share of the household's yearly income.
    spike_single_stay_yuan: Decimal = Decimal("10000")
    spike_income_share: Decimal = Decimal("0.5")
    # An ended contract followed by a new registration within this many days is a job change.
    job_change_days: int = 45
    # Below this many months of income history, projections use what there is.
    min_history_months: int = 3


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
                out[k] = Decimal(str(v)) if names[k].type in ("Decimal", Decimal) else int(v)
            return out

        default = replace(Thresholds(), **convert(data.get("default", {}), "[default]"))
        overrides = []
        for i, block in enumerate(data.get("override", [])):
            block = dict(block)
            prefix = str(block.pop("region_prefix", ""))
            year = block.pop("year", None)
            overrides.append(_Override(prefix, int(year) if year is not None else None,
                                       convert(block, f"[[override]] #{i + 1}")))
        overrides.sort(key=lambda o: (len(o.region_prefix), o.year is not None))
        return cls(str(data.get("version", "unversioned")), default, overrides)

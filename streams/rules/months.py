"""Months as integers (year * 12 + month - 1), so windows are plain ranges."""

from __future__ import annotations

import datetime as dt

_MONTH_INDEX: dict[str, int] = {}  # month_index by label, for the labels seen (a few hundred)


def month_index(yyyy_mm: str) -> int:
    index = _MONTH_INDEX.get(yyyy_mm)
    if index is None:
        index = int(yyyy_mm[:4]) * 12 + int(yyyy_mm[5:7]) - 1
        if len(_MONTH_INDEX) < 10_000:
            _MONTH_INDEX[yyyy_mm] = index
    return index


def month_of(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def year_of(index: int) -> int:
    return index // 12


def calendar_month(index: int) -> int:
    return index % 12 + 1


def first_day(index: int) -> int:
    """The ordinal (``date.toordinal``) of the month's first day."""
    return dt.date(index // 12, index % 12 + 1, 1).toordinal()

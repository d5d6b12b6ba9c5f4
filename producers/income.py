"""``income/YYYY-MM.csv``: monthly household income monitoring (乡村振兴局, UTF-8)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Final

from producers.common import (
    CENT,
    ZERO,
    Encoding,
    ParseContext,
    Reject,
    Row,
    RowError,
    digits_field,
    fast_or_checked,
    int_field,
    make_reject,
    money,
    month_value,
    parse_csv_file,
)
from schemas.events import Department, IncomeReport, Origin

DEPARTMENT: Final[Department] = "rural"
ENCODING: Final[Encoding] = "utf-8-sig"
COLUMNS: Final[list[str]] = [
    "户编号",
    "行政区划代码",
    "统计月份",
    "家庭人口数",
    "工资性收入",
    "经营净收入",
    "财产净收入",
    "转移净收入",
    "家庭纯收入",
]


# The fast path: one regex over the raw line for an ordinary valid row. Anything it does not
# match (or that then fails a check) goes through parse_row_checked, the single authority
# on rejects, so both paths give identical results (tested).
_AMOUNT = r"((?!-0+\.00(?:,|$))-?[0-9]{1,12}\.[0-9]{2})"
_FAST = re.compile(
    r"([0-9]{16}),([0-9]{12}),((?:19[0-9]{2}|20[0-9]{2}|2100)-(?:0[1-9]|1[0-2])),([1-9][0-9]?),"
    + ",".join([_AMOUNT] * 5)
)
_VALUES = itemgetter(*COLUMNS)


def fast_line(line: str, origin: Origin, ctx: ParseContext) -> IncomeReport | None:
    """The event for an ordinary valid line in ``COLUMNS`` order, else None."""
    m = _FAST.fullmatch(line)
    if m is None:
        return None
    household, region, month, size, w, b, p, t, tot = m.groups()
    known = ctx.known_households
    if known is not None and household not in known:
        return None
    wages = ZERO if w == "0.00" else Decimal(w)
    business = ZERO if b == "0.00" else Decimal(b)
    prop = ZERO if p == "0.00" else Decimal(p)
    transfers = ZERO if t == "0.00" else Decimal(t)
    total = ZERO if tot == "0.00" else Decimal(tot)
    if abs(total - (wages + business + prop + transfers)) > CENT:
        return None
    return IncomeReport(
        id=f"income:{household}:{month}",
        origin=origin,
        household_id=household,
        region_code=region,
        month=month,
        household_size=int(size),
        wages=wages,
        business=business,
        property=prop,
        transfers=transfers,
        total=total,
    )


def parse_row(row: Row, origin: Origin, ctx: ParseContext) -> IncomeReport | Reject:
    """One row (column name -> text) to an event or a Reject."""
    return fast_or_checked(row, origin, ctx, _VALUES, fast_line, parse_row_checked)


def parse_row_checked(row: Row, origin: Origin, ctx: ParseContext) -> IncomeReport | Reject:
    """The full check of every field, with a reason for the first problem found."""
    try:
        household = digits_field(row, "户编号", 16, "bad_household_number", "户编号")
        region = digits_field(row, "行政区划代码", 12, "bad_region_code", "村级行政区划代码")
        month = month_value(row, "统计月份")
        size = int_field(row, "家庭人口数", 1, 99, "bad_size")
        wages = money(row, "工资性收入")
        business = money(row, "经营净收入")
        prop = money(row, "财产净收入")
        transfers = money(row, "转移净收入")
        total = money(row, "家庭纯收入", "missing_total")
        parts = wages + business + prop + transfers
        if abs(total - parts) > CENT:
            raise RowError(
                "total_mismatch",
                f"「家庭纯收入」{total} 不等于四项收入之和 {parts}"
                f"（工资性收入 {wages} + 经营净收入 {business} + 财产净收入 {prop}"
                f" + 转移净收入 {transfers}），相差 {abs(total - parts)}",
            )
        known = ctx.known_households
        if known is not None and household not in known:
            raise RowError(
                "unknown_household",
                f"「户编号」{household} 不在花名册中：请核对户编号，或先在防返贫监测系统中登记该户",
            )
    except RowError as e:
        return make_reject(origin, e)
    return IncomeReport(
        id=f"income:{household}:{month}",
        origin=origin,
        household_id=household,
        region_code=region,
        month=month,
        household_size=size,
        wages=wages,
        business=business,
        property=prop,
        transfers=transfers,
        total=total,
    )


def parse_file(path: Path, rel: str, ctx: ParseContext) -> Iterator[IncomeReport | Reject]:
    return parse_csv_file(
        path,
        rel,
        ctx,
        department=DEPARTMENT,
        columns=COLUMNS,
        encoding=ENCODING,
        parse_row=parse_row_checked,
        fast_line=fast_line,
    )

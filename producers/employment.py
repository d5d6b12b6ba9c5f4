"""``employment/YYYY-MM.csv``: employment business events (就业业务, 人社局, UTF-8)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Final, cast

from producers.common import (
    COMPACT_DATES,
    Encoding,
    ParseContext,
    Reject,
    Row,
    RowError,
    choice,
    compact_date,
    compact_date_value,
    digits_field,
    fast_or_checked,
    get,
    id_number,
    make_reject,
    optional_money,
    parse_csv_file,
    required,
    show,
)
from schemas.events import Department, EmploymentEvent, EmploymentKind, Origin, WorkPlace

DEPARTMENT: Final[Department] = "employment"
ENCODING: Final[Encoding] = "utf-8-sig"
COLUMNS: Final[list[str]] = [
    "业务流水号",
    "身份证号",
    "姓名",
    "行政区划代码",
    "业务类型",
    "业务日期",
    "用工单位",
    "金额",
    "就业地区",
]
BUSINESS_TYPES: Final = ("就业登记", "工资发放", "解除劳动合同", "失业登记")
WORK_PLACES: Final = ("县内", "省内县外", "省外")


# The fast path: plain string checks on the fields of an ordinary valid line (cheaper
# than one regex over the whole line). Anything it does not accept goes through
# parse_row_checked, the single authority on rejects, so both paths give identical results
# (tested).
_AMOUNT = re.compile(r"[0-9]{1,12}\.[0-9]{2}")  # non-negative, exactly two decimals
_KINDS: Final = frozenset(BUSINESS_TYPES)
_PLACES: Final = frozenset(WORK_PLACES)
_VALUES = itemgetter(*COLUMNS)


def fast_line(line: str, origin: Origin, ctx: ParseContext) -> EmploymentEvent | None:
    """The event for an ordinary valid line in ``COLUMNS`` order, else None."""
    f = line.split(",")
    if len(f) != 9:
        return None
    bid, idn, _name, region, kind, day, employer, amt, place = f
    # Cache hits first (the common case); a miss is checked (and cached) once. Values with
    # blanks fail these checks and take the full path.
    person = ctx.pseudonyms.get(idn) or ctx.person_if_valid(idn)
    date = COMPACT_DATES.get(day) or compact_date_value(day)
    if (
        person is None
        or date is None
        or kind not in _KINDS
        or not bid
        or bid != bid.strip()
        or not (len(region) == 12 and region.isdigit() and region.isascii())
        or (place and place not in _PLACES)
    ):
        return None
    if amt:
        if _AMOUNT.fullmatch(amt) is None:
            return None
        amount: Decimal | None = Decimal(amt)
    elif kind == "工资发放":
        return None
    else:
        amount = None
    return EmploymentEvent(
        id=f"employment:{bid}",
        origin=origin,
        business_id=bid,
        person=person,
        region_code=region,
        business_type=cast(EmploymentKind, kind),
        date=date,
        employer=employer.strip(),
        amount=amount,
        work_place=cast(WorkPlace, place) if place else None,
    )


def parse_row(row: Row, origin: Origin, ctx: ParseContext) -> EmploymentEvent | Reject:
    """One row (column name -> text) to an event or a Reject."""
    return fast_or_checked(row, origin, ctx, _VALUES, fast_line, parse_row_checked)


def parse_row_checked(row: Row, origin: Origin, ctx: ParseContext) -> EmploymentEvent | Reject:
    """The full check of every field, with a reason for the first problem found."""
    try:
        bid = required(row, "业务流水号")
        idn = id_number(row)
        region = digits_field(row, "行政区划代码", 12, "bad_region_code", "村级行政区划代码")
        kind = choice(row, "业务类型", BUSINESS_TYPES, "unknown_business_type")
        date = compact_date(row, "业务日期")
        employer = get(row, "用工单位")
        amount = optional_money(row, "金额")
        if amount is None and kind == "工资发放":
            raise RowError(
                "wage_without_amount",
                f"业务 {bid} 的业务类型为“工资发放”，但「金额」为空：工资发放必须填写发放金额",
            )
        if amount is not None and amount < 0:
            raise RowError("negative_amount", f"业务 {bid} 的「金额」{amount} 为负数，工资不能为负")
        place = get(row, "就业地区")
        if place and place not in WORK_PLACES:
            raise RowError(
                "unknown_work_place",
                f"「就业地区」的值 {show(place)} 不在约定范围内，应为以下之一："
                f"{'、'.join(WORK_PLACES)}（或留空）",
            )
    except RowError as e:
        return make_reject(origin, e, get(row, "姓名"), get(row, "身份证号"))
    return EmploymentEvent(
        id=f"employment:{bid}",
        origin=origin,
        business_id=bid,
        person=ctx.person(idn),
        region_code=region,
        business_type=cast(EmploymentKind, kind),
        date=date,
        employer=employer,
        amount=amount,
        work_place=cast(WorkPlace, place) if place else None,
    )


def parse_file(path: Path, rel: str, ctx: ParseContext) -> Iterator[EmploymentEvent | Reject]:
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

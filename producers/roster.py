"""``roster.csv``: the household roster (花名册, 乡村振兴局 防返贫监测系统 export, UTF-8 with
BOM). One row is one member of one household. Names are read and dropped here; the ID
number becomes a keyed pseudonym."""

from __future__ import annotations

from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Final, cast

from producers.common import (
    Encoding,
    ParseContext,
    Reject,
    Row,
    RowError,
    choice,
    digits_field,
    fast_or_checked,
    get,
    id_number,
    int_field,
    is_digits,
    make_reject,
    parse_csv_file,
    read_csv,
)
from schemas.events import Department, HouseholdType, Labour, Origin, RosterMember

DEPARTMENT: Final[Department] = "rural"
ENCODING: Final[Encoding] = "utf-8-sig"
COLUMNS: Final[list[str]] = [
    "户编号",
    "行政区划代码",
    "户类型",
    "家庭人口数",
    "成员序号",
    "姓名",
    "身份证号",
    "与户主关系",
    "劳动技能",
]
HOUSEHOLD_TYPES: Final = ("脱贫户", "一般农户", "监测户")
LABOUR: Final = ("普通劳动力", "技能劳动力", "弱劳动力", "无劳动力")


# The fast path: plain string checks on the fields of an ordinary valid line. Anything it
# does not accept goes through parse_row_checked, the single authority on rejects, so both
# paths give identical results (tested).
_HOUSEHOLD_TYPES: Final = frozenset(HOUSEHOLD_TYPES)
_LABOUR: Final = frozenset(LABOUR)
#: Sizes and member numbers as an ordinary row writes them (no leading zero) -> int.
_NUMBERS: Final = {str(i): i for i in range(1, 100)}
_VALUES = itemgetter(*COLUMNS)


def fast_line(line: str, origin: Origin, ctx: ParseContext) -> RosterMember | None:
    """The event for an ordinary valid line in ``COLUMNS`` order, else None."""
    f = line.split(",")
    if len(f) != 9:
        return None
    household, region, htype, size_text, member_text, _name, idn, relation, labour = f
    size = _NUMBERS.get(size_text)
    member_no = _NUMBERS.get(member_text)
    if (
        size is None
        or member_no is None
        or htype not in _HOUSEHOLD_TYPES
        or labour not in _LABOUR
        or not is_digits(household, 16)
        or not is_digits(region, 12)
    ):
        return None
    person = ctx.pseudonyms.get(idn) or ctx.person_if_valid(idn)
    if person is None:
        return None
    return _member(origin, household, region, htype, size, member_no, person, relation.strip(),
                   labour)


def parse_row(row: Row, origin: Origin, ctx: ParseContext) -> RosterMember | Reject:
    """One row (column name -> text) to an event or a Reject."""
    return fast_or_checked(row, origin, ctx, _VALUES, fast_line, parse_row_checked)


def parse_row_checked(row: Row, origin: Origin, ctx: ParseContext) -> RosterMember | Reject:
    """The full check of every field, with a reason for the first problem found."""
    try:
        household = digits_field(row, "户编号", 16, "bad_household_number", "户编号")
        region = digits_field(row, "行政区划代码", 12, "bad_region_code", "村级行政区划代码")
        htype = choice(row, "户类型", HOUSEHOLD_TYPES, "unknown_household_type")
        size = int_field(row, "家庭人口数", 1, 99, "bad_size")
        member_no = int_field(row, "成员序号", 1, 99, "bad_member_no")
        idn = id_number(row)
        relation = get(row, "与户主关系")
        labour = choice(row, "劳动技能", LABOUR, "unknown_labour")
    except RowError as e:
        return make_reject(origin, e, get(row, "姓名"), get(row, "身份证号"))
    return _member(origin, household, region, htype, size, member_no, ctx.person(idn),
                   relation, labour)


def _member(origin: Origin, household: str, region: str, htype: str, size: int,
            member_no: int, person: str, relation: str, labour: str) -> RosterMember:
    """The event of one checked roster row (both paths build it here)."""
    return RosterMember(
        id=f"roster:{household}:{member_no}",
        origin=origin,
        household_id=household,
        region_code=region,
        household_type=cast(HouseholdType, htype),
        household_size=size,
        member_no=member_no,
        person=person,
        relation=relation,
        labour=cast(Labour, labour),
    )


def parse_file(path: Path, rel: str, ctx: ParseContext) -> Iterator[RosterMember | Reject]:
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


def household_numbers(path: Path, rel: str = "roster.csv") -> set[str]:
    """Every well-formed 户编号 in a roster file, whether or not the rest of its row is
    valid (a household exists even if one member's row has a typo)."""
    out: set[str] = set()
    for item in read_csv(path, rel, COLUMNS, ENCODING, DEPARTMENT):
        if isinstance(item, Reject):
            continue
        h = item[1]["户编号"].strip()
        if len(h) == 16 and h.isascii() and h.isdigit():
            out.add(h)
    return out

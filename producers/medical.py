"""``medical/YYYY-MM.csv``: medical insurance settlements (医保结算明细, 医保局, GBK).

Normal in this feed and therefore *not* rejected: the same settlement twice (same 结算单号:
same event id, the stream counts it once), reversals (冲销) with negated amounts naming the
settlement they cancel, and settlements from earlier months that were settled late.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Final, cast

from producers.common import (
    CENT,
    SLASH_DATES,
    ZERO,
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
    make_reject,
    money,
    parse_csv_file,
    required,
    slash_date,
    slash_date_value,
)
from schemas.events import Department, MedicalSettlement, Origin, VisitType

DEPARTMENT: Final[Department] = "medical"
ENCODING: Final[Encoding] = "gbk"
COLUMNS: Final[list[str]] = [
    "结算单号",
    "身份证号",
    "姓名",
    "参保地区划",
    "就诊类别",
    "医疗机构名称",
    "入院日期",
    "结算日期",
    "医疗总费用",
    "统筹基金支付",
    "大病保险支付",
    "医疗救助支付",
    "个人自付",
    "结算类型",
    "原结算单号",
]
VISIT_TYPES: Final = ("普通门诊", "门诊慢特病", "住院")
SETTLEMENT_TYPES: Final = ("正常", "冲销")
_AMOUNTS: Final = ("医疗总费用", "统筹基金支付", "大病保险支付", "医疗救助支付", "个人自付")


# The fast path: one regex over the raw line of an ordinary (正常, non-negative) settlement.
# Anything it does not match, or that then fails a check, goes through parse_row_checked,
# the single authority on rejects, so both paths give identical results (tested).
# Reversals always take the full path; they are rare.
_AMOUNT = r"([0-9]{1,12}\.[0-9]{2})"
_DATE = r"([0-9]{4}/[0-9]{2}/[0-9]{2})"
_FAST = re.compile(
    r"([0-9A-Za-z][0-9A-Za-z_-]{0,63}),([0-9]{17}[0-9X]),[^,]*,([0-9]{6}),"
    r"(普通门诊|门诊慢特病|住院),[^,]*,"
    + _DATE
    + ","
    + _DATE
    + ","
    + ",".join([_AMOUNT] * 5)
    + r",正常,[^,]*"
)
_VALUES = itemgetter(*COLUMNS)


def fast_line(line: str, origin: Origin, ctx: ParseContext) -> MedicalSettlement | None:
    """The event for an ordinary valid line in ``COLUMNS`` order, else None."""
    m = _FAST.fullmatch(line)
    if m is None:
        return None
    sid, idn, county, visit, adm, stl, tot, bas, cri, ass, own = m.groups()
    person = ctx.pseudonyms.get(idn) or ctx.person_if_valid(idn)
    # Cache hits first (the common case); a miss is checked (and cached) once.
    admitted = SLASH_DATES.get(adm) or slash_date_value(adm)
    settled = SLASH_DATES.get(stl) or slash_date_value(stl)
    if person is None or admitted is None or settled is None or admitted > settled:
        return None
    total = ZERO if tot == "0.00" else Decimal(tot)
    basic = ZERO if bas == "0.00" else Decimal(bas)
    critical = ZERO if cri == "0.00" else Decimal(cri)
    assistance = ZERO if ass == "0.00" else Decimal(ass)
    oop = ZERO if own == "0.00" else Decimal(own)
    if abs(oop - (total - basic - critical - assistance)) > CENT:
        return None
    return MedicalSettlement(
        id=f"medical:{sid}",
        origin=origin,
        settlement_id=sid,
        person=person,
        insured_county=county,
        visit_type=cast(VisitType, visit),
        admitted=admitted,
        settled=settled,
        total=total,
        basic_insurance=basic,
        critical_illness=critical,
        medical_assistance=assistance,
        out_of_pocket=oop,
        reversal=False,
        reverses=None,
    )


def parse_row(row: Row, origin: Origin, ctx: ParseContext) -> MedicalSettlement | Reject:
    """One row (column name -> text) to an event or a Reject."""
    return fast_or_checked(row, origin, ctx, _VALUES, fast_line, parse_row_checked)


def parse_row_checked(row: Row, origin: Origin, ctx: ParseContext) -> MedicalSettlement | Reject:
    """The full check of every field, with a reason for the first problem found."""
    try:
        sid = required(row, "结算单号")
        idn = id_number(row)
        county = digits_field(row, "参保地区划", 6, "bad_region_code", "县级区划代码")
        visit = choice(row, "就诊类别", VISIT_TYPES, "unknown_visit_type")
        admitted = slash_date(row, "入院日期")
        settled = slash_date(row, "结算日期")
        total = money(row, "医疗总费用", "missing_total")
        basic = money(row, "统筹基金支付")
        critical = money(row, "大病保险支付")
        assistance = money(row, "医疗救助支付")
        oop = money(row, "个人自付")
        stype = choice(row, "结算类型", SETTLEMENT_TYPES, "unknown_settlement_type")
        reversal = stype == "冲销"
        amounts = (total, basic, critical, assistance, oop)
        if reversal:
            reverses: str | None = get(row, "原结算单号")
            if not reverses:
                raise RowError(
                    "reversal_without_original",
                    f"结算单 {sid} 的结算类型为“冲销”，但「原结算单号」为空："
                    "请填写被冲销的结算单号",
                )
            positive = [f"{c} {a}" for c, a in zip(_AMOUNTS, amounts, strict=True) if a > 0]
            if positive:
                raise RowError(
                    "positive_reversal",
                    f"结算单 {sid} 是冲销结算，金额应为负数（冲销原结算），但"
                    f"{'、'.join(positive)} 为正数",
                )
        else:
            reverses = None
            negative = [f"{c} {a}" for c, a in zip(_AMOUNTS, amounts, strict=True) if a < 0]
            if negative:
                raise RowError(
                    "negative_without_reversal",
                    f"结算单 {sid} 的结算类型为“正常”，但{'、'.join(negative)} 为负数；"
                    f"负数金额只允许出现在“冲销”结算中",
                )
        expected = total - basic - critical - assistance
        if abs(oop - expected) > CENT:
            raise RowError(
                "amounts_do_not_add_up",
                f"结算单 {sid} 的「个人自付」{oop} 不等于 医疗总费用 {total} − 统筹基金支付 {basic}"
                f" − 大病保险支付 {critical} − 医疗救助支付 {assistance} = {expected}，"
                f"相差 {abs(oop - expected)}",
            )
        if admitted > settled:
            raise RowError(
                "bad_date",
                f"结算单 {sid} 的「入院日期」{admitted:%Y/%m/%d} "
                f"晚于「结算日期」{settled:%Y/%m/%d}",
            )
    except RowError as e:
        return make_reject(origin, e, get(row, "姓名"), get(row, "身份证号"))
    return MedicalSettlement(
        id=f"medical:{sid}",
        origin=origin,
        settlement_id=sid,
        person=ctx.person(idn),
        insured_county=county,
        visit_type=cast(VisitType, visit),
        admitted=admitted,
        settled=settled,
        total=total,
        basic_insurance=basic,
        critical_illness=critical,
        medical_assistance=assistance,
        out_of_pocket=oop,
        reversal=reversal,
        reverses=reverses,
    )


def parse_file(path: Path, rel: str, ctx: ParseContext) -> Iterator[MedicalSettlement | Reject]:
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

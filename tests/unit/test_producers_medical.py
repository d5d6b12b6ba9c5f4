"""medical/YYYY-MM.csv rows: every reject code and the valid edge cases."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest

from fanpin.privacy import Pseudonymiser
from producers import medical
from producers.common import ParseContext, Reject
from schemas import encode
from schemas.events import MedicalSettlement, Origin

KEY = b"unit-test-pseudonym-key-0123"
NAME = "方强艳"
BASE = dict(
    zip(
        medical.COLUMNS,
        (
            "JS07000001839,99012219820719309X,方强艳,990122,普通门诊,白沙县人民医院,"
            "2025/04/22,2025/04/22,164.24,86.47,0.00,0.00,77.77,正常,"
        ).split(","),
        strict=True,
    )
)
ORIGIN = Origin("medical", "medical/2025-04.csv", 2)
PARSERS = [medical.parse_row, medical.parse_row_checked]


def ctx() -> ParseContext:
    return ParseContext(Pseudonymiser(KEY))


def _row(**changes: str) -> dict[str, str]:
    return {**BASE, **changes}


REVERSAL = _row(
    结算单号="JS07000018161",
    结算日期="2025/05/03",
    医疗总费用="-164.24",
    统筹基金支付="-86.47",
    大病保险支付="-0.00",
    医疗救助支付="-0.00",
    个人自付="-77.77",
    结算类型="冲销",
    原结算单号="JS07000001839",
)


@pytest.mark.parametrize("parse", PARSERS)
def test_valid_row_with_x_check_digit(parse) -> None:
    e = parse(BASE, ORIGIN, ctx())
    assert e == MedicalSettlement(
        id="medical:JS07000001839",
        origin=ORIGIN,
        settlement_id="JS07000001839",
        person=Pseudonymiser(KEY).person("99012219820719309X"),
        insured_county="990122",
        visit_type="普通门诊",
        admitted=dt.date(2025, 4, 22),
        settled=dt.date(2025, 4, 22),
        total=Decimal("164.24"),
        basic_insurance=Decimal("86.47"),
        critical_illness=Decimal("0.00"),
        medical_assistance=Decimal("0.00"),
        out_of_pocket=Decimal("77.77"),
        reversal=False,
        reverses=None,
    )
    data = encode(e)
    assert b"99012219820719309" not in data and NAME.encode() not in data


@pytest.mark.parametrize("parse", PARSERS)
def test_lower_case_x_is_the_same_person(parse) -> None:
    upper = parse(BASE, ORIGIN, ctx())
    lower = parse(_row(身份证号="99012219820719309x"), ORIGIN, ctx())
    assert isinstance(lower, MedicalSettlement) and lower == upper


@pytest.mark.parametrize("parse", PARSERS)
def test_reversal_with_negative_amounts(parse) -> None:
    e = parse(REVERSAL, ORIGIN, ctx())
    assert isinstance(e, MedicalSettlement), e
    assert e.reversal and e.reverses == "JS07000001839"
    assert e.total == Decimal("-164.24") and e.out_of_pocket == Decimal("-77.77")
    # -0.00 counts as zero
    assert e.critical_illness == 0 and str(e.critical_illness) == "0.00"
    assert e.id == "medical:JS07000018161"


@pytest.mark.parametrize("parse", PARSERS)
def test_minus_zero_on_a_normal_settlement_is_not_negative(parse) -> None:
    e = parse(_row(大病保险支付="-0.00", 医疗救助支付="-0.00"), ORIGIN, ctx())
    assert isinstance(e, MedicalSettlement), e
    assert e == parse(BASE, ORIGIN, ctx())


@pytest.mark.parametrize("parse", PARSERS)
def test_late_settlement_is_valid(parse) -> None:
    late = Origin("medical", "medical/2025-05.csv", 17)
    e = parse(_row(入院日期="2025/04/20", 结算日期="2025/04/28"), late, ctx())
    assert isinstance(e, MedicalSettlement) and e.settled == dt.date(2025, 4, 28)


@pytest.mark.parametrize("parse", PARSERS)
def test_inpatient_stay_over_months(parse) -> None:
    row = _row(就诊类别="住院", 入院日期="2025/03/28", 结算日期="2025/04/09")
    e = parse(row, ORIGIN, ctx())
    assert isinstance(e, MedicalSettlement) and e.visit_type == "住院"


@pytest.mark.parametrize("parse", PARSERS)
def test_duplicate_settlement_gives_the_same_event(parse) -> None:
    c = ctx()
    first = parse(BASE, ORIGIN, c)
    again = parse(dict(BASE), ORIGIN, c)
    assert again == first and encode(again) == encode(first)
    # The same settlement in another line or file: same id and content, its own origin.
    elsewhere = Origin("medical", "medical/2025-05.csv", 40)
    dup = parse(dict(BASE), elsewhere, ctx())
    assert isinstance(dup, MedicalSettlement) and dup.id == first.id
    assert msgspec.structs.replace(dup, origin=ORIGIN) == first


@pytest.mark.parametrize("parse", PARSERS)
def test_within_a_cent(parse) -> None:
    assert isinstance(parse(_row(个人自付="77.78"), ORIGIN, ctx()), MedicalSettlement)
    assert isinstance(parse(_row(个人自付="77.76"), ORIGIN, ctx()), MedicalSettlement)


REJECTS = [
    ("amounts_do_not_add_up", _row(个人自付="201.22")),
    ("amounts_do_not_add_up", _row(个人自付="77.79")),
    ("amounts_do_not_add_up", {**REVERSAL, "个人自付": "-70.00"}),
    ("bad_id_checksum", _row(身份证号="990122198207193090")),
    ("bad_id_checksum", _row(身份证号="990122196412155051")),
    ("bad_id_format", _row(身份证号="99012219820719309")),
    ("bad_id_format", _row(身份证号="9901221982071930999")),
    ("bad_id_format", _row(身份证号="99012219821319309X")),  # month 13
    ("bad_id_format", _row(身份证号="99012219820230309X")),  # 30 February
    ("bad_id_format", _row(身份证号="9901221982071930Y9")),
    ("missing_field", _row(身份证号="")),
    ("missing_total", _row(医疗总费用="")),
    ("missing_field", _row(统筹基金支付="")),
    ("missing_field", _row(结算单号="")),
    ("missing_field", _row(结算类型="")),
    ("non_numeric_amount", _row(个人自付="七十七")),
    ("non_numeric_amount", _row(医疗总费用="164.24元")),
    ("bad_date", _row(结算日期="2026/13/45")),
    ("bad_date", _row(结算日期="2025/02/30")),
    ("bad_date", _row(入院日期="2025-04-22")),
    ("bad_date", _row(入院日期="20250422")),
    ("bad_date", _row(入院日期="2025/04/23")),  # admitted after settled
    ("missing_field", _row(入院日期="")),
    (
        "negative_without_reversal",
        _row(医疗总费用="-164.24", 统筹基金支付="-86.47", 个人自付="-77.77"),
    ),
    ("negative_without_reversal", _row(个人自付="-77.77", 医疗总费用="8.70")),
    ("reversal_without_original", {**REVERSAL, "原结算单号": ""}),
    (
        "positive_reversal",
        {**REVERSAL, "医疗总费用": "164.24", "统筹基金支付": "86.47", "个人自付": "77.77"},
    ),
    ("unknown_visit_type", _row(就诊类别="急诊")),
    ("unknown_settlement_type", _row(结算类型="退费")),
    ("bad_region_code", _row(参保地区划="99012")),
]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(("code", "row"), REJECTS)
def test_rejects(parse, code: str, row: dict[str, str]) -> None:
    r = parse(row, ORIGIN, ctx())
    assert isinstance(r, Reject), r
    assert (r.file, r.line, r.code) == ("medical/2025-04.csv", 2, code), r.reason
    assert NAME not in r.message
    assert "19820719" not in r.message  # birth date part of the ID number


def test_bad_checksum_message_is_masked_and_actionable() -> None:
    r = medical.parse_row(_row(身份证号="990122196412155051"), ORIGIN, ctx())
    assert isinstance(r, Reject)
    assert r.message == "身份证号校验位错误：990122********5051 的第18位应为 0"


def test_messages_name_column_and_value() -> None:
    r = medical.parse_row(_row(结算日期="2026/13/45"), ORIGIN, ctx())
    assert isinstance(r, Reject) and "结算日期" in r.message and "2026/13/45" in r.message
    r = medical.parse_row(_row(个人自付="201.22"), ORIGIN, ctx())
    assert isinstance(r, Reject) and "JS07000001839" in r.message and "201.22" in r.message
    r = medical.parse_row(_row(医疗总费用=""), ORIGIN, ctx())
    assert isinstance(r, Reject) and "医疗总费用" in r.message


def test_name_in_a_wrong_column_is_not_echoed() -> None:
    r = medical.parse_row(_row(就诊类别=NAME), ORIGIN, ctx())
    assert isinstance(r, Reject) and r.code == "unknown_visit_type"
    assert NAME not in r.message and "***" in r.message
    r = medical.parse_row(_row(结算日期="99012219820719309X"), ORIGIN, ctx())
    assert isinstance(r, Reject) and r.code == "bad_date"
    assert "99012219820719309X" not in r.message and "990122********309X" in r.message

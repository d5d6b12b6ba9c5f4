"""income/YYYY-MM.csv rows: every reject code and the valid edge cases."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fanpin.privacy import Pseudonymiser
from producers import income
from producers.common import ParseContext, Reject
from schemas import encode
from schemas.events import IncomeReport, Origin

HOUSEHOLD = "9901220020060006"
BASE = dict(
    zip(
        income.COLUMNS,
        f"{HOUSEHOLD},990122002006,2025-04,2,8929.45,1266.68,0.00,242.08,10438.21".split(","),
        strict=True,
    )
)
ORIGIN = Origin("rural", "income/2025-04.csv", 3)


def ctx(known: tuple[str, ...] | None = (HOUSEHOLD,)) -> ParseContext:
    households = None if known is None else set(known)
    return ParseContext(Pseudonymiser(b"unit-test-pseudonym-key-0123"), households)


PARSERS = [income.parse_row, income.parse_row_checked]


@pytest.mark.parametrize("parse", PARSERS)
def test_valid_row(parse) -> None:
    e = parse(BASE, ORIGIN, ctx())
    assert e == IncomeReport(
        id=f"income:{HOUSEHOLD}:2025-04",
        origin=ORIGIN,
        household_id=HOUSEHOLD,
        region_code="990122002006",
        month="2025-04",
        household_size=2,
        wages=Decimal("8929.45"),
        business=Decimal("1266.68"),
        property=Decimal("0.00"),
        transfers=Decimal("242.08"),
        total=Decimal("10438.21"),
    )
    assert b'"total":"10438.21"' in encode(e)


def _row(**changes: str) -> dict[str, str]:
    return {**BASE, **changes}


REJECTS = [
    ("total_mismatch", _row(家庭纯收入="10938.21")),
    ("total_mismatch", _row(家庭纯收入="10438.23")),
    ("non_numeric_amount", _row(工资性收入="三千")),
    ("non_numeric_amount", _row(工资性收入="8,929.45")),
    ("non_numeric_amount", _row(工资性收入="8929.451")),
    ("non_numeric_amount", _row(工资性收入="1e3")),
    ("non_numeric_amount", _row(工资性收入="NaN")),
    ("non_numeric_amount", _row(工资性收入="Infinity")),
    ("non_numeric_amount", _row(工资性收入="８９２９.４５")),  # full-width digits
    ("non_numeric_amount", _row(工资性收入="+8929.45")),
    ("non_numeric_amount", _row(工资性收入=".45")),
    ("non_numeric_amount", _row(家庭纯收入="一万")),
    ("amount_out_of_range", _row(工资性收入="1234567890123.00")),
    ("missing_field", _row(经营净收入="")),
    ("missing_field", _row(户编号="  ")),
    ("missing_total", _row(家庭纯收入="")),
    ("unknown_household", _row(户编号="9901220020069999")),
    ("bad_month", _row(统计月份="2026-00")),
    ("bad_month", _row(统计月份="2026-13")),
    ("bad_month", _row(统计月份="2026/05")),
    ("bad_month", _row(统计月份="202605")),
    ("bad_month", _row(统计月份="2026-5")),
    ("bad_household_number", _row(户编号="990122002006000")),
    ("bad_household_number", _row(户编号="99012200200600０6")),
    ("bad_region_code", _row(行政区划代码="99012200200")),
    ("bad_size", _row(家庭人口数="0")),
    ("bad_size", _row(家庭人口数="两")),
    ("bad_size", _row(家庭人口数="-1")),
]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(("code", "row"), REJECTS)
def test_rejects(parse, code: str, row: dict[str, str]) -> None:
    r = parse(row, ORIGIN, ctx())
    assert isinstance(r, Reject), r
    assert (r.file, r.line, r.code) == ("income/2025-04.csv", 3, code), r.reason
    assert r.reason.startswith(f"{code}: ")


def test_messages_name_the_column_and_value() -> None:
    r = income.parse_row(_row(工资性收入="三千"), ORIGIN, ctx())
    assert isinstance(r, Reject)
    assert "工资性收入" in r.message and "三千" in r.message
    r = income.parse_row(_row(家庭纯收入="10938.21"), ORIGIN, ctx())
    assert isinstance(r, Reject)
    assert "10938.21" in r.message and "10438.21" in r.message and "500.00" in r.message
    r = income.parse_row(_row(统计月份="2026-00"), ORIGIN, ctx())
    assert isinstance(r, Reject) and "2026-00" in r.message and "统计月份" in r.message
    r = income.parse_row(_row(户编号="9901220020069999"), ORIGIN, ctx())
    assert isinstance(r, Reject) and "9901220020069999" in r.message


VALID = [
    # within 0.01
    _row(家庭纯收入="10438.22"),
    _row(家庭纯收入="10438.20"),
    # negative net business income (a loss) is valid, total follows
    _row(经营净收入="-266.68", 家庭纯收入="8904.85"),
    # -0.00 counts as zero
    _row(财产净收入="-0.00"),
    # whole yuan and one decimal are exact amounts too
    _row(工资性收入="8929", 家庭纯收入="10437.76"),
    _row(工资性收入="8929.5", 家庭纯收入="10438.26"),
    # surrounding whitespace
    _row(工资性收入=" 8929.45 ", 统计月份=" 2025-04"),
    # a Spring Festival month with no wages
    _row(工资性收入="0.00", 家庭纯收入="1508.76"),
]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("row", VALID)
def test_valid_edge_cases(parse, row: dict[str, str]) -> None:
    e = parse(row, ORIGIN, ctx())
    assert isinstance(e, IncomeReport), e
    for amount in (e.wages, e.business, e.property, e.transfers, e.total):
        assert amount.as_tuple().exponent == -2
        assert str(amount) != "-0.00"


def test_minus_zero_is_zero() -> None:
    e = income.parse_row(_row(财产净收入="-0.00"), ORIGIN, ctx())
    assert isinstance(e, IncomeReport)
    assert e.property == 0 and str(e.property) == "0.00"
    assert e == income.parse_row(BASE, ORIGIN, ctx())


def test_unknown_household_check_is_skipped_without_a_roster() -> None:
    row = _row(户编号="9901220020069999")
    assert isinstance(income.parse_row(row, ORIGIN, ctx(None)), IncomeReport)


def test_same_row_twice_gives_equal_events() -> None:
    c = ctx()
    assert income.parse_row(dict(BASE), ORIGIN, c) == income.parse_row(dict(BASE), ORIGIN, c)
    assert encode(income.parse_row(BASE, ORIGIN, c)) == encode(
        income.parse_row(BASE, ORIGIN, ctx())
    )


def test_missing_keys_are_missing_fields() -> None:
    row = dict(BASE)
    del row["转移净收入"]
    r = income.parse_row(row, ORIGIN, ctx())
    assert isinstance(r, Reject) and r.code == "missing_field" and "转移净收入" in r.message

"""employment/YYYY-MM.csv rows: every reject code and the valid edge cases."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from fanpin.privacy import Pseudonymiser
from producers import employment
from producers.common import ParseContext, Reject
from schemas import encode
from schemas.events import EmploymentEvent, Origin

KEY = b"unit-test-pseudonym-key-0123"
NAME = "谭超梅"
BASE = dict(
    zip(
        employment.COLUMNS,
        "RS07000018048,990123196802014815,谭超梅,990123001006,工资发放,20250415,宁波某制衣厂,3334.32,省外".split(
            ","
        ),
        strict=True,
    )
)
ORIGIN = Origin("employment", "employment/2025-04.csv", 2)
PARSERS = [employment.parse_row, employment.parse_row_checked]


def ctx() -> ParseContext:
    return ParseContext(Pseudonymiser(KEY))


def _row(**changes: str) -> dict[str, str]:
    return {**BASE, **changes}


@pytest.mark.parametrize("parse", PARSERS)
def test_valid_wage(parse) -> None:
    e = parse(BASE, ORIGIN, ctx())
    assert e == EmploymentEvent(
        id="employment:RS07000018048",
        origin=ORIGIN,
        business_id="RS07000018048",
        person=Pseudonymiser(KEY).person("990123196802014815"),
        region_code="990123001006",
        business_type="工资发放",
        date=dt.date(2025, 4, 15),
        employer="宁波某制衣厂",
        amount=Decimal("3334.32"),
        work_place="省外",
    )
    data = encode(e)
    assert b"990123196802014815" not in data and NAME.encode() not in data


VALID = [
    _row(业务类型="就业登记", 金额=""),
    _row(业务类型="解除劳动合同", 金额=""),
    _row(业务类型="失业登记", 金额="", 用工单位=""),
    _row(业务类型="就业登记", 金额="3000.00"),  # an amount where none is needed is kept
    _row(就业地区=""),  # the schema allows an unknown work place
    _row(就业地区="县内"),
    _row(就业地区="省内县外"),
    _row(金额="0.00"),
    _row(身份证号="99012219911008334x"),
    _row(身份证号="99012219911008334X"),
    _row(用工单位=" 宁波某制衣厂 "),
]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("row", VALID)
def test_valid_edge_cases(parse, row: dict[str, str]) -> None:
    e = parse(row, ORIGIN, ctx())
    assert isinstance(e, EmploymentEvent), e
    assert e.employer == row["用工单位"].strip()
    assert e.amount == (Decimal(row["金额"]) if row["金额"] else None)
    assert e.work_place == (row["就业地区"] or None)


REJECTS = [
    ("wage_without_amount", _row(金额="")),
    ("unknown_business_type", _row(业务类型="社保转移")),
    ("missing_field", _row(业务类型="")),
    ("bad_date", _row(业务日期="20261345")),
    ("bad_date", _row(业务日期="2025-04-15")),
    ("bad_date", _row(业务日期="20250231")),
    ("bad_date", _row(业务日期="2025041")),
    ("bad_id_checksum", _row(身份证号="990123196802014810")),
    ("bad_id_format", _row(身份证号="99012319680201481")),
    ("missing_field", _row(业务流水号="")),
    ("non_numeric_amount", _row(金额="三千")),
    ("negative_amount", _row(金额="-3334.32")),
    ("unknown_work_place", _row(就业地区="国外")),
    ("bad_region_code", _row(行政区划代码="990123")),
]


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(("code", "row"), REJECTS)
def test_rejects(parse, code: str, row: dict[str, str]) -> None:
    r = parse(row, ORIGIN, ctx())
    assert isinstance(r, Reject), r
    assert (r.file, r.line, r.code) == ("employment/2025-04.csv", 2, code), r.reason
    assert NAME not in r.message and "19680201" not in r.message


def test_messages() -> None:
    r = employment.parse_row(_row(业务类型="社保转移"), ORIGIN, ctx())
    assert isinstance(r, Reject) and "社保转移" in r.message and "业务类型" in r.message
    r = employment.parse_row(_row(金额=""), ORIGIN, ctx())
    assert isinstance(r, Reject) and "工资发放" in r.message and "金额" in r.message
    r = employment.parse_row(_row(业务日期="20261345"), ORIGIN, ctx())
    assert isinstance(r, Reject) and "20261345" in r.message and "YYYYMMDD" in r.message

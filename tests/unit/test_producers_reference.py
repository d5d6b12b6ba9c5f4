"""regions.csv, thresholds.csv and roster.csv rows."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fanpin.privacy import Pseudonymiser
from producers import reference, roster
from producers.common import ParseContext, Reject
from schemas import encode
from schemas.events import MonitoringLine, Origin, Region, RosterMember

KEY = b"unit-test-pseudonym-key-0123"


def ctx() -> ParseContext:
    return ParseContext(Pseudonymiser(KEY))


# --------------------------------------------------------------------------------------
# regions.csv

R_ORIGIN = Origin("statistics", "regions.csv", 5)
R_BASE = {"行政区划代码": "990121001000", "名称": "城关镇", "级别": "乡镇"}


def test_region() -> None:
    e = reference.regions.parse_row(R_BASE, R_ORIGIN, ctx())
    assert e == Region(
        id="region:990121001000", origin=R_ORIGIN, code="990121001000", name="城关镇", level="乡镇"
    )
    assert reference.regions.DEPARTMENT == "statistics"
    assert reference.regions.COLUMNS == ["行政区划代码", "名称", "级别"]


@pytest.mark.parametrize(
    ("code", "change"),
    [
        ("bad_region_code", {"行政区划代码": "9901210010"}),
        ("missing_field", {"行政区划代码": ""}),
        ("missing_field", {"名称": ""}),
        ("unknown_region_level", {"级别": "街道"}),
    ],
)
def test_region_rejects(code: str, change: dict[str, str]) -> None:
    r = reference.regions.parse_row({**R_BASE, **change}, R_ORIGIN, ctx())
    assert isinstance(r, Reject) and r.code == code and (r.file, r.line) == ("regions.csv", 5)


# --------------------------------------------------------------------------------------
# thresholds.csv

T_ORIGIN = Origin("rural", "thresholds.csv", 3)


@pytest.mark.parametrize(("text", "value"), [("8300", "8300.00"), ("8300.5", "8300.50")])
def test_threshold(text: str, value: str) -> None:
    e = reference.thresholds.parse_row({"年度": "2024", "监测范围": text}, T_ORIGIN, ctx())
    assert e == MonitoringLine(id="line:2024", origin=T_ORIGIN, year=2024, line=Decimal(value))
    assert f'"line":"{value}"'.encode() in encode(e)
    assert reference.thresholds.DEPARTMENT == "rural"


@pytest.mark.parametrize(
    ("code", "row"),
    [
        ("bad_year", {"年度": "24", "监测范围": "8300"}),
        ("bad_year", {"年度": "二〇二四", "监测范围": "8300"}),
        ("missing_field", {"年度": "", "监测范围": "8300"}),
        ("non_numeric_amount", {"年度": "2024", "监测范围": "八千三"}),
        ("missing_field", {"年度": "2024", "监测范围": ""}),
        ("bad_monitoring_line", {"年度": "2024", "监测范围": "0"}),
        ("bad_monitoring_line", {"年度": "2024", "监测范围": "-8300"}),
    ],
)
def test_threshold_rejects(code: str, row: dict[str, str]) -> None:
    r = reference.thresholds.parse_row(row, T_ORIGIN, ctx())
    assert isinstance(r, Reject) and r.code == code


# --------------------------------------------------------------------------------------
# roster.csv

NAME = "谭英娟"
IDN = "990122198904020880"
RO_ORIGIN = Origin("rural", "roster.csv", 3)
RO_BASE = dict(
    zip(
        roster.COLUMNS,
        f"9901220030060001,990122003006,一般农户,4,2,{NAME},{IDN},配偶,技能劳动力".split(","),
        strict=True,
    )
)


def test_roster_member() -> None:
    e = roster.parse_row(RO_BASE, RO_ORIGIN, ctx())
    assert e == RosterMember(
        id="roster:9901220030060001:2",
        origin=RO_ORIGIN,
        household_id="9901220030060001",
        region_code="990122003006",
        household_type="一般农户",
        household_size=4,
        member_no=2,
        person=Pseudonymiser(KEY).person(IDN),
        relation="配偶",
        labour="技能劳动力",
    )
    data = encode(e)
    assert IDN.encode() not in data and NAME.encode() not in data


def test_roster_person_matches_other_departments() -> None:
    """The same key gives the same pseudonym in every feed (that is how people join)."""
    a = roster.parse_row(RO_BASE, RO_ORIGIN, ctx())
    b = roster.parse_row({**RO_BASE, "身份证号": IDN.lower()}, RO_ORIGIN, ctx())
    assert isinstance(a, RosterMember) and isinstance(b, RosterMember) and a.person == b.person


@pytest.mark.parametrize(
    ("code", "change"),
    [
        ("bad_household_number", {"户编号": "99012200300600011"}),
        ("bad_region_code", {"行政区划代码": "99012200300"}),
        ("unknown_household_type", {"户类型": "低保户"}),
        ("bad_size", {"家庭人口数": "0"}),
        ("bad_member_no", {"成员序号": "第二"}),
        ("bad_id_checksum", {"身份证号": "990122198904020881"}),
        ("bad_id_format", {"身份证号": "99012219890402088"}),
        ("missing_field", {"身份证号": ""}),
        ("unknown_labour", {"劳动技能": "半劳动力"}),
    ],
)
def test_roster_rejects(code: str, change: dict[str, str]) -> None:
    r = roster.parse_row({**RO_BASE, **change}, RO_ORIGIN, ctx())
    assert isinstance(r, Reject) and r.code == code, r
    assert NAME not in r.message and IDN not in r.message


def test_roster_name_is_optional_and_dropped() -> None:
    e = roster.parse_row({**RO_BASE, "姓名": ""}, RO_ORIGIN, ctx())
    assert e == roster.parse_row(RO_BASE, RO_ORIGIN, ctx())

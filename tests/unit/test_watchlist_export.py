"""CSV export: columns, BOM, formula-injection neutralisation, privacy."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from consumers.watchlist.export import COLUMNS, _number, export_csv, export_xlsx, neutralise
from consumers.watchlist.service import EntryFilter, record_alerts
from tests.unit.test_watchlist_helpers import (
    NOW,
    VILLAGE_A,
    VILLAGE_B,
    household,
    make_alert,
    sqlite_engine,
)

EXPECTED_COLUMNS = [
    "户编号", "行政区划代码", "风险类型", "预警规则", "预警月份", "严重程度", "状态",
    "户类型", "预警次数", "最近预警月份", "预计人均纯收入", "监测线",
]
ID_NUMBER = "990122199209043751"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine: Engine = sqlite_engine(tmp_path)
    with Session(engine) as s:
        yield s
    engine.dispose()


def read_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:], newline="")))


def export_text(session: Session, *, health: bool = False, **filters: object) -> str:
    buf = io.StringIO(newline="")
    export_csv(session=session, out=buf, filters=EntryFilter(**filters),  # type: ignore[arg-type]
               health=health)
    return buf.getvalue()


def test_columns_bom_and_one_row_per_entry(session: Session, tmp_path: Path) -> None:
    record_alerts(
        session=session,
        alerts=[
            make_alert(household(VILLAGE_A, 1), "2026-03", severity="中",
                       projected_per_capita="7100.50"),
            make_alert(household(VILLAGE_A, 1), "2026-05", severity="高",
                       projected_per_capita="-120.50",
                       rules=(("medical-spike", "因病", "住院自付 15000 元"),)),
            make_alert(household(VILLAGE_B, 2), "2026-04", risk_type="因务工就业不稳",
                       household_type="一般农户", severity="低"),
        ],
        now=NOW,
    )
    out = tmp_path / "out" / "watchlist.csv"
    # The officers' working sheet keeps the health details.
    assert export_csv(session=session, out=out, health=True) == 2
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\xef\xbb\xbf") == 1
    text = raw.decode("utf-8")
    assert text.splitlines()[0].lstrip("\ufeff").split(",") == EXPECTED_COLUMNS
    assert list(COLUMNS) == EXPECTED_COLUMNS
    assert "\r\n" in text
    rows = read_csv(text)
    assert len(rows) == 2
    first = rows[0]
    assert first["户编号"] == household(VILLAGE_A, 1)
    assert first["行政区划代码"] == VILLAGE_A
    assert first["风险类型"] == "因病"
    assert first["预警规则"] == "below_line;medical-spike"
    assert first["预警月份"] == "2026-03"
    assert first["严重程度"] == "高"
    assert first["状态"] == "新预警"
    assert first["户类型"] == "脱贫户"
    assert first["预警次数"] == "2"
    assert first["最近预警月份"] == "2026-05"
    assert first["预计人均纯收入"] == "-120.50"  # a negative number stays a number
    assert first["监测线"] == "8300"
    assert rows[1]["户类型"] == "一般农户"
    assert rows[1]["风险类型"] == "因务工就业不稳"

    # The default (and public) sheet drops illness as a risk type and the medical rule.
    default = read_csv(export_text(session))
    assert [r["户编号"] for r in default] == [r["户编号"] for r in rows]
    assert default[0]["风险类型"] == ""
    assert default[0]["预警规则"] == "below_line"
    assert default[1] == rows[1]


def test_the_stream_and_the_file_hold_the_same(session: Session, tmp_path: Path) -> None:
    record_alerts(session=session, alerts=[make_alert(household(VILLAGE_A, 1))], now=NOW)
    out = tmp_path / "w.csv"
    export_csv(session=session, out=out)
    assert out.read_bytes().decode("utf-8") == export_text(session)


def test_empty_watch_list_gives_the_header(session: Session) -> None:
    assert read_csv(export_text(session)) == []
    assert export_text(session).strip() == "\ufeff" + ",".join(EXPECTED_COLUMNS)


def test_export_filters(session: Session) -> None:
    record_alerts(
        session=session,
        alerts=[make_alert(household(VILLAGE_A, 1), severity="高"),
                make_alert(household(VILLAGE_B, 2), severity="低")],
        now=NOW,
    )
    rows = read_csv(export_text(session, region_prefix=VILLAGE_B))
    assert [r["户编号"] for r in rows] == [household(VILLAGE_B, 2)]
    rows = read_csv(export_text(session, severity="高"))
    assert [r["户编号"] for r in rows] == [household(VILLAGE_A, 1)]
    assert read_csv(export_text(session, region_prefix="' OR '1'='1")) == []
    assert read_csv(export_text(session, nothing=True)) == []


@pytest.mark.parametrize("field", ["region_prefix", "risk_type", "severity", "state",
                                   "assignee", "flag"])
@pytest.mark.parametrize("value", ["' OR '1'='1", "%", "_", "\\",
                                   "'; DROP TABLE watchlist_entries; --", "\x00"])
def test_export_binds_hostile_filter_values(session: Session, field: str, value: str) -> None:
    record_alerts(session=session, alerts=[make_alert(household(VILLAGE_A, 1))], now=NOW)
    assert read_csv(export_text(session, **{field: value})) == []  # type: ignore[arg-type]
    data = io.BytesIO()
    assert export_xlsx(session=session, out=data,
                       filters=EntryFilter(**{field: value})) == 0  # type: ignore[arg-type]
    assert len(read_csv(export_text(session))) == 1  # the table is still there


@pytest.mark.parametrize("evil", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)",
                                  "\tcmd", "\rcmd", "＝1+1"])
def test_formula_cells_are_neutralised(session: Session, evil: str) -> None:
    alert = make_alert(
        household(VILLAGE_A, 1),
        rules=((evil, "因病", "x"),),
        household_type=evil,
        region_code=evil,
    )
    record_alerts(session=session, alerts=[alert], now=NOW)
    row = read_csv(export_text(session))[0]
    assert row["预警规则"] == "'" + evil
    assert row["户类型"] == "'" + evil
    assert row["行政区划代码"] == "'" + evil
    for value in row.values():
        assert not value.startswith(("=", "+", "-", "@", "\t", "\r")) or value == "-120.50"


def test_cell_helpers() -> None:
    assert neutralise("=1") == "'=1"
    assert neutralise("正常") == "正常"
    assert neutralise("") == ""
    assert _number("-120.50") == "-120.50"
    assert _number(3) == "3"
    assert _number("=1+2") == "'=1+2"
    assert _number("-1+cmd|' /C calc'!A0") == "'-1+cmd|' /C calc'!A0"
    assert _number("NaN") == "NaN"  # not a number, kept as (harmless) text


def test_no_health_details_or_id_numbers(session: Session) -> None:
    alert = make_alert(
        household(VILLAGE_A, 1),
        rules=(("medical-spike", "因病", f"{ID_NUMBER} 住院 肺癌 自付 15000 元 县人民医院"),),
    )
    record_alerts(session=session, alerts=[alert], now=NOW)
    # Not even the officers' working sheet carries the rule's free text or the amounts.
    for health in (False, True):
        text = export_text(session, health=health)
        for secret in (ID_NUMBER, "住院", "肺癌", "医院", "15000", "10000.00"):
            assert secret not in text  # 10000.00 is the rigid (medical) spending


HEALTH_WORDS = ("因病", "因残", "medical-spike", "illness")


def health_alerts() -> list:
    return [
        make_alert(household(VILLAGE_A, 1), "2026-03", risk_type="因病", severity="高",
                   rules=(("medical-spike", "因病", "自付 15000 元"),
                          ("illness", "因病", "重病"),
                          ("below_line", "因务工就业不稳", "低于监测线"))),
        make_alert(household(VILLAGE_A, 2), "2026-04", risk_type="因残",
                   rules=(("below_line", "因残", "低于监测线"),)),
        make_alert(household(VILLAGE_B, 3), "2026-04", risk_type="缺劳动力",
                   rules=(("below_line", "缺劳动力", "低于监测线"),)),
    ]


def xlsx_text(session: Session, **kwargs: object) -> tuple[int, str]:
    from openpyxl import load_workbook

    data = io.BytesIO()
    n = export_xlsx(session=session, out=data, **kwargs)  # type: ignore[arg-type]
    sheet = load_workbook(io.BytesIO(data.getvalue()), read_only=True)["监测预警清单"]
    return n, "\n".join(",".join("" if c is None else str(c) for c in row)
                        for row in sheet.iter_rows(values_only=True))


def test_default_export_never_carries_health_details(session: Session) -> None:
    record_alerts(session=session, alerts=health_alerts(), now=NOW)
    public = export_text(session)
    assert public == export_text(session, health=False)
    n, public_xlsx = xlsx_text(session)
    assert n == 3
    for text in (public, public_xlsx):
        for word in HEALTH_WORDS:
            assert word not in text, word
    rows = read_csv(public)
    assert len(rows) == 3  # the households stay listed, without the health reasons
    assert [r["风险类型"] for r in rows] == ["因务工就业不稳", "", "缺劳动力"]
    assert [r["预警规则"] for r in rows] == ["below_line", "below_line", "below_line"]


def test_working_export_keeps_health_details(session: Session) -> None:
    record_alerts(session=session, alerts=health_alerts(), now=NOW)
    working = export_text(session, health=True)
    _, working_xlsx = xlsx_text(session, health=True)
    for text in (working, working_xlsx):
        for word in HEALTH_WORDS:
            assert word in text, word
    rows = read_csv(working)
    assert rows[0]["风险类型"] == "因病、因务工就业不稳"  # the main one first
    assert rows[0]["预警规则"] == "below_line;illness;medical-spike"
    assert rows[1]["风险类型"] == "因残"

"""The household charts on the watch-list detail page (consumers.watchlist.charts)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from consumers.watchlist.charts import (
    employment_chart,
    household_series,
    income_chart,
    oop_chart,
)
from schemas.events import Alert, Evidence, MonthFigures

SVG = "{http://www.w3.org/2000/svg}"
D = Decimal


def figures(month: str, income: str | None = "1000", oop: str = "0", losses: int = 0,
            starts: int = 0) -> MonthFigures:
    return MonthFigures(month, None if income is None else D(income), D(oop), losses, starts)


def alert(month: str, history: list[MonthFigures]) -> Alert:
    return Alert(
        id=f"a-{month}", household_id="9901210010010001", region_code="990121001001",
        household_type="监测户", month=month, rule_version="r2/test", risk_type="其他",
        severity="中", reasons=[],
        evidence=Evidence(
            monitoring_line=D("7200"), line_year=2025, household_size=3,
            projected_income_12m=D(0), rigid_spending_12m=D(0), projected_per_capita=D(0),
            baseline_income_12m=D(0), months_of_history=12, history=history))


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed, or this raises
    assert root.tag == f"{SVG}svg"
    assert root.get("width") == "100%" and root.get("height") is None  # scales on a phone
    assert root.get("viewBox", "").startswith("0 0 ")
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    assert title is not None and title.text
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(el.itertext()) for el in root.iter(f"{SVG}text")]


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [el for el in root.iter(f"{SVG}{tag}") if cls in (el.get("class") or "").split()]


# Household of 3 at a 7200 line: 1800 yuan a month. 2025-03 not reported, 2025-04 absent.
HISTORY = [
    figures("2025-01", "2000", oop="120.50", starts=1),
    figures("2025-02", "1500"),
    figures("2025-03", None, oop="4000", losses=2),
    figures("2025-05", "1700.99", losses=1, starts=1),
    figures("2025-06", "1800"),
    figures("2025-07", "2500"),
]


# --- the series ---------------------------------------------------------------------------

def test_household_series_merges_alerts_later_month_wins() -> None:
    older = alert("2025-05", [figures("2025-04", "900"), figures("2025-05", "800", oop="50")])
    newer = alert("2025-06", [figures("2025-05", "800", oop="0"), figures("2025-06", "700")])
    series = household_series([newer, older])  # order given does not matter, months do
    assert [f.month for f in series] == ["2025-04", "2025-05", "2025-06"]
    assert series[1].out_of_pocket == D(0)  # the later alert saw the reversal
    assert household_series([]) == []
    assert household_series([alert("2025-01", [])]) == []  # alerts from before history


# --- income -------------------------------------------------------------------------------

def test_income_chart_points_gaps_and_the_line() -> None:
    root = parse(income_chart(HISTORY, D("7200"), 3, "zh"))
    points = by_class(root, "circle", "point")
    assert len(points) == 5  # one per reported month
    below = by_class(root, "circle", "below")
    tips = ["".join(p.itertext()) for p in below]
    assert [t.split(":")[0] for t in tips] == ["2025-02", "2025-05"]  # 1800 itself is not below
    assert all(p.get("fill") == "#d62728" for p in below)
    assert all(p.get("fill") != "#d62728" for p in points if p not in below)
    line = by_class(root, "line", "monitoring-line")
    assert len(line) == 1
    line_y = float(line[0].get("y1", "nan"))
    assert all(float(p.get("cy", "nan")) > line_y for p in below)  # drawn under the line
    assert "1,800.00" in "".join(line[0].itertext())
    # 2025-03 (no report) and 2025-04 (no figures) break the line: 01-02 and 05-07.
    runs = by_class(root, "polyline", "income")
    assert [len(r.get("points", "").split()) for r in runs] == [2, 3]
    labels = texts(root)
    for word in ("月度家庭纯收入", "低于监测线"):
        assert word in labels
    assert any("监测线（按户月均）" in t and "1,800 元" in t for t in labels)
    assert "2025-07" in labels  # the latest month is always labelled
    desc = root.find(f"{SVG}desc")
    assert desc is not None and "5 个月中有 2 个月" in (desc.text or "")


def test_income_chart_in_english() -> None:
    labels = texts(parse(income_chart(HISTORY, D("7200"), 3, "en")))
    assert any("Household net income" in t for t in labels)
    assert any("Monitoring line" in t for t in labels)
    assert not any("监测线" in t for t in labels)


def test_a_month_of_negative_income_stays_on_the_chart() -> None:
    root = parse(income_chart([figures("2025-01", "-300"), figures("2025-02", "100")],
                              D("7200"), 1, "zh"))
    assert len(by_class(root, "circle", "below")) == 2
    assert any(t.startswith("-") for t in texts(root))  # the axis reaches below zero


# --- out-of-pocket ------------------------------------------------------------------------

def test_oop_chart_one_bar_per_month_with_spending() -> None:
    root = parse(oop_chart(HISTORY, "zh"))
    bars = by_class(root, "rect", "bar")
    assert len(bars) == 2
    heights = [float(b.get("height", "nan")) for b in bars]
    assert heights[1] / heights[0] == pytest.approx(4000 / 120.5, rel=0.02)
    assert "2025-01: 120.50 元" in "".join(bars[0].itertext())
    assert any("医疗自付" in t for t in texts(root))


def test_oop_chart_without_spending_says_so() -> None:
    root = parse(oop_chart([figures("2025-01"), figures("2025-02")], "en"))
    assert by_class(root, "rect", "bar") == []
    assert "No out-of-pocket spending" in texts(root)


# --- employment ---------------------------------------------------------------------------

def test_employment_chart_starts_up_losses_down() -> None:
    root = parse(employment_chart(HISTORY, "zh"))
    starts = by_class(root, "rect", "start")
    losses = by_class(root, "rect", "loss")
    assert len(starts) == 2 and len(losses) == 2
    bottoms = {float(r.get("y", "nan")) + float(r.get("height", "nan")) for r in starts}
    tops = {float(r.get("y", "nan")) for r in losses}
    assert len(bottoms) == 1 and bottoms == tops  # both grow from the zero line
    heights = [float(r.get("height", "nan")) for r in losses]
    assert heights[0] == pytest.approx(2 * heights[1], rel=0.01)  # 2025-03 two, 2025-05 one
    labels = texts(root)
    assert any("新就业" in t for t in labels) and any("失业/合同终止" in t for t in labels)
    assert all(float(t) == int(float(t)) for t in labels if t.replace(".", "").isdigit())


def test_employment_chart_in_english() -> None:
    labels = texts(parse(employment_chart(HISTORY, "en")))
    assert any("New job" in t for t in labels) and any("Job loss" in t for t in labels)


# --- every chart --------------------------------------------------------------------------

CHARTS = [
    pytest.param(lambda h, lang: income_chart(h, D("7200"), 3, lang), id="income"),
    pytest.param(oop_chart, id="oop"),
    pytest.param(employment_chart, id="employment"),
]


@pytest.mark.parametrize("chart", CHARTS)
@pytest.mark.parametrize(("lang", "words"), [("zh", "暂无数据"), ("en", "No data")])
def test_no_history_is_a_small_no_data_chart(chart, lang: str, words: str) -> None:
    root = parse(chart([], lang))
    assert words in texts(root)
    assert float(root.get("viewBox", "").split()[3]) < 100


@pytest.mark.parametrize("chart", CHARTS)
def test_hostile_labels_are_escaped(chart) -> None:
    hostile = '<script>alert("x")</script> & \x07'
    svg = chart([figures(hostile, "100", oop="5", losses=1),
                 figures("2025-01", "200", starts=1)], "zh")
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    root = parse(svg)
    assert '<script>alert("x")</script> & ' in "".join(root.itertext())  # intact once parsed


@pytest.mark.parametrize("chart", CHARTS)
def test_every_month_between_is_on_the_axis(chart) -> None:
    root = parse(chart([figures("2024-11"), figures("2025-02")], "en"))
    months = [el.text for el in by_class(root, "text", "month")]
    assert months == ["2024-11", "2024-12", "2025-01", "2025-02"]  # four slots, all labelled

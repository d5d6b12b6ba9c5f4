"""The benchmark baselines' pure parts: the steady-state rate and the SVG charts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from fanpin import svgplot
from fanpin.baselines.measure import Progress, interpolate_time, steady_rate

SVG = "{http://www.w3.org/2000/svg}"


# --- steady_rate -------------------------------------------------------------------------

def test_steady_rate_of_a_constant_rate_after_a_startup() -> None:
    # 5 s of group join with nothing committed, then 1,000 events/s sampled every 0.1 s,
    # then a flat tail after the end.
    series = [(t / 10, 0) for t in range(50)]
    series += [(5 + t / 10, 100 * t) for t in range(101)]  # reaches 10,000 at t = 15
    series += [(15 + t / 10, 10_000) for t in range(1, 30)]
    assert steady_rate(series, 10_000) == pytest.approx(1000.0)


def test_steady_rate_interpolates_between_commit_steps() -> None:
    # Commits every 0.5 s in jumps of 500 (1,000 events/s), polled at 0.2 s: the
    # crossings fall between samples and must be interpolated, not rounded to a sample.
    series = []
    for i in range(60):
        t = i * 0.2
        series.append((t, min(5000, int(t / 0.5) * 500)))
    rate = steady_rate(series, 5000)
    assert 800 < rate < 1250


def test_steady_rate_ignores_startup_and_tail() -> None:
    # Slow first 10 % and last 10 %, fast middle: the rate is the middle's.
    series = [(0.0, 0), (10.0, 100), (11.0, 900), (30.0, 1000)]
    assert steady_rate(series, 1000) == pytest.approx(800.0)


def test_steady_rate_with_other_fractions() -> None:
    series = [(0.0, 0), (10.0, 1000)]
    assert steady_rate(series, 1000, low=0.25, high=0.75) == pytest.approx(100.0)


def test_steady_rate_needs_the_series_to_get_there() -> None:
    with pytest.raises(ValueError, match="never reaches"):
        steady_rate([(0.0, 0), (1.0, 500)], 1000)
    with pytest.raises(ValueError):
        steady_rate([], 1000)
    with pytest.raises(ValueError):
        steady_rate([(0.0, 0), (1.0, 1000)], 0)
    with pytest.raises(ValueError):
        steady_rate([(0.0, 0), (1.0, 1000)], 1000, low=0.9, high=0.1)


def test_steady_rate_refuses_a_single_jump() -> None:
    # Everything committed in one step: no two crossing times, no rate.
    with pytest.raises(ValueError, match="same instant"):
        steady_rate([(0.0, 0), (0.0, 1000)], 1000)


def test_interpolate_time_at_the_first_sample() -> None:
    assert interpolate_time([(2.0, 50), (3.0, 100)], 10) == 2.0
    assert interpolate_time([(0.0, 0), (2.0, 100)], 25) == pytest.approx(0.5)


def test_progress_rate_and_seconds() -> None:
    p = Progress(total=1000, series=[(0.0, 0), (1.0, 0), (2.0, 500), (3.0, 1000)],
                 reached=True)
    assert p.rate() == pytest.approx(500.0)
    assert p.seconds == pytest.approx(1.0)


# --- svgplot -----------------------------------------------------------------------------

def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return ["".join(el.itertext()) for el in root.iter(SVG + "text")]


def test_bar_chart_parses_and_shows_labels_and_values() -> None:
    svg = svgplot.bar_chart("吞吐量 <events/s> & ratio", ["Faust + Table", "原始 aiokafka",
                                                        "fanpin worker"],
                            [4321.5, 227000, 61800], unit="events/s")
    texts = _texts(svg)
    assert "吞吐量 <events/s> & ratio" in texts  # escaped in the file, intact once parsed
    assert "&lt;events/s&gt; &amp; ratio" in svg
    assert "原始 aiokafka" in texts
    assert "4,322 events/s" in texts
    assert "227,000 events/s" in texts
    assert len(ET.fromstring(svg).findall(f"{SVG}rect")) == 4  # background + 3 bars


def test_bar_chart_whiskers_and_log_scale() -> None:
    svg = svgplot.bar_chart("log", ["a", "b"], [3700.0, 220_000.0],
                            errors=[(3500.0, 4900.0), 10_000.0], unit="/s", log_scale=True)
    texts = _texts(svg)
    assert "3,700 /s" in texts and "220,000 /s" in texts
    assert "1,000" in texts and "1,000,000" in texts  # decade ticks
    lines = ET.fromstring(svg).findall(f"{SVG}line")
    assert len([ln for ln in lines if ln.get("stroke-width") == "1.5"]) == 6  # 2 whiskers


def test_bar_chart_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        svgplot.bar_chart("t", ["a"], [1.0, 2.0])
    with pytest.raises(ValueError):
        svgplot.bar_chart("t", ["a"], [1.0], errors=[None, None])
    with pytest.raises(ValueError):
        svgplot.bar_chart("t", ["a"], [0.0], log_scale=True)


def test_bar_chart_bar_lengths_follow_values() -> None:
    svg = svgplot.bar_chart("t", ["half", "full"], [50.0, 100.0])
    bars = ET.fromstring(svg).findall(f"{SVG}rect")[1:]
    w = [float(b.get("width", "0")) for b in bars]
    assert w[0] == pytest.approx(w[1] / 2, rel=0.01)


def test_line_chart_parses_and_has_legend_and_axes() -> None:
    svg = svgplot.line_chart(
        "提交进度 \"committed\"",
        {"Faust + 表": [(0, 0), (5, 10_000), (10, 40_000)],
         "worker": [(0.0, 0.0), (2.5, 30_000.0), (4.0, 40_000.0)]},
        x_label="秒 (s)", y_label="已提交事件")
    root = ET.fromstring(svg)
    texts = _texts(svg)
    for needle in ("Faust + 表", "worker", "秒 (s)", "已提交事件", '提交进度 "committed"'):
        assert needle in texts
    assert "40,000" in texts  # a y tick
    assert len(root.findall(f"{SVG}polyline")) == 3  # the axes + two series
    assert len(root.findall(f"{SVG}circle")) == 6


def test_control_characters_do_not_break_the_xml() -> None:
    svg = svgplot.bar_chart("bad\x00\x1btitle", ["a\x07b"], [Decimal("1.5")])  # type: ignore[list-item]
    assert "badtitle" in _texts(svg)


def test_line_chart_needs_points() -> None:
    with pytest.raises(ValueError):
        svgplot.line_chart("t", {"a": []}, "x", "y")

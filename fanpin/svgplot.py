"""Small SVG charts for the docs, with no plotting library.

Two kinds are enough for the benchmark pages: a horizontal bar chart (one bar per figure,
its value written next to it, optionally a whisker for the spread over runs) and a line
chart (a few series against a shared x axis, with a legend). The output is a standalone
SVG document as a string; every text (Chinese included) is XML-escaped, and text widths
are estimated with wide CJK characters counted as one em, so labels do not overlap bars.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

FONT = "Noto Sans CJK SC, Source Han Sans SC, PingFang SC, Microsoft YaHei, sans-serif"
FONT_SIZE = 13
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948",
           "#9c755f")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

Spread = tuple[float, float] | float | None


def text(value: object) -> str:
    """Escape for element content (and drop characters XML 1.0 cannot hold)."""
    return escape(_CONTROL.sub("", str(value)))


def attr(value: object) -> str:
    """Escape for a double-quoted attribute value."""
    return escape(_CONTROL.sub("", str(value)), {'"': "&quot;", "\n": "&#10;"})


def text_width(s: str, size: float = FONT_SIZE) -> float:
    """Estimated rendered width: wide (CJK) characters one em, others 0.6 em."""
    return sum(size if unicodedata.east_asian_width(c) in "WF" else 0.6 * size for c in s)


def fmt(v: float) -> str:
    """A value for a label: thousands separators from 100 up, three significant digits
    below."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi] (both positive)."""
    a = math.floor(math.log10(lo))
    b = math.ceil(math.log10(hi))
    if b == a:
        b = a + 1
    return [10.0 ** k for k in range(a, b + 1)]


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{attr(title)}" '
        f'font-family="{attr(FONT)}" font-size="{FONT_SIZE}">',
        f"<title>{text(title)}</title>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text x="{width / 2:.1f}" y="24" text-anchor="middle" font-size="{FONT_SIZE + 3}" '
        f'font-weight="bold">{text(title)}</text>',
        *body,
        "</svg>",
        "",
    ])


def _spread(value: float, err: Spread) -> tuple[float, float] | None:
    if err is None:
        return None
    if isinstance(err, tuple):
        lo, hi = float(err[0]), float(err[1])
        return min(lo, hi), max(lo, hi)
    return value - abs(float(err)), value + abs(float(err))


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float],
              errors: Sequence[Spread] | None = None, unit: str = "",
              log_scale: bool = False, width: int = 760) -> str:
    """Horizontal bars, one per label, each with its value written after it.

    ``errors`` gives each bar's spread: a ``(low, high)`` pair (e.g. the slowest and the
    fastest run) or a number for ``value ± number``; ``None`` for no whisker. ``unit`` is
    appended to the value labels and the axis caption. Values are non-negative; with
    ``log_scale`` the axis is logarithmic (for figures orders of magnitude apart; values
    must then be positive)."""
    if len(labels) != len(values):
        raise ValueError("labels and values differ in length")
    if errors is not None and len(errors) != len(values):
        raise ValueError("errors and values differ in length")
    values = [float(v) for v in values]  # Decimal and int too
    spreads = [_spread(v, errors[i] if errors else None) for i, v in enumerate(values)]
    highs = [s[1] if s else v for v, s in zip(values, spreads, strict=True)]
    top = max([*highs, 0.0]) or 1.0

    if log_scale:
        positive = [v for v in [*values, *(s[0] for s in spreads if s)] if v > 0]
        if not positive:
            raise ValueError("a log scale needs positive values")
        ticks = log_ticks(min(positive), top)
    else:
        ticks = nice_ticks(0.0, top)
    axis_lo, axis_hi = ticks[0], ticks[-1]

    label_w = max([text_width(str(s)) for s in labels] + [0.0])
    value_w = max([text_width(fmt(v) + (f" {unit}" if unit else "")) for v in values] + [0.0])
    left = 16 + label_w + 10
    right = width - 16 - value_w - 10
    if right - left < 120:  # very long labels: widen the picture rather than squash bars
        right = left + 120
        width = int(right + value_w + 26)
    bar_h, gap, top_y = 22, 10, 44
    height = top_y + len(values) * (bar_h + gap) + 46

    def x(v: float) -> float:
        if log_scale:
            v = max(v, axis_lo)
            frac = (math.log10(v) - math.log10(axis_lo)) / (
                math.log10(axis_hi) - math.log10(axis_lo))
        else:
            frac = (v - axis_lo) / (axis_hi - axis_lo)
        return left + frac * (right - left)

    body: list[str] = []
    plot_bottom = top_y + len(values) * (bar_h + gap)
    for t in ticks:
        tx = x(t)
        body.append(f'<line x1="{tx:.1f}" y1="{top_y - 4}" x2="{tx:.1f}" y2="{plot_bottom}" '
                    f'stroke="#dddddd"/>')
        body.append(f'<text x="{tx:.1f}" y="{plot_bottom + 16}" text-anchor="middle" '
                    f'fill="#555555">{text(fmt(t))}</text>')
    caption = unit + (" (log scale)" if log_scale else "")
    if caption:
        body.append(f'<text x="{(left + right) / 2:.1f}" y="{plot_bottom + 34}" '
                    f'text-anchor="middle" fill="#555555">{text(caption)}</text>')
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = top_y + i * (bar_h + gap)
        mid = y + bar_h / 2
        x0, x1 = x(axis_lo), x(v)
        body.append(f'<text x="{left - 10:.1f}" y="{mid + 4.5:.1f}" text-anchor="end">'
                    f"{text(label)}</text>")
        body.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 0):.1f}" '
                    f'height="{bar_h}" fill="{PALETTE[0]}"><title>{text(label)}: '
                    f"{text(fmt(v))}{text(' ' + unit if unit else '')}</title></rect>")
        end = x1
        spread = spreads[i]
        if spread is not None:
            a, b = x(spread[0]), x(spread[1])
            body.append(f'<line x1="{a:.1f}" y1="{mid}" x2="{b:.1f}" y2="{mid}" '
                        f'stroke="#333333" stroke-width="1.5"/>')
            for cap in (a, b):
                body.append(f'<line x1="{cap:.1f}" y1="{mid - 6}" x2="{cap:.1f}" '
                            f'y2="{mid + 6}" stroke="#333333" stroke-width="1.5"/>')
            end = max(end, b)
        body.append(f'<text x="{end + 6:.1f}" y="{mid + 4.5:.1f}">'
                    f"{text(fmt(v) + (' ' + unit if unit else ''))}</text>")
    body.append(f'<line x1="{x(axis_lo):.1f}" y1="{top_y - 4}" x2="{x(axis_lo):.1f}" '
                f'y2="{plot_bottom}" stroke="#333333"/>')
    return _svg(width, height, title, body)


def line_chart(title: str, series: Mapping[str, Sequence[tuple[float, float]]],
               x_label: str, y_label: str, width: int = 760, height: int = 420) -> str:
    """A few series as lines with point markers, a legend and ticked axes. The y axis
    starts at zero unless a value is negative."""
    series = {name: [(float(a), float(b)) for a, b in pts] for name, pts in series.items()}
    points = [p for pts in series.values() for p in pts]
    if not points:
        raise ValueError("no points to plot")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(0.0, min(ys)), max(ys))
    legend_w = max(text_width(str(name)) for name in series) + 40 if series else 0
    y_tick_w = max(text_width(fmt(t)) for t in y_ticks)
    left = 30 + y_tick_w + 10
    right = width - 20 - legend_w
    if right - left < 160:
        right = left + 160
        width = int(right + legend_w + 20)
    top, bottom = 44, height - 56

    def px(v: float) -> float:
        return left + (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def py(v: float) -> float:
        return bottom - (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)

    body: list[str] = []
    for t in y_ticks:
        body.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{right:.1f}" y2="{py(t):.1f}" '
                    f'stroke="#dddddd"/>')
        body.append(f'<text x="{left - 6}" y="{py(t) + 4.5:.1f}" text-anchor="end" '
                    f'fill="#555555">{text(fmt(t))}</text>')
    for t in x_ticks:
        body.append(f'<line x1="{px(t):.1f}" y1="{bottom}" x2="{px(t):.1f}" y2="{bottom + 5}" '
                    f'stroke="#333333"/>')
        body.append(f'<text x="{px(t):.1f}" y="{bottom + 18}" text-anchor="middle" '
                    f'fill="#555555">{text(fmt(t))}</text>')
    body.append(f'<polyline points="{left},{top} {left},{bottom} {right:.1f},{bottom}" '
                f'fill="none" stroke="#333333"/>')
    body.append(f'<text x="{(left + right) / 2:.1f}" y="{height - 14}" text-anchor="middle">'
                f"{text(x_label)}</text>")
    cy = (top + bottom) / 2
    body.append(f'<text x="16" y="{cy:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 16 {cy:.1f})">{text(y_label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        ordered = sorted(pts)
        if ordered:
            coords = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in ordered)
            body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                        f'stroke-width="2"/>')
            for a, b in ordered:
                body.append(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{color}">'
                            f"<title>{text(name)}: {text(fmt(a))}, {text(fmt(b))}</title>"
                            "</circle>")
        ly = top + 8 + i * 20
        lx = right + 16
        body.append(f'<line x1="{lx:.1f}" y1="{ly}" x2="{lx + 18:.1f}" y2="{ly}" '
                    f'stroke="{color}" stroke-width="3"/>')
        body.append(f'<text x="{lx + 24:.1f}" y="{ly + 4.5}">{text(name)}</text>')
    return _svg(width, height, title, body)

"""Charts of a household's months for the watch-list detail page, as inline SVG.

Pure functions, no SQL and no web. The figures are the ones the alerts carry
(``Evidence.history``): ``household_series`` merges those of an entry's alerts, and each
chart function returns one ``<svg>`` element to put straight into the page. The charts
scale with the page (``viewBox`` and ``width="100%"``, no fixed pixel size) so they read
on a phone, every text is XML-escaped (``fanpin.svgplot.text`` / ``attr``), and each has
``role="img"`` and a ``<title>`` for screen readers. Each month is one slot on the x axis;
a month missing from the figures is an empty slot (a gap in the income line).

Marks carry classes the page (and the tests) can select: ``point`` / ``point below`` for
the monthly incomes (below the monitoring line in red), ``monitoring-line``, ``bar`` for
out-of-pocket medical cost, ``start`` / ``loss`` for employment events.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from consumers.watchlist.labels import Lang
from fanpin.svgplot import FONT, attr, fmt, nice_ticks, text, text_width
from schemas.events import Alert, MonthFigures

WIDTH = 400  # viewBox units; the picture is scaled to the width of its container
HEIGHT = 240
FONT_SIZE = 15
TICK_SIZE = 13
INCOME_COLOR = "#4e79a7"
BELOW_COLOR = "#d62728"
LINE_COLOR = "#555555"
OOP_COLOR = "#f28e2b"
START_COLOR = "#59a14f"
LOSS_COLOR = "#d62728"
GRID_COLOR = "#e0e0e0"
MAX_BAR = 28  # the widest bar, when there are only a few months
MAX_MONTHS = 240  # a wider month range than this is not filled in (a malformed payload)

_WORDS: dict[Lang, dict[str, str]] = {
    "zh": {
        "income_title": "月度家庭纯收入与监测线（元）",
        "income": "月度家庭纯收入",
        "line": "监测线（按户月均）",
        "below": "低于监测线",
        "below_desc": "{months} 个月中有 {below} 个月的家庭纯收入低于监测线（按户月均 {line} 元）",
        "oop_title": "医疗自付（三重保障后，元）",
        "oop": "医疗自付",
        "no_oop": "无医疗自付记录",
        "employment_title": "就业变动（人次）",
        "losses": "失业/合同终止",
        "starts": "新就业",
        "no_employment": "无就业变动记录",
        "not_reported": "未报告",
        "yuan": "元",
        "no_data": "暂无数据",
    },
    "en": {
        "income_title": "Monthly income against the monitoring line (yuan)",
        "income": "Household net income",
        "line": "Monitoring line (household, monthly)",
        "below": "Below the line",
        "below_desc": "Income was below the monitoring line ({line} yuan a month for the "
                      "household) in {below} of {months} months",
        "oop_title": "Out-of-pocket medical spending (yuan)",
        "oop": "Out-of-pocket medical",
        "no_oop": "No out-of-pocket spending",
        "employment_title": "Employment events (count)",
        "losses": "Job loss / contract ended",
        "starts": "New job",
        "no_employment": "No employment events",
        "not_reported": "not reported",
        "yuan": "yuan",
        "no_data": "No data",
    },
}

_MONTH = re.compile(r"(\d{4})-(\d{2})")


# --- the figures -----------------------------------------------------------------------

def household_series(payloads: Iterable[Alert]) -> list[MonthFigures]:
    """The monthly figures of all the alerts of one entry, merged and sorted by month.

    Alerts are taken in order of their month (alerts of the same month in the order
    given); for a month several alerts cover, the latest alert's figures win, since it
    was computed with everything known by then (a reversal, a late settlement)."""
    merged: dict[str, MonthFigures] = {}
    for alert in sorted(payloads, key=lambda a: a.month):
        for figures in alert.evidence.history:
            merged[figures.month] = figures
    return [merged[m] for m in sorted(merged)]


def _axis_months(history: Sequence[MonthFigures]) -> list[str]:
    """Every month from the first to the last of ``history``, missing ones included, so a
    month without figures shows as a gap. Labels that are not YYYY-MM (or a range too wide
    to draw) are kept as given, in order."""
    given = list(dict.fromkeys(f.month for f in history))
    indices = []
    for label in given:
        found = _MONTH.fullmatch(label)
        if found is None or not 1 <= int(found[2]) <= 12:
            return given
        indices.append(int(found[1]) * 12 + int(found[2]) - 1)
    first, last = min(indices), max(indices)
    if last - first >= MAX_MONTHS:
        return given
    return [f"{m // 12:04d}-{m % 12 + 1:02d}" for m in range(first, last + 1)]


# --- drawing ---------------------------------------------------------------------------

def _svg(title: str, height: float, body: list[str], desc: str = "") -> str:
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} '
        f'{height:.0f}" width="100%" preserveAspectRatio="xMidYMid meet" role="img" '
        f'aria-label="{attr(title)}" style="height:auto;max-width:42rem" '
        f'font-family="{attr(FONT)}" font-size="{FONT_SIZE}">',
        f"<title>{text(title)}</title>",
        *([f"<desc>{text(desc)}</desc>"] if desc else []),
        f'<text x="{WIDTH / 2:.0f}" y="18" text-anchor="middle" font-size="{FONT_SIZE + 2}" '
        f'font-weight="bold">{text(title)}</text>',
        *body,
        "</svg>",
    ])


def _no_data(title: str, lang: Lang) -> str:
    return _svg(title, 64, [
        f'<text class="no-data" x="{WIDTH / 2:.0f}" y="46" text-anchor="middle" '
        f'fill="#777777">{text(_WORDS[lang]["no_data"])}</text>'])


@dataclass(frozen=True)
class _Plot:
    """The plot area: one slot per month along x, the ticks' range along y."""

    months: list[str]
    ticks: list[float]
    left: float
    top: float
    right: float = WIDTH - 26  # room for half the last month's label
    bottom: float = HEIGHT - 34

    @property
    def slot(self) -> float:
        return (self.right - self.left) / len(self.months)

    def x(self, i: int) -> float:
        """The centre of month ``i``'s slot."""
        return self.left + (i + 0.5) * self.slot

    def y(self, v: float) -> float:
        lo, hi = self.ticks[0], self.ticks[-1]
        return self.bottom - (v - lo) / (hi - lo) * (self.bottom - self.top)

    def axes(self, tick_label: Callable[[float], str] = fmt) -> list[str]:
        """Gridlines with their values, the zero line and the month labels (every few
        months, always the last one)."""
        out: list[str] = []
        for t in self.ticks:
            out.append(f'<line x1="{self.left:.1f}" y1="{self.y(t):.1f}" x2="{self.right:.1f}" '
                       f'y2="{self.y(t):.1f}" stroke="{GRID_COLOR}"/>')
            out.append(f'<text x="{self.left - 5:.1f}" y="{self.y(t) + 4:.1f}" '
                       f'text-anchor="end" font-size="{TICK_SIZE}" fill="#555555">'
                       f"{text(tick_label(t))}</text>")
        zero = self.y(min(max(0.0, self.ticks[0]), self.ticks[-1]))
        out.append(f'<line x1="{self.left:.1f}" y1="{zero:.1f}" x2="{self.right:.1f}" '
                   f'y2="{zero:.1f}" stroke="#333333"/>')
        n = len(self.months)
        widest = max(text_width(m, TICK_SIZE) for m in self.months) + 8
        every = max(1, math.ceil(widest / self.slot))
        for i, month in enumerate(self.months):
            if (n - 1 - i) % every:
                continue
            out.append(f'<line x1="{self.x(i):.1f}" y1="{self.bottom:.1f}" x2="{self.x(i):.1f}" '
                       f'y2="{self.bottom + 4:.1f}" stroke="#333333"/>')
            out.append(f'<text class="month" x="{self.x(i):.1f}" y="{self.bottom + 17:.1f}" '
                       f'text-anchor="middle" font-size="{TICK_SIZE}" fill="#555555">'
                       f"{text(month)}</text>")
        return out


def _legend(items: Sequence[tuple[str, str]]) -> tuple[list[str], float]:
    """Legend entries (swatch markup drawn at the origin, label) laid out left to right
    under the title, wrapping when the row is full. Returns the markup and the y where
    the plot can start."""
    out: list[str] = []
    x, y = 12.0, 38.0
    for swatch, label in items:
        w = 22 + text_width(label) + 14
        if x > 12 and x + w > WIDTH - 12:
            x, y = 12.0, y + 18
        out.append(f'<g transform="translate({x:.1f},{y:.1f})">{swatch}'
                   f'<text x="22" y="4">{text(label)}</text></g>')
        x += w
    return out, y + 22


def _left(ticks: Sequence[float], tick_label: Callable[[float], str] = fmt) -> float:
    return 10 + max(text_width(tick_label(t), TICK_SIZE) for t in ticks) + 6


def _count_ticks(lo: int, hi: int) -> list[float]:
    """Whole-number ticks covering [lo, hi]: ``nice_ticks`` with the step rounded up to a
    whole number."""
    ticks = nice_ticks(lo, hi)
    step = ticks[1] - ticks[0]
    if step == int(step):
        return ticks
    whole = max(1, math.ceil(step))
    return [float(k * whole) for k in range(math.floor(lo / whole), math.ceil(hi / whole) + 1)]


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


# --- the charts ------------------------------------------------------------------------

def income_chart(history: Sequence[MonthFigures], monitoring_line_per_capita_year: Decimal,
                 household_size: int, lang: Lang) -> str:
    """Monthly household net income (yuan) as a line with a marker a month, against the
    monitoring line brought to one household and one month (line × size / 12, dashed).
    Months below it have red markers; months without a report are gaps in the line."""
    words = _WORDS[lang]
    title = words["income_title"]
    if not history:
        return _no_data(title, lang)
    months = _axis_months(history)
    by_month = {f.month: f for f in history}
    incomes = [by_month[m].income if m in by_month else None for m in months]
    line = monitoring_line_per_capita_year * max(household_size, 1) / 12
    present = [float(v) for v in incomes if v is not None]
    ticks = nice_ticks(min([0.0, float(line), *present]), max([float(line), *present]))
    legend, top = _legend([
        (f'<line x1="0" y1="0" x2="16" y2="0" stroke="{INCOME_COLOR}" stroke-width="2"/>'
         f'<circle cx="8" cy="0" r="3" fill="{INCOME_COLOR}"/>', words["income"]),
        (f'<line x1="0" y1="0" x2="16" y2="0" stroke="{LINE_COLOR}" stroke-width="2" '
         f'stroke-dasharray="5 3"/>', f'{words["line"]} {fmt(float(line))} {words["yuan"]}'),
        (f'<circle cx="8" cy="0" r="4" fill="{BELOW_COLOR}"/>', words["below"]),
    ])
    plot = _Plot(months, ticks, _left(ticks), top)
    body = [*legend, *plot.axes()]
    ly = plot.y(float(line))
    body.append(f'<line class="monitoring-line" x1="{plot.left:.1f}" y1="{ly:.1f}" '
                f'x2="{plot.right:.1f}" y2="{ly:.1f}" stroke="{LINE_COLOR}" stroke-width="1.5" '
                f'stroke-dasharray="5 3"><title>{text(words["line"])}: {text(_money(line))} '
                f'{text(words["yuan"])}</title></line>')
    run: list[str] = []
    for i, v in enumerate([*incomes, None]):  # the trailing None closes the last run
        if v is not None:
            run.append(f"{plot.x(i):.1f},{plot.y(float(v)):.1f}")
            continue
        if len(run) > 1:
            body.append(f'<polyline class="income" points="{" ".join(run)}" fill="none" '
                        f'stroke="{INCOME_COLOR}" stroke-width="2"/>')
        run = []
    below = 0
    for i, (month, v) in enumerate(zip(months, incomes, strict=True)):
        if v is None:
            continue
        under = v < line
        tip = f"{month}: {_money(v)} {words['yuan']}"
        if under:
            below += 1
            tip += f"（{words['below']}）" if lang == "zh" else f" ({words['below']})"
        body.append(f'<circle class="{"point below" if under else "point"}" '
                    f'cx="{plot.x(i):.1f}" cy="{plot.y(float(v)):.1f}" r="{4 if under else 3}" '
                    f'fill="{BELOW_COLOR if under else INCOME_COLOR}"><title>{text(tip)}'
                    "</title></circle>")
    desc = words["below_desc"].format(months=len(present), below=below, line=_money(line))
    return _svg(title, HEIGHT, body, desc)


def oop_chart(history: Sequence[MonthFigures], lang: Lang) -> str:
    """Out-of-pocket medical spending (after all three insurance layers) as one bar a
    month; months without any get no bar."""
    words = _WORDS[lang]
    title = words["oop_title"]
    if not history:
        return _no_data(title, lang)
    months = _axis_months(history)
    by_month = {f.month: f for f in history}
    amounts = [by_month[m].out_of_pocket if m in by_month else Decimal(0) for m in months]
    values = [float(a) for a in amounts]
    ticks = nice_ticks(min(0.0, *values), max(0.0, *values))
    legend, top = _legend([(f'<rect x="0" y="-5" width="16" height="10" fill="{OOP_COLOR}"/>',
                            words["oop"])])
    plot = _Plot(months, ticks, _left(ticks), top)
    body = [*legend, *plot.axes()]
    width = min(plot.slot * 0.7, MAX_BAR)
    zero = plot.y(0.0)
    for i, (month, amount) in enumerate(zip(months, amounts, strict=True)):
        if not amount:
            continue
        y = plot.y(float(amount))
        body.append(f'<rect class="bar" x="{plot.x(i) - width / 2:.1f}" y="{min(y, zero):.1f}" '
                    f'width="{width:.1f}" height="{abs(zero - y):.1f}" fill="{OOP_COLOR}">'
                    f"<title>{text(month)}: {text(_money(amount))} {text(words['yuan'])}"
                    "</title></rect>")
    if not any(amounts):
        body.append(_note(plot, words["no_oop"]))
    return _svg(title, HEIGHT, body)


def employment_chart(history: Sequence[MonthFigures], lang: Lang) -> str:
    """Employment events a month: new jobs as green bars up, job losses (contract ended,
    registered unemployed) as red bars down, both counted as events (人次)."""
    words = _WORDS[lang]
    title = words["employment_title"]
    if not history:
        return _no_data(title, lang)
    months = _axis_months(history)
    by_month = {f.month: f for f in history}
    starts = [by_month[m].job_starts if m in by_month else 0 for m in months]
    losses = [by_month[m].job_losses if m in by_month else 0 for m in months]
    up, down = max(1, *starts), max(1, *losses)
    ticks = _count_ticks(-down, up)

    def count(t: float) -> str:
        return fmt(abs(t))

    legend, top = _legend([
        (f'<rect x="0" y="-5" width="16" height="10" fill="{START_COLOR}"/>',
         f'{words["starts"]} ↑'),
        (f'<rect x="0" y="-5" width="16" height="10" fill="{LOSS_COLOR}"/>',
         f'{words["losses"]} ↓'),
    ])
    plot = _Plot(months, ticks, _left(ticks, count), top)
    body = [*legend, *plot.axes(count)]
    width = min(plot.slot * 0.6, MAX_BAR)
    zero = plot.y(0.0)
    for i, month in enumerate(months):
        for cls, n, sign, color, word in (("start", starts[i], 1, START_COLOR, "starts"),
                                          ("loss", losses[i], -1, LOSS_COLOR, "losses")):
            if n <= 0:
                continue
            y = plot.y(sign * n)
            body.append(f'<rect class="{cls}" x="{plot.x(i) - width / 2:.1f}" '
                        f'y="{min(y, zero):.1f}" width="{width:.1f}" '
                        f'height="{abs(zero - y):.1f}" fill="{color}"><title>{text(month)}: '
                        f"{text(words[word])} {n}</title></rect>")
    if not any(starts) and not any(losses):
        body.append(_note(plot, words["no_employment"]))
    return _svg(title, HEIGHT, body)


def _note(plot: _Plot, words: str) -> str:
    return (f'<text class="note" x="{(plot.left + plot.right) / 2:.1f}" '
            f'y="{(plot.top + plot.bottom) / 2:.1f}" text-anchor="middle" fill="#777777">'
            f"{text(words)}</text>")


__all__ = ["employment_chart", "household_series", "income_chart", "oop_chart"]

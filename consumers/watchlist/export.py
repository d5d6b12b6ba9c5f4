"""CSV and Excel exports of the watch list, for officers who work in a spreadsheet.

The file is UTF-8 with a byte-order mark, so Excel on a Chinese Windows opens it without
garbling. It carries no ID numbers and no health details (no diagnoses, hospitals or
medical amounts: the rigid-spending figure and the rule's free-text details stay in the
web page), since exported sheets get copied and posted.

Formula injection: a cell a spreadsheet would read as a formula (starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return, or their full-width forms) gets a leading
single quote. This applies to every *text* cell. The numeric columns (预警次数, 预计人均纯收入,
监测线) are written from values parsed as numbers here, so a negative income such as
``-120.50`` stays a number the spreadsheet can sum; a value there that does not parse as a
number is treated as text and neutralised.
"""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO, Final, TextIO

from sqlalchemy.orm import Session

from consumers.watchlist.models import Entry
from consumers.watchlist.service import EntryFilter, evidence_of, filtered_entries

COLUMNS: Final[tuple[str, ...]] = (
    "户编号",
    "行政区划代码",
    "风险类型",
    "预警规则",
    "预警月份",
    "严重程度",
    "状态",
    "户类型",
    "预警次数",
    "最近预警月份",
    "预计人均纯收入",
    "监测线",
)

_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")


def neutralise(cell: str) -> str:
    """Make a text cell safe to open in a spreadsheet (no formula execution)."""
    if cell.startswith(_FORMULA_START):
        return "'" + cell
    return cell


def _number(value: object) -> str:
    """A numeric cell: a plain decimal number, or (if it is not one) neutralised text."""
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return neutralise(str(value))
    if not number.is_finite():
        return neutralise(str(value))
    return f"{number:f}"


# Health details: illness and disability as risk types, and the rules that read medical
# settlements. Left out of every export unless the caller's role needs them and the sheet
# is not meant for posting (``health=True``).
HEALTH_RISK_TYPES: Final = frozenset({"因病", "因残"})
HEALTH_RULES: Final = frozenset({"medical-spike", "illness"})


def _risk_types_main_first(entry: Entry, health: bool) -> str:
    """The main risk type first (what the officer reads first), then the others seen."""
    others = [t for t in (entry.risk_types or "").split("、") if t and t != entry.risk_type]
    kinds = [entry.risk_type, *others]
    if not health:
        kinds = [k for k in kinds if k not in HEALTH_RISK_TYPES]
    return "、".join(kinds)


def _rules(entry: Entry, health: bool) -> str:
    rules = entry.rule_list()
    if not health:
        rules = [r for r in rules if r not in HEALTH_RULES]
    return ";".join(rules)


def _row(entry: Entry, health: bool = False) -> list[str]:
    evidence = evidence_of(entry).evidence
    text_cells = [
        entry.household_id,
        entry.region_code,
        _risk_types_main_first(entry, health),
        _rules(entry, health),
        entry.first_month,
        entry.severity,
        entry.state,
        entry.household_type,
    ]
    row = [neutralise(c) for c in text_cells]
    row.append(_number(entry.alert_count))
    row.append(neutralise(entry.last_month))
    row.append(_number(evidence.projected_per_capita))
    row.append(_number(evidence.monitoring_line))
    return row


def export_csv(
    *,
    session: Session,
    out: TextIO | Path,
    filters: EntryFilter = EntryFilter(),
    now: dt.datetime | None = None,
    health: bool = False,
) -> int:
    """Write one row per entry matching ``filters`` (as in ``list_entries``) and return the
    number of rows. A ``Path`` is written whole; a text stream gets the BOM and rows
    appended (open it with ``newline=""``). ``health`` keeps the health-related risk types
    and rules (never for a sheet meant for posting)."""
    if isinstance(out, Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8", newline="") as fh:
            return export_csv(session=session, out=fh, filters=filters, now=now,
                              health=health)
    stmt = filtered_entries(filters, sort="region", now=now)
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    n = 0
    for entry in session.scalars(stmt.execution_options(yield_per=500)):
        writer.writerow(_row(entry, health))
        n += 1
    return n


def export_xlsx(
    *,
    session: Session,
    out: BinaryIO,
    filters: EntryFilter = EntryFilter(),
    now: dt.datetime | None = None,
    health: bool = False,
) -> int:
    """The same rows as ``export_csv`` as an Excel workbook (one sheet, 监测预警清单).
    Text cells are neutralised as in the CSV and stored as strings; the numeric columns
    are real numbers. Returns the number of rows."""
    from openpyxl import Workbook

    numeric = {COLUMNS.index(c) for c in ("预警次数", "预计人均纯收入", "监测线")}
    book = Workbook(write_only=True)
    sheet = book.create_sheet("监测预警清单")
    sheet.append(list(COLUMNS))
    n = 0
    stmt = filtered_entries(filters, sort="region", now=now)
    for entry in session.scalars(stmt.execution_options(yield_per=500)):
        row: list[object] = []
        for i, cell in enumerate(_row(entry, health)):
            if i in numeric:
                try:
                    row.append(Decimal(cell) if "." in cell else int(cell))
                    continue
                except (InvalidOperation, ValueError):
                    pass
            row.append(cell)
        sheet.append(row)
        n += 1
    book.save(out)
    return n

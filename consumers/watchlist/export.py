"""CSV export of the watch list, for officers who work in a spreadsheet.

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
from typing import Final, TextIO

from sqlalchemy.orm import Session

from consumers.watchlist.models import Entry
from consumers.watchlist.service import evidence_of, filtered_entries

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


def _risk_types_main_first(entry: Entry) -> str:
    """The main risk type first (what the officer reads first), then the others seen."""
    others = [t for t in (entry.risk_types or "").split("、") if t and t != entry.risk_type]
    return "、".join([entry.risk_type, *others])


def _row(entry: Entry) -> list[str]:
    evidence = evidence_of(entry).evidence
    text_cells = [
        entry.household_id,
        entry.region_code,
        _risk_types_main_first(entry),
        entry.rules,
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
    region_prefix: str | None = None,
    risk_type: str | None = None,
    severity: str | None = None,
    state: str | None = None,
    overdue: bool | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Write one row per entry (optionally filtered as in ``list_entries``) and return the
    number of rows. A ``Path`` is written whole; a text stream gets the BOM and rows
    appended (open it with ``newline=""``)."""
    if isinstance(out, Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8", newline="") as fh:
            return export_csv(
                session=session,
                out=fh,
                region_prefix=region_prefix,
                risk_type=risk_type,
                severity=severity,
                state=state,
                overdue=overdue,
                now=now,
            )
    stmt = filtered_entries(
        region_prefix=region_prefix,
        risk_type=risk_type,
        severity=severity,
        state=state,
        overdue=overdue,
        sort="region",
        now=now,
    )
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    n = 0
    for entry in session.scalars(stmt.execution_options(yield_per=500)):
        writer.writerow(_row(entry))
        n += 1
    return n

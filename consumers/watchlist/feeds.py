"""Department file receipts: what each feed last sent, and the rows it had rejected.

The sink records every ``FeedFile`` receipt it reads from the files topic; operators see the
result in ``fanpin status`` and in Prometheus (``fanpin_department_last_file_*``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from consumers.watchlist.models import FeedFileRecord, RegionName
from schemas.events import FeedFile, Region


def record_feed_files(*, session: Session, receipts: Iterable[FeedFile]) -> int:
    """Store receipts not seen before (by id); returns how many were new."""
    new = 0
    seen: set[str] = set()
    for r in receipts:
        if r.id in seen or session.get(FeedFileRecord, r.id) is not None:
            continue
        seen.add(r.id)
        session.add(FeedFileRecord(
            id=r.id, feed=r.feed, dept=r.dept, file=r.file, sha256=r.sha256,
            rows_accepted=r.rows_accepted, rows_rejected=sum(r.rejects.values()),
            rejects_json=json.dumps(r.rejects, sort_keys=True), file_error=r.file_error,
            published_at=r.published_at))
        new += 1
    return new


@dataclass
class FeedSummary:
    feed: str
    dept: str
    last_file: str
    last_published_at: dt.datetime
    last_accepted: int
    last_rejected: int
    last_error: str | None
    files: int = 0
    # the latest file that was not refused as a whole: what a silent-feed alert watches
    last_good_published_at: dt.datetime | None = None
    rejects_by_code: dict[str, int] = field(default_factory=dict)


def feed_summary(*, session: Session) -> list[FeedSummary]:
    """Per feed: its latest file (by publication time) and rejects summed over all files."""
    out: dict[str, FeedSummary] = {}
    rows = session.scalars(select(FeedFileRecord).order_by(
        FeedFileRecord.feed, FeedFileRecord.published_at, FeedFileRecord.file))
    for rec in rows:
        s = out.get(rec.feed)
        if s is None:
            s = out[rec.feed] = FeedSummary(rec.feed, rec.dept, rec.file, rec.published_at,
                                            rec.rows_accepted, rec.rows_rejected,
                                            rec.file_error)
        s.last_file, s.last_published_at = rec.file, rec.published_at
        s.last_accepted, s.last_rejected = rec.rows_accepted, rec.rows_rejected
        s.last_error = rec.file_error
        s.dept = rec.dept
        s.files += 1
        if rec.file_error is None:
            s.last_good_published_at = rec.published_at
        for code, n in json.loads(rec.rejects_json).items():
            s.rejects_by_code[code] = s.rejects_by_code.get(code, 0) + int(n)
    return [out[k] for k in sorted(out)]


def record_regions(*, session: Session, regions: Iterable[Region]) -> int:
    """Store or update region names (the latest publication wins); returns how many."""
    n = 0
    for r in {r.code: r for r in regions}.values():
        row = session.get(RegionName, r.code)
        if row is None:
            session.add(RegionName(code=r.code, name=r.name, level=r.level))
        else:
            row.name, row.level = r.name, r.level
        n += 1
    return n

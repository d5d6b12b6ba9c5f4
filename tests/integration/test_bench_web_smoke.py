"""``make bench-web`` in miniature: the same fill (COPY into a fresh PostgreSQL database) and
the same measuring (the real app under uvicorn, httpx logged in as each role), with 2,000
entries and 5 requests per scenario. Its numbers mean nothing; it checks the code paths."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from consumers.watchlist.models import Entry, create_engine_for
from consumers.watchlist.service import evidence_of
from fanpin import bench_web
from schemas import Alert, decode_event

pytestmark = pytest.mark.integration


def test_bench_web_fills_and_measures_every_scenario(pg_database_url: str,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "docs" / "benchmarks-web.md"
    report = bench_web.run(bench_web.Options(
        entries=2000, requests=5, warmup=1, out=out, url=pg_database_url, counties=2,
        progress=False, record_alerts=50))

    assert report.n == 2000
    assert report.load is not None and report.load.rows["watchlist_entries"] == 2000
    assert report.load.rows["users"] == 2 + 2 + 20 + 300  # admin, publisher, officers
    keys = [r.scenario.key for r in report.results]
    assert keys == [s.key for s in bench_web.scenarios()]
    for r in report.results:
        assert len(r.times_ms) == 5, r.scenario.key
        assert all(0 < t < 30_000 for t in r.times_ms), r.scenario.key
        assert r.pct(50) <= r.pct(95) <= r.pct(99) <= max(r.times_ms)
        assert all(0 <= s < 30_000 for s in r.sql_ms)
        if r.scenario.kind in ("page", "api"):
            assert r.matching is not None and 0 <= r.matching <= 2000
    by_key = {r.scenario.key: r for r in report.results}
    assert by_key["page-admin"].matching == 2000
    assert by_key["page-village"].matching == by_key["api-village"].matching
    assert by_key["api-admin-high-jobs"].matching == by_key["page-admin-high-jobs"].matching
    assert 0 < by_key["page-county"].matching < 2000  # type: ignore[operator]
    # Every filtered scenario selects something (a filter the app refuses would show as 0).
    for key in ("page-county-illness", "page-admin-high-jobs", "page-admin-new-overdue",
                "page-admin-unassigned", "page-county-high"):
        assert by_key[key].matching, key
    assert report.plans and all("Planning Time" in p[2] for p in report.plans)
    assert report.record is not None and all(v > 0 for v in report.record)

    text = out.read_text(encoding="utf-8")
    for r in report.results:
        assert f"| {r.scenario.label} |" in text
    assert "Target" in text and "## Indexes on watchlist_entries" in text
    svg = (out.parent / "benchmarks" / "web-latency.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and svg.count("<rect") >= len(report.results)

    # What was loaded reads back the way the app reads it.
    engine = create_engine_for(pg_database_url)
    try:
        with Session(engine) as s:
            entries = s.scalars(select(Entry).order_by(Entry.id).limit(50)).all()
            for e in entries:
                assert evidence_of(e).month == e.last_month
                assert all(isinstance(decode_event(a.payload.encode()), Alert)
                           for a in e.alerts)
                assert len(e.alerts) == e.alert_count
    finally:
        engine.dispose()


def test_percentile_and_copy_format() -> None:
    assert bench_web.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert bench_web.percentile([5.0], 95) == 5.0
    assert math.isnan(bench_web.percentile([], 95))
    assert bench_web.copy_line(["a\tb\\c\nd", None, True, 3]) == "a\\tb\\\\c\\nd\t\\N\tt\t3\n"

"""The watch list on a real PostgreSQL (started by tests/fixtures/postgres.py)."""

from __future__ import annotations

import datetime as dt
import random
import threading

import pytest
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from consumers.watchlist.models import ROLE_ADMIN, ROLE_VILLAGE, Entry, History, create_engine_for
from consumers.watchlist.service import (
    EntryFilter,
    RecordStats,
    counts_by_state,
    evidence_of,
    list_entries,
    record_alerts,
    set_state,
)
from consumers.watchlist.views import create_app
from tests.unit.test_watchlist_helpers import (
    NOW,
    VILLAGE_A,
    VILLAGE_B,
    household,
    make_alert,
    snapshot,
    table_counts,
)
from tests.unit.watchlist_web import add_users, csrf_of, logged_in

pytestmark = pytest.mark.integration

H1 = household(VILLAGE_A, 1)
H2 = household(VILLAGE_B, 2)


def the_entry(session: Session, household_id: str, episode: int = 1) -> Entry:
    session.expire_all()
    return session.scalars(
        select(Entry).where(Entry.entry_key == f"{household_id}#{episode}")
    ).one()


def test_it_is_really_postgres_with_timestamptz(pg_engine: Engine) -> None:
    assert pg_engine.dialect.name == "postgresql"
    assert pg_engine.url.drivername == "postgresql+psycopg"
    assert pg_engine.url.port != 5432
    cols = {c["name"]: c for c in inspect(pg_engine).get_columns("watchlist_entries")}
    assert cols["created_at"]["type"].timezone is True
    indexes = {i["name"]: i for i in inspect(pg_engine).get_indexes("watchlist_entries")}
    assert indexes["uq_watchlist_entries_open_household"]["unique"]


def test_replay_is_idempotent(pg_engine: Engine) -> None:
    alerts = [make_alert(H1, "2026-03"), make_alert(H1, "2026-04", severity="高"),
              make_alert(H2, "2026-05", risk_type="因务工就业不稳")]
    with Session(pg_engine) as s:
        assert record_alerts(session=s, alerts=alerts, now=NOW) == RecordStats(2, 1, 0)
        before, rows = snapshot(s), table_counts(s)
        again = record_alerts(session=s, alerts=alerts[::-1], now=NOW + dt.timedelta(days=1))
        assert again == RecordStats(0, 0, 3)
        assert snapshot(s) == before
        assert table_counts(s) == rows
        e = the_entry(s, H1)
        assert e.created_at == NOW and e.created_at.utcoffset() == dt.timedelta(0)


def test_merge_and_new_episode(pg_engine: Engine) -> None:
    with Session(pg_engine) as s:
        record_alerts(session=s, alerts=[make_alert(H1, "2026-04", severity="中")], now=NOW)
        record_alerts(
            session=s,
            alerts=[make_alert(H1, "2026-02", severity="高", risk_type="因残",
                               projected_per_capita="100"),
                    make_alert(H1, "2026-06", severity="低", projected_per_capita="5000")],
            now=NOW,
        )
        e = the_entry(s, H1)
        assert (e.alert_count, e.first_month, e.last_month, e.severity) == (
            3, "2026-02", "2026-06", "高")
        assert e.risk_type_list() == sorted(["因病", "因残"])
        assert str(evidence_of(e).evidence.projected_per_capita) == "5000"
        set_state(session=s, entry_id=e.id, state="核实排除", actor="o")
        s.commit()
        stats = record_alerts(session=s, alerts=[make_alert(H1, "2026-09")], now=NOW)
        assert stats.new_entries == 1
        assert the_entry(s, H1, 2).first_month == "2026-09"
        with pytest.raises(IntegrityError):  # reopening the first: two open entries
            set_state(session=s, entry_id=e.id, state="核实中", actor="o")
        s.rollback()
        assert counts_by_state(session=s)["新预警"] == 1


@pytest.mark.parametrize("value", ["' OR '1'='1", "%", "_", "'; DROP TABLE watchlist_entries; --",
                                   "\x00", "高' OR 1=1 --"])
def test_hostile_filters(pg_engine: Engine, value: str) -> None:
    with Session(pg_engine) as s:
        record_alerts(session=s, alerts=[make_alert(H1), make_alert(H2)], now=NOW)
        for field in ("region_prefix", "risk_type", "severity", "state", "assignee", "flag"):
            assert list_entries(session=s, filters=EntryFilter(**{field: value})) == ([], 0)
        assert list_entries(session=s)[1] == 2
        only_b = list_entries(session=s, filters=EntryFilter(region_prefix=VILLAGE_B))[0]
        assert [e.household_id for e in only_b] == [H2]
        assert inspect(pg_engine).has_table("watchlist_entries")


def test_concurrent_sinks(pg_engine: Engine) -> None:
    """Four sinks store the same alerts at once, in different orders and batch sizes:
    each alert is stored once, each household gets one entry, and the counts add up."""
    alerts = [make_alert(household(VILLAGE_A, n), f"2026-{m:02d}",
                         severity=random.Random(n * m).choice(["高", "中", "低"]))
              for n in range(1, 13) for m in range(1, 9)]
    url = pg_engine.url.render_as_string(hide_password=False)
    engines = [create_engine_for(url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    results: list[RecordStats] = []
    errors: list[BaseException] = []

    def sink(i: int, engine: Engine) -> None:
        order = alerts[:]
        random.Random(i).shuffle(order)
        size = 3 + i * 2
        try:
            barrier.wait(10)
            with Session(engine) as s:
                for start in range(0, len(order), size):
                    results.append(record_alerts(session=s, alerts=order[start:start + size],
                                                 now=NOW))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sink, args=(i, e)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for e in engines:
        e.dispose()
    assert not errors, errors
    total = sum(results, RecordStats())
    assert total.new_entries == 12
    assert total.new_entries + total.merged == len(alerts)
    assert total.duplicates == 3 * len(alerts)
    with Session(pg_engine) as s:
        entries, alert_rows, _ = table_counts(s)
        assert (entries, alert_rows) == (12, len(alerts))
        for e in s.scalars(select(Entry)):
            assert e.alert_count == 8
            assert (e.first_month, e.last_month) == ("2026-01", "2026-08")
            assert e.episode == 1


def test_web_app_on_postgres(pg_engine: Engine) -> None:
    with Session(pg_engine) as s:
        record_alerts(session=s, alerts=[make_alert(H1, severity="高"), make_alert(H2)], now=NOW)
    add_users(pg_engine, fast=True)
    app = create_app(engine=pg_engine, clock=lambda: NOW)
    with logged_in(app, ROLE_ADMIN) as c:
        html = c.get("/").text
        assert H1 in html and H2 in html and "户编号" in html
        assert c.get("/", params={"region": "\x00"}).status_code == 200
        assert c.get("/api/entries", params={"severity": "高"}).json()["total"] == 1
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/export.csv").content.startswith(b"\xef\xbb\xbf")
        assert c.get("/export.xlsx").content.startswith(b"PK")
    with logged_in(app, ROLE_VILLAGE) as c:  # VILLAGE_A's officer: H2 is elsewhere
        assert [e["household_id"] for e in c.get("/api/entries").json()["items"]] == [H1]


def test_workflow_and_audit_on_postgres(pg_engine: Engine) -> None:
    """The officer's path through the API on PostgreSQL (row locks, timestamptz), and the
    audit trail that the database itself keeps append-only."""
    with Session(pg_engine) as s:
        record_alerts(session=s, alerts=[make_alert(H1, severity="高")], now=NOW)
        entry_id = s.scalars(select(Entry.id)).one()
    add_users(pg_engine, fast=True)
    app = create_app(engine=pg_engine, clock=lambda: NOW)
    with logged_in(app, ROLE_VILLAGE) as c:
        headers = {"X-CSRF-Token": csrf_of(c)}
        for action, body in (("claim", {}), ("visit", {"note": "入户核实：户主住院"}),
                             ("identify", {"monitored_type": "突发严重困难户"})):
            r = c.post(f"/api/entries/{entry_id}/{action}", json=body, headers=headers)
            assert r.status_code == 200, r.text
        r = c.post(f"/api/entries/{entry_id}/eliminate", json={"kind": "自然消除"},
                   headers=headers)
        assert r.status_code == 409  # within 6 months of identification
        detail = c.get(f"/api/entries/{entry_id}").json()
    assert detail["state"] == "已纳入监测" and detail["assignee"] == ROLE_VILLAGE
    actions = [h["action"] for h in detail["history"] if h["actor"] == ROLE_VILLAGE]
    assert actions[:2] == ["claimed", "state changed"] and "identified" in actions
    for sql in ("UPDATE watchlist_history SET actor = 'x'",
                "DELETE FROM watchlist_history",
                "TRUNCATE watchlist_history CASCADE",
                f"DELETE FROM watchlist_entries WHERE id = {entry_id}"):
        with pg_engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(sql))
    with Session(pg_engine) as s:
        assert s.scalar(select(func.count()).select_from(History)) == len(detail["history"])

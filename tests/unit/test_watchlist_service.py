"""Watch-list service on SQLite: idempotent ingestion, merging, episodes, queries."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consumers.watchlist import service
from consumers.watchlist.models import (
    STATES,
    AlertRecord,
    Entry,
    History,
    create_engine_for,
    init_db,
)
from consumers.watchlist.service import (
    EntryFilter,
    RecordStats,
    counts_by_state,
    evidence_of,
    get_entry,
    list_entries,
    record_alerts,
    set_state,
)
from schemas import encode
from tests.unit.test_watchlist_helpers import (
    NOW,
    VILLAGE_A,
    VILLAGE_B,
    household,
    make_alert,
    snapshot,
    sqlite_engine,
    table_counts,
)

H1 = household(VILLAGE_A, 1)
H2 = household(VILLAGE_A, 2)
H3 = household(VILLAGE_B, 3)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


def the_entry(session: Session, household_id: str, episode: int = 1) -> Entry:
    session.expire_all()
    return session.scalars(
        select(Entry).where(Entry.entry_key == f"{household_id}#{episode}")
    ).one()


# -- engine -------------------------------------------------------------------------------


def test_sqlite_engine_creates_the_folder_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "watchlist.db"
    engine = create_engine_for(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
    assert path.parent.is_dir()
    engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@127.0.0.1:5999/db",
        "postgres://u@127.0.0.1:5999/db",
        "postgresql+psycopg://u@127.0.0.1:5999/db",
    ],
)
def test_postgres_urls_use_psycopg3(url: str) -> None:
    engine = create_engine_for(url)  # no connection is made here
    assert engine.url.drivername == "postgresql+psycopg"
    assert engine.url.database == "db"


def test_other_postgres_drivers_and_schemes_are_refused() -> None:
    with pytest.raises(ValueError):
        create_engine_for("postgresql+psycopg2://u@127.0.0.1/db")
    with pytest.raises(ValueError):
        create_engine_for("mysql://u@127.0.0.1/db")


def test_init_db_creates_the_three_tables(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert {"watchlist_entries", "watchlist_alerts", "watchlist_history"} <= names


# -- ingestion ----------------------------------------------------------------------------


def test_replaying_the_same_alerts_changes_nothing(session: Session) -> None:
    alerts = [
        make_alert(H1, "2026-03"),
        make_alert(H1, "2026-04", severity="高"),
        make_alert(H2, "2026-03", risk_type="因务工就业不稳"),
        make_alert(H3, "2026-05"),
    ]
    first = record_alerts(session=session, alerts=alerts, now=NOW)
    assert first == RecordStats(new_entries=3, merged=1, duplicates=0)
    before_rows = table_counts(session)
    before = snapshot(session)

    later = NOW + dt.timedelta(days=3)
    again = record_alerts(session=session, alerts=alerts, now=later)
    assert again == RecordStats(new_entries=0, merged=0, duplicates=4)
    assert table_counts(session) == before_rows
    assert snapshot(session) == before  # not even updated_at moved

    # In reverse order, one at a time: still nothing.
    for alert in reversed(alerts):
        assert record_alerts(session=session, alerts=[alert], now=later).duplicates == 1
    assert snapshot(session) == before


def test_a_duplicate_inside_one_batch_counts_once(session: Session) -> None:
    alert = make_alert(H1, "2026-03")
    stats = record_alerts(session=session, alerts=[alert, alert], now=NOW)
    assert stats == RecordStats(new_entries=1, merged=0, duplicates=1)
    assert the_entry(session, H1).alert_count == 1


def test_new_entry_fields(session: Session) -> None:
    alert = make_alert(
        H1,
        "2026-03",
        risk_type="因病",
        severity="中",
        rules=(
            ("medical_spike", "因病", "住院自付 12,000 元"),
            ("below_line", "因务工就业不稳", "预计人均纯收入低于监测线"),
        ),
    )
    record_alerts(session=session, alerts=[alert], now=NOW)
    e = the_entry(session, H1)
    assert e.entry_key == f"{H1}#1"
    assert e.episode == 1
    assert e.region_code == VILLAGE_A
    assert e.household_type == "脱贫户"
    assert e.risk_type == "因病"
    assert e.risk_types == "、".join(sorted(["因病", "因务工就业不稳"]))
    assert e.rules == "below_line;medical_spike"
    assert e.severity == "中"
    assert e.state == "新预警"
    assert (e.first_month, e.last_month, e.alert_count) == ("2026-03", "2026-03", 1)
    assert e.rule_version == "2026.11-1"
    assert e.created_at == NOW and e.created_at.tzinfo is not None
    assert e.updated_at.utcoffset() == dt.timedelta(0)
    view = evidence_of(e)
    assert view.month == "2026-03"
    assert [r.rule for r in view.reasons] == ["medical_spike", "below_line"]
    assert str(view.evidence.projected_per_capita) == "7100.50"
    assert [h.action for h in e.history] == ["created"]
    assert e.history[0].actor == "system"
    record = session.scalars(select(AlertRecord)).one()
    assert (record.alert_id, record.entry_id, record.month) == (alert.id, e.id, "2026-03")
    assert record.received_at == NOW


def test_alerts_for_an_open_entry_are_merged(session: Session) -> None:
    record_alerts(
        session=session,
        alerts=[make_alert(H1, "2026-04", risk_type="因病", severity="中",
                           projected_per_capita="7000")],
        now=NOW,
    )
    later = NOW + dt.timedelta(days=30)
    stats = record_alerts(
        session=session,
        alerts=[
            make_alert(
                H1, "2026-05", risk_type="因务工就业不稳", severity="高",
                rules=(("job_loss", "因务工就业不稳", "解除劳动合同后未再就业"),),
                projected_per_capita="5000", rule_version="2026.12-1",
            ),
            # an older month arriving late: widens the months, does not replace evidence
            make_alert(H1, "2026-02", severity="低", projected_per_capita="9000",
                       rules=(("income_drop", "其他", "收入骤降"),)),
        ],
        now=later,
    )
    assert stats == RecordStats(new_entries=0, merged=2, duplicates=0)
    e = the_entry(session, H1)
    assert e.alert_count == 3
    assert (e.first_month, e.last_month) == ("2026-02", "2026-05")
    assert e.severity == "高"  # the max, not the last one's 低
    assert e.risk_type == "因病"  # the main one stays the first alert's
    assert e.risk_type_list() == sorted(["因病", "因务工就业不稳", "其他"])
    assert e.rule_list() == ["below_line", "income_drop", "job_loss"]
    view = evidence_of(e)
    assert view.month == "2026-05"
    assert str(view.evidence.projected_per_capita) == "5000"
    assert e.rule_version == "2026.12-1"
    assert e.created_at == NOW and e.updated_at == later
    actions = [h.action for h in e.history]
    assert actions.count("created") == 1
    assert actions.count("alert merged") == 2
    assert ("severity raised", "中", "高") in [(h.action, h.old_value, h.new_value)
                                               for h in e.history]
    assert len(e.alerts) == 3
    assert [a.month for a in e.alerts] == ["2026-02", "2026-04", "2026-05"]


def test_a_batch_is_applied_oldest_month_first(session: Session) -> None:
    # Given newest first in one batch, the oldest still opens the entry.
    record_alerts(
        session=session,
        alerts=[make_alert(H1, "2026-06", risk_type="因务工就业不稳"),
                make_alert(H1, "2026-05", risk_type="因病")],
        now=NOW,
    )
    e = the_entry(session, H1)
    assert e.risk_type == "因病"
    assert evidence_of(e).month == "2026-06"


def test_a_closed_entry_gets_a_new_episode(session: Session) -> None:
    record_alerts(session=session, alerts=[make_alert(H1, "2026-03")], now=NOW)
    first = the_entry(session, H1)
    set_state(session=session, entry_id=first.id, state="核实排除", actor="officer-7",
              now=NOW + dt.timedelta(days=2))
    session.commit()

    stats = record_alerts(session=session, alerts=[make_alert(H1, "2026-07", risk_type="因残")],
                          now=NOW + dt.timedelta(days=90))
    assert stats.new_entries == 1
    second = the_entry(session, H1, episode=2)
    assert second.entry_key == f"{H1}#2"
    assert second.id != first.id
    assert (second.first_month, second.risk_type, second.state) == ("2026-07", "因残", "新预警")
    assert the_entry(session, H1).alert_count == 1  # the closed one is untouched

    # Once the second is closed as 风险消除 too, a third episode opens.
    set_state(session=session, entry_id=second.id, state="风险消除", actor="officer-7")
    session.commit()
    record_alerts(session=session, alerts=[make_alert(H1, "2026-10")], now=NOW)
    assert the_entry(session, H1, episode=3).first_month == "2026-10"


@pytest.mark.parametrize("state", ["已接收", "核实中", "已纳入监测", "帮扶中"])
def test_every_open_state_keeps_merging(session: Session, state: str) -> None:
    record_alerts(session=session, alerts=[make_alert(H1, "2026-03")], now=NOW)
    set_state(session=session, entry_id=the_entry(session, H1).id, state=state, actor="o")
    session.commit()
    stats = record_alerts(session=session, alerts=[make_alert(H1, "2026-04")], now=NOW)
    assert stats.merged == 1
    assert the_entry(session, H1).state == state


def test_set_state_records_history(session: Session) -> None:
    record_alerts(session=session, alerts=[make_alert(H1, "2026-03")], now=NOW)
    e = the_entry(session, H1)
    at = NOW + dt.timedelta(hours=5)
    set_state(session=session, entry_id=e.id, state="已接收", actor="张干部", now=at)
    set_state(session=session, entry_id=e.id, state="已接收", actor="张干部", now=at)  # no-op
    session.commit()
    rows = session.scalars(
        select(History).where(History.entry_id == e.id).order_by(History.id)
    ).all()
    assert [(h.action, h.actor, h.old_value, h.new_value) for h in rows][1:] == [
        ("state changed", "张干部", "新预警", "已接收")
    ]
    assert rows[-1].at == at
    with pytest.raises(ValueError):
        set_state(session=session, entry_id=e.id, state="closed", actor="x")
    with pytest.raises(LookupError):
        set_state(session=session, entry_id=999_999, state="已接收", actor="x")


def test_only_one_open_entry_per_household(session: Session) -> None:
    record_alerts(session=session, alerts=[make_alert(H1, "2026-03")], now=NOW)
    first = the_entry(session, H1)
    set_state(session=session, entry_id=first.id, state="核实排除", actor="o")
    session.commit()
    record_alerts(session=session, alerts=[make_alert(H1, "2026-05")], now=NOW)
    with pytest.raises(IntegrityError):
        set_state(session=session, entry_id=first.id, state="核实中", actor="o")
    session.rollback()


def test_naive_datetimes_are_refused(session: Session) -> None:
    with pytest.raises(Exception, match="timezone-aware"):
        record_alerts(session=session, alerts=[make_alert(H1)], now=dt.datetime(2026, 1, 1))
    session.rollback()
    assert table_counts(session) == (0, 0, 0)


def test_two_writers_on_one_sqlite_file(tmp_path: Path) -> None:
    """Two sinks (two engines) storing overlapping alerts at once: every alert once."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engines = [create_engine_for(url) for _ in range(2)]
    init_db(engines[0])
    alerts = [make_alert(household(VILLAGE_A, n), f"2026-{m:02d}")
              for n in range(1, 9) for m in range(1, 7)]
    results: list[RecordStats] = []
    errors: list[BaseException] = []

    def sink(engine: Engine, batch: list) -> None:
        try:
            with Session(engine) as s:
                for i in range(0, len(batch), 5):
                    results.append(record_alerts(session=s, alerts=batch[i:i + 5], now=NOW))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=sink, args=(engines[0], alerts)),
               threading.Thread(target=sink, args=(engines[1], list(reversed(alerts))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    total = sum(results, RecordStats())
    assert total.new_entries == 8
    assert total.new_entries + total.merged == len(alerts)
    assert total.duplicates == len(alerts)
    with Session(engines[0]) as s:
        assert table_counts(s)[:2] == (8, len(alerts))
        assert sum(e.alert_count for e in s.scalars(select(Entry))) == len(alerts)
    for e in engines:
        e.dispose()


# -- queries ------------------------------------------------------------------------------


@pytest.fixture
def seeded(session: Session) -> Session:
    record_alerts(
        session=session,
        alerts=[
            make_alert(household(VILLAGE_A, 1), "2026-01", risk_type="因病", severity="高"),
            make_alert(household(VILLAGE_A, 2), "2026-02", risk_type="因务工就业不稳",
                       severity="中"),
            make_alert(household(VILLAGE_A, 3), "2026-03", risk_type="缺劳动力", severity="低",
                       rules=(("below_line", "缺劳动力", "x"), ("income_drop", "因病", "y"))),
            make_alert(household(VILLAGE_B, 4), "2026-04", risk_type="因病", severity="中"),
            make_alert(household(VILLAGE_B, 5), "2026-05", risk_type="其他", severity="高"),
        ],
        now=NOW,
    )
    e5 = the_entry(session, household(VILLAGE_B, 5))
    set_state(session=session, entry_id=e5.id, state="核实中", actor="o")
    e4 = the_entry(session, household(VILLAGE_B, 4))
    set_state(session=session, entry_id=e4.id, state="已纳入监测", actor="o")
    # The workflow's columns, for the assignee and flag filters.
    e1, e2, _, e4, e5 = (the_entry(session, household(v, n))
                         for v, n in ((VILLAGE_A, 1), (VILLAGE_A, 2), (VILLAGE_A, 3),
                                      (VILLAGE_B, 4), (VILLAGE_B, 5)))
    e1.assignee, e2.assignee, e5.assignee = "zhang", "li", "zhang"
    e1.escalated_at = NOW
    e2.snoozed_until, e2.snooze_reason = NOW + dt.timedelta(days=5), "外出务工，月底返乡"
    e4.identified_at = NOW - dt.timedelta(days=40)  # and no measure: needs one
    session.commit()
    return session


def hids(entries: list[Entry]) -> list[str]:
    return [e.household_id[-1] for e in entries]


def listed(session: Session, now: dt.datetime | None = None, **filters: object) -> list[str]:
    return hids(list_entries(session=session, filters=EntryFilter(**filters),  # type: ignore[arg-type]
                             now=now)[0])


def test_list_entries_filters(seeded: Session) -> None:
    s = seeded
    entries, total = list_entries(session=s)
    assert (hids(entries), total) == (["1", "2", "3", "4", "5"], 5)
    assert listed(s, region_prefix=VILLAGE_B) == ["4", "5"]
    assert listed(s, region_prefix="990122") == ["1", "2", "3"]
    assert listed(s, region_prefix="99") == ["1", "2", "3", "4", "5"]
    # any risk type seen, including a secondary reason's
    assert listed(s, risk_type="因病") == ["1", "3", "4"]
    assert listed(s, risk_type="因务工就业不稳") == ["2"]
    assert listed(s, severity="高") == ["1", "5"]
    assert listed(s, state="核实中") == ["5"]
    assert listed(s, state="新预警", severity="中") == ["2"]
    assert listed(s, risk_type="因") == []  # whole items only
    assert listed(s, nothing=True) == []  # a region outside the user's scope
    assert listed(s, nothing=True, region_prefix="99") == []


def test_list_entries_assignee_and_flags(seeded: Session) -> None:
    s = seeded
    assert listed(s, assignee="zhang") == ["1", "5"]
    assert listed(s, assignee="zhang", region_prefix=VILLAGE_A) == ["1"]
    assert listed(s, assignee="nobody") == []
    assert listed(s, now=NOW, flag="needs_measure") == ["4"]
    # identified 25 days before "now": not yet due a measure
    assert listed(s, now=NOW - dt.timedelta(days=15), flag="needs_measure") == []
    assert listed(s, now=NOW, flag="snoozed") == ["2"]
    assert listed(s, now=NOW + dt.timedelta(days=6), flag="snoozed") == []  # expired
    assert listed(s, now=NOW, flag="escalated") == ["1"]
    assert listed(s, now=NOW, flag="unassigned") == ["3", "4"]
    assert listed(s, now=NOW, flag="unassigned", region_prefix=VILLAGE_A) == ["3"]
    assert listed(s, flag="no-such-flag") == []
    assert set(service.FLAGS) == {"needs_measure", "snoozed", "escalated", "unassigned"}
    # a closed entry is neither escalated nor unassigned any more
    e1 = the_entry(s, household(VILLAGE_A, 1))
    set_state(session=s, entry_id=e1.id, state="核实排除", actor="o")
    s.commit()
    assert listed(s, now=NOW, flag="escalated") == []


def test_list_entries_overdue(seeded: Session) -> None:
    s = seeded
    soon = NOW + dt.timedelta(days=10)
    late = NOW + dt.timedelta(days=16)
    assert listed(s, now=soon, overdue=True) == []
    # 已纳入监测 (household 4) is identified, so never overdue
    assert listed(s, now=late, overdue=True) == ["1", "2", "3", "5"]
    assert listed(s, now=late, overdue=False) == ["4"]
    e1 = the_entry(s, household(VILLAGE_A, 1))
    assert e1.is_overdue(late) and not e1.is_overdue(soon)
    assert e1.days_open(late) == 16


def test_list_entries_pages_and_sorts(seeded: Session) -> None:
    s = seeded
    page1, total = list_entries(session=s, page=1, page_size=2)
    page3, _ = list_entries(session=s, page=3, page_size=2)
    assert (hids(page1), hids(page3), total) == (["1", "2"], ["5"], 5)
    assert list_entries(session=s, page=9, page_size=2) == ([], 5)
    assert hids(list_entries(session=s, sort="-first_month")[0]) == ["5", "4", "3", "2", "1"]
    assert hids(list_entries(session=s, sort="severity")[0]) == ["1", "5", "2", "4", "3"]
    for sort in service.SORTS:
        assert list_entries(session=s, sort=sort)[1] == 5
    with pytest.raises(ValueError):
        list_entries(session=s, sort="id; DROP TABLE watchlist_entries")


INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "990122%",
    "%",
    "_",
    "99012_",
    "\\",
    "'; DROP TABLE watchlist_entries; --",
    "高' OR '1'='1",
    "新预警' OR state <> '",
    "因病、",
    "zhang' OR assignee IS NULL OR '1'='1",
    "needs_measure' OR 1=1 --",
    "\x00",
]
FILTER_FIELDS = ["region_prefix", "risk_type", "severity", "state", "assignee", "flag"]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", FILTER_FIELDS)
def test_filters_bind_hostile_values(seeded: Session, field: str, value: str) -> None:
    hostile = EntryFilter(**{field: value})  # type: ignore[arg-type]
    entries, total = list_entries(session=seeded, filters=hostile)
    assert (entries, total) == ([], 0)
    assert sum(counts_by_state(session=seeded, filters=hostile).values()) == 0
    assert seeded.scalars(service.filtered_entries(hostile)).all() == []
    assert list_entries(session=seeded)[1] == 5  # the table is still there
    assert inspect(seeded.get_bind()).has_table("watchlist_entries")


def test_get_entry_and_counts(seeded: Session) -> None:
    e1 = the_entry(seeded, household(VILLAGE_A, 1))
    got = get_entry(session=seeded, entry_id=e1.id)
    assert got is not None and got.household_id == e1.household_id
    assert [h.action for h in got.history] == ["created"]
    assert get_entry(session=seeded, entry_id=424242) is None
    counts = counts_by_state(session=seeded)
    assert list(counts) == list(STATES)
    assert counts == {"新预警": 3, "已接收": 0, "核实中": 1, "已纳入监测": 1, "核实排除": 0,
                      "帮扶中": 0, "风险消除": 0}


def test_counts_by_state_with_filters(seeded: Session) -> None:
    counts = counts_by_state(session=seeded, filters=EntryFilter(region_prefix=VILLAGE_B))
    assert list(counts) == list(STATES)
    assert counts == {"新预警": 0, "已接收": 0, "核实中": 1, "已纳入监测": 1, "核实排除": 0,
                      "帮扶中": 0, "风险消除": 0}
    by_zhang = counts_by_state(session=seeded, filters=EntryFilter(assignee="zhang"))
    assert (by_zhang["新预警"], by_zhang["核实中"], sum(by_zhang.values())) == (1, 1, 2)
    assert sum(counts_by_state(session=seeded, filters=EntryFilter(nothing=True)).values()) == 0
    # no filters, and an empty filter, count everything
    assert counts_by_state(session=seeded, filters=EntryFilter()) == counts_by_state(
        session=seeded)


def test_a_month_judged_again_replaces_the_stored_alert(session: Session) -> None:
    """Late data makes the worker judge a month again: same alert id, newer figures. The
    watch list keeps the latest judgement (the evidence, a higher severity, new reasons),
    says so in the history, and a replay of either judgement changes nothing more."""
    first = make_alert(H1, "2026-03", severity="中", projected_per_capita="7900.00",
                       alert_id="a-2026-03")
    again = make_alert(H1, "2026-03", severity="高", projected_per_capita="5100.00",
                       alert_id="a-2026-03",
                       rules=(("below_line", "因病", "低于监测线"),
                              ("job-loss", "因务工就业不稳", "失业")))
    assert record_alerts(session=session, alerts=[first], now=NOW).new_entries == 1
    stats = record_alerts(session=session, alerts=[again], now=NOW)
    assert (stats.revised, stats.duplicates, stats.new_entries) == (1, 0, 0)
    assert record_alerts(session=session, alerts=[again], now=NOW).duplicates == 1
    entry = session.scalars(select(Entry)).one()
    assert entry.alert_count == 1 and entry.severity == "高"
    assert evidence_of(entry).evidence.projected_per_capita == Decimal("5100.00")
    assert "job-loss" in entry.rule_list() and "因务工就业不稳" in entry.risk_type_list()
    assert session.scalar(select(AlertRecord.payload)) == encode(again).decode()
    actions = [h.action for h in session.scalars(select(History).order_by(History.id))]
    assert actions == ["created", "alert revised", "severity raised"]


def test_a_judgement_again_replaces_what_the_superseded_one_added(session: Session) -> None:
    """The entry's severity, risk types and rules follow its alerts as they now stand: a
    reason only the superseded judgement gave does not linger."""
    early = make_alert(H1, "2026-03", severity="高", alert_id="a-03",
                       rules=(("job-loss", "因务工就业不稳", "失业"),))
    other = make_alert(H1, "2026-04", severity="低", alert_id="a-04", risk_type="缺劳动力")
    again = make_alert(H1, "2026-03", severity="中", alert_id="a-03", risk_type="因病")
    record_alerts(session=session, alerts=[early, other], now=NOW)
    assert record_alerts(session=session, alerts=[again], now=NOW).revised == 1
    entry = session.scalars(select(Entry)).one()
    assert (entry.severity, entry.risk_type) == ("中", "因病")
    assert entry.risk_type_list() == sorted(["因病", "缺劳动力"])
    assert "job-loss" not in entry.rule_list()
    history = [(h.action, h.old_value, h.new_value)
               for h in session.scalars(select(History).order_by(History.id))]
    assert ("severity lowered", "高", "中") in history

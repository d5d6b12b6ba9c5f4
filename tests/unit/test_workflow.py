"""The watch-list workflow (consumers.watchlist.workflow) on SQLite: the path from a new
warning to eliminated risk, the refusals, who may do what, and the audit trail."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from consumers.watchlist import workflow
from consumers.watchlist.models import (
    ROLE_ADMIN,
    ROLE_COUNTY,
    ROLE_PUBLISHER,
    ROLE_TOWNSHIP,
    ROLE_VILLAGE,
    Entry,
    History,
    Measure,
    Note,
    User,
)
from consumers.watchlist.service import record_alerts
from consumers.watchlist.workflow import Forbidden, WorkflowError, add_months
from tests.unit.test_watchlist_helpers import (
    NOW,
    VILLAGE_A,
    VILLAGE_B,
    household,
    make_alert,
    sqlite_engine,
)
from tests.unit.watchlist_web import add_users

UTC = dt.UTC
USERS = {
    "cun": (ROLE_VILLAGE, VILLAGE_A),  # the village officer of VILLAGE_A
    "cun_b": (ROLE_VILLAGE, VILLAGE_B),  # another county's village officer
    "xiang": (ROLE_TOWNSHIP, VILLAGE_A[:9]),
    "xian": (ROLE_COUNTY, VILLAGE_A[:6]),  # VILLAGE_A's county lead
    "xian_b": (ROLE_COUNTY, VILLAGE_B[:6]),
    "admin": (ROLE_ADMIN, ""),
    "pub": (ROLE_PUBLISHER, ""),
    "old": (ROLE_VILLAGE, VILLAGE_A),  # deactivated below
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path)
    add_users(engine, USERS, fast=True)
    with Session(engine) as s:
        old = s.scalars(select(User).where(User.username == "old")).one()
        old.active = False
        s.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


def user(session: Session, username: str) -> User:
    return session.scalars(select(User).where(User.username == username)).one()


def new_entry(session: Session, village: str = VILLAGE_A, n: int = 1,
              now: dt.datetime = NOW) -> int:
    record_alerts(session=session, alerts=[make_alert(household(village, n), "2026-10")],
                  now=now)
    return session.scalars(select(Entry.id).where(
        Entry.household_id == household(village, n), Entry.state == "新预警")).one()


def entry(session: Session, entry_id: int) -> Entry:
    found = session.get(Entry, entry_id)
    assert found is not None
    return found


def trail(session: Session, entry_id: int) -> list[tuple[str, str, str | None, str | None]]:
    """The entry's audit rows after "created": (actor, action, old, new)."""
    rows = session.scalars(select(History).where(History.entry_id == entry_id)
                           .order_by(History.id)).all()
    assert rows[0].action == "created"
    return [(h.actor, h.action, h.old_value, h.new_value) for h in rows[1:]]


def snapshot(session: Session, entry_id: int) -> tuple[object, ...]:
    """Everything an action could change about an entry."""
    session.flush()
    e = entry(session, entry_id)
    counts = tuple(
        session.scalar(select(func.count()).select_from(t).where(t.entry_id == entry_id))
        for t in (History, Note, Measure)
    )
    return (e.state, e.assignee, e.acknowledged_at, e.identified_at, e.monitored_type,
            e.dismiss_reason, e.elimination_kind, e.closed_at, e.measure_count,
            e.snoozed_until, e.snooze_reason, e.escalated_at, e.supervised_at, e.updated_at,
            counts)


# Each step takes (session, actor, entry id, now).
Step = Callable[[Session, User, int, dt.datetime], workflow.Outcome]


def claim(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.claim(session=s, user=u, entry_id=i, now=now)


def visit(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.start_visit(session=s, user=u, entry_id=i, note="入户走访，家中两人住院",
                                now=now)


def identify(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.identify(session=s, user=u, entry_id=i, monitored_type="边缘易致贫户",
                             now=now)


def dismiss(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.dismiss(session=s, user=u, entry_id=i, reason="not_at_risk", now=now)


def measure(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.add_measure(session=s, user=u, entry_id=i, category="健康帮扶",
                                text="落实医疗救助", now=now)


def eliminate(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.eliminate(session=s, user=u, entry_id=i, kind="自然消除", now=now)


def snooze(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.snooze(session=s, user=u, entry_id=i, until=now + dt.timedelta(days=7),
                           reason="外出务工", now=now)


def note(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.add_note(session=s, user=u, entry_id=i, text="电话联系", now=now)


def assign(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.assign(session=s, user=u, entry_id=i, assignee="xiang", now=now)


def escalate(s: Session, u: User, i: int, now: dt.datetime) -> workflow.Outcome:
    return workflow.escalate(session=s, user=u, entry_id=i, reason="逾期未核实", now=now)


STEPS: dict[str, Step] = {
    "claim": claim, "visit": visit, "identify": identify, "dismiss": dismiss,
    "measure": measure, "eliminate": eliminate, "snooze": snooze, "note": note,
    "assign": assign, "escalate": escalate,
}


def walk(session: Session, entry_id: int, steps: list[str], *, actor: str = "xian",
         start: dt.datetime = NOW) -> dt.datetime:
    """Run ``steps`` (each a day after the last) as ``actor``; returns the last time."""
    now = start
    for name in steps:
        now += dt.timedelta(days=1)
        STEPS[name](session, user(session, actor), entry_id, now)
    session.commit()
    return now


# -- the whole path -----------------------------------------------------------------------


def test_the_whole_path_from_new_warning_to_eliminated_risk(session: Session) -> None:
    cun = user(session, "cun")
    eid = new_entry(session)
    t = [NOW + dt.timedelta(days=d) for d in range(6)]

    out = workflow.claim(session=session, user=cun, entry_id=eid, now=t[1])
    assert out.changed and out.entry.state == "已接收"
    e = entry(session, eid)
    assert (e.assignee, e.acknowledged_at) == ("cun", t[1])

    workflow.start_visit(session=session, user=cun, entry_id=eid, note="入户核实：收入确有下降",
                         now=t[2])
    assert e.state == "核实中"
    assert [(n.kind, n.author, n.text) for n in workflow.notes_of(session=session,
                                                                  entry_id=eid)] == [
        ("visit", "cun", "入户核实：收入确有下降")]

    workflow.identify(session=session, user=cun, entry_id=eid, monitored_type="脱贫不稳定户",
                      now=t[3])
    assert (e.state, e.monitored_type, e.identified_at) == ("已纳入监测", "脱贫不稳定户", t[3])
    assert workflow.earliest_elimination(e) == add_months(t[3], 6)

    workflow.add_measure(session=session, user=cun, entry_id=eid, category="就业帮扶",
                         text="推荐到县城务工", now=t[4])
    assert (e.state, e.measure_count) == ("帮扶中", 1)
    assert [(m.category, m.text) for m in workflow.measures_of(session=session,
                                                               entry_id=eid)] == [
        ("就业帮扶", "推荐到县城务工")]

    done = add_months(t[3], 6)
    workflow.eliminate(session=session, user=cun, entry_id=eid, kind="帮扶消除", now=done)
    session.commit()
    assert (e.state, e.elimination_kind, e.closed_at) == ("风险消除", "帮扶消除", done)
    assert not e.is_open

    assert trail(session, eid) == [
        ("cun", "claimed", None, "cun"),
        ("cun", "state changed", "新预警", "已接收"),
        ("cun", "visit recorded", None, "入户核实：收入确有下降"),
        ("cun", "state changed", "已接收", "核实中"),
        ("cun", "identified", None, "脱贫不稳定户"),
        ("cun", "state changed", "核实中", "已纳入监测"),
        ("cun", "measure added", None, "就业帮扶：推荐到县城务工"),
        ("cun", "state changed", "已纳入监测", "帮扶中"),
        ("cun", "eliminated", None, "帮扶消除"),
        ("cun", "state changed", "帮扶中", "风险消除"),
    ]
    times = session.scalars(select(History.at).where(History.entry_id == eid)
                            .order_by(History.id)).all()
    assert times[1:] == [t[1], t[1], t[2], t[2], t[3], t[3], t[4], t[4], done, done]


@pytest.mark.parametrize("monitored_type", workflow.MONITORED_TYPES)
def test_identify_with_each_monitored_type(session: Session, monitored_type: str) -> None:
    eid = new_entry(session)
    at = walk(session, eid, ["claim", "visit"])
    workflow.identify(session=session, user=user(session, "xiang"), entry_id=eid,
                      monitored_type=monitored_type, now=at)
    session.commit()
    e = entry(session, eid)
    assert (e.state, e.monitored_type, e.identified_at) == ("已纳入监测", monitored_type, at)
    assert trail(session, eid)[-2:] == [
        ("xiang", "identified", None, monitored_type),
        ("xiang", "state changed", "核实中", "已纳入监测"),
    ]


@pytest.mark.parametrize("reason", list(workflow.DISMISS_REASONS))
@pytest.mark.parametrize("path", [["claim"], ["claim", "visit"], ["visit"]])
def test_dismiss_with_each_reason(session: Session, reason: str, path: list[str]) -> None:
    eid = new_entry(session)
    at = walk(session, eid, path)
    before = entry(session, eid).state
    workflow.dismiss(session=session, user=user(session, "cun"), entry_id=eid, reason=reason,
                     now=at)
    session.commit()
    e = entry(session, eid)
    assert (e.state, e.dismiss_reason, e.closed_at) == ("核实排除", reason, at)
    assert trail(session, eid)[-2:] == [
        ("cun", "dismissed", None, reason),
        ("cun", "state changed", before, "核实排除"),
    ]


def test_a_visit_claims_an_unassigned_entry(session: Session) -> None:
    eid = new_entry(session)
    workflow.start_visit(session=session, user=user(session, "xiang"), entry_id=eid,
                         note="走访", now=NOW)
    e = entry(session, eid)
    assert (e.state, e.assignee, e.acknowledged_at) == ("核实中", "xiang", NOW)
    assert trail(session, eid) == [
        ("xiang", "claimed", None, "xiang"),
        ("xiang", "visit recorded", None, "走访"),
        ("xiang", "state changed", "新预警", "核实中"),
    ]
    # a second visit is recorded too, without another state change
    workflow.start_visit(session=session, user=user(session, "cun"), entry_id=eid,
                         note="复访", now=NOW)
    assert trail(session, eid)[-1] == ("cun", "visit recorded", None, "复访")
    assert entry(session, eid).assignee == "xiang"


def test_claiming_twice_changes_nothing(session: Session) -> None:
    eid = new_entry(session)
    walk(session, eid, ["claim"], actor="cun")
    before = snapshot(session, eid)
    out = workflow.claim(session=session, user=user(session, "cun"), entry_id=eid,
                         now=NOW + dt.timedelta(days=3))
    assert not out.changed
    assert snapshot(session, eid) == before
    # someone else cannot take it by claiming
    with pytest.raises(WorkflowError):
        workflow.claim(session=session, user=user(session, "xiang"), entry_id=eid, now=NOW)
    assert snapshot(session, eid) == before


# -- refusals -----------------------------------------------------------------------------

ILLEGAL = [
    # (steps to get there, the refused step)
    ([], "identify"),  # identify before a visit
    (["claim"], "identify"),  # still no visit
    ([], "dismiss"),  # nobody has looked yet
    ([], "measure"),
    ([], "eliminate"),
    (["claim", "visit"], "eliminate"),  # eliminate from 核实中
    (["claim", "visit"], "measure"),  # a measure before identification
    (["claim", "visit", "identify"], "visit"),
    (["claim", "visit", "identify"], "dismiss"),
    (["claim", "visit", "identify"], "identify"),
    (["claim", "visit", "identify", "measure"], "identify"),
    (["claim", "visit", "identify"], "claim"),
    # nothing happens to a closed entry but notes
    (["claim", "dismiss"], "claim"),
    (["claim", "dismiss"], "visit"),
    (["claim", "dismiss"], "identify"),
    (["claim", "dismiss"], "measure"),
    (["claim", "dismiss"], "eliminate"),
    (["claim", "dismiss"], "dismiss"),
    (["claim", "dismiss"], "snooze"),
    (["claim", "dismiss"], "assign"),
    (["claim", "dismiss"], "escalate"),
]


@pytest.mark.parametrize(("path", "refused"), ILLEGAL,
                         ids=[f"{'-'.join(p) or 'new'}:{r}" for p, r in ILLEGAL])
def test_illegal_transitions_are_refused_and_change_nothing(
        session: Session, path: list[str], refused: str) -> None:
    eid = new_entry(session)
    at = walk(session, eid, path)
    before = snapshot(session, eid)
    # refused to an administrator (who may act anywhere, and is not the assignee: claiming
    # one's own entry again is a no-op, not a refusal)
    with pytest.raises(WorkflowError) as info:
        STEPS[refused](session, user(session, "admin"), eid, at + dt.timedelta(days=400))
    assert info.value.status == 409
    assert str(info.value) == info.value.zh and info.value.en  # both languages
    assert snapshot(session, eid) == before
    session.rollback()
    assert snapshot(session, eid) == before


@pytest.mark.parametrize(("action", "kwargs"), [
    ("identify", {"monitored_type": "普通农户"}),
    ("identify", {"monitored_type": ""}),
    ("dismiss", {"reason": "不想管"}),
    ("dismiss", {"reason": ""}),
    ("start_visit", {"note": ""}),
    ("start_visit", {"note": "   "}),
    ("start_visit", {"note": "很长" * 1001}),
    ("add_note", {"text": ""}),
    ("add_note", {"text": "x" * (workflow.NOTE_MAX + 1)}),
    ("escalate", {"reason": " "}),
    ("snooze", {"reason": "", "until": NOW + dt.timedelta(days=7)}),
])
def test_bad_input_is_refused_with_422(session: Session, action: str,
                                       kwargs: dict[str, Any]) -> None:
    eid = new_entry(session)
    walk(session, eid, ["claim", "visit"] if action in ("identify", "dismiss") else [])
    before = snapshot(session, eid)
    with pytest.raises(WorkflowError) as info:
        getattr(workflow, action)(session=session, user=user(session, "xian"), entry_id=eid,
                                  now=NOW + dt.timedelta(days=5), **kwargs)
    assert info.value.status == 422
    assert snapshot(session, eid) == before


@pytest.mark.parametrize(("category", "body"), [("不存在的类别", "x"), ("产业帮扶", ""),
                                                ("产业帮扶", "  ")])
def test_bad_measures_and_elimination_kinds_are_refused(session: Session, category: str,
                                                        body: str) -> None:
    eid = new_entry(session)
    at = walk(session, eid, ["claim", "visit", "identify"])
    before = snapshot(session, eid)
    xian = user(session, "xian")
    with pytest.raises(WorkflowError) as info:
        workflow.add_measure(session=session, user=xian, entry_id=eid, category=category,
                             text=body, now=at)
    assert info.value.status == 422
    with pytest.raises(WorkflowError) as info:
        workflow.eliminate(session=session, user=xian, entry_id=eid, kind="随便消除",
                           now=add_months(at, 12))
    assert info.value.status == 422
    assert snapshot(session, eid) == before


# -- elimination: six calendar months after identification ---------------------------------


@pytest.mark.parametrize(("when", "months", "expected"), [
    (dt.datetime(2026, 8, 31, 2, 0, tzinfo=UTC), 6, dt.datetime(2027, 2, 28, 2, 0, tzinfo=UTC)),
    (dt.datetime(2027, 8, 31, 2, 0, tzinfo=UTC), 6, dt.datetime(2028, 2, 29, 2, 0, tzinfo=UTC)),
    (dt.datetime(2027, 8, 30, 2, 0, tzinfo=UTC), 6, dt.datetime(2028, 2, 29, 2, 0, tzinfo=UTC)),
    (dt.datetime(2027, 8, 29, 2, 0, tzinfo=UTC), 6, dt.datetime(2028, 2, 29, 2, 0, tzinfo=UTC)),
    (dt.datetime(2027, 8, 28, 2, 0, tzinfo=UTC), 6, dt.datetime(2028, 2, 28, 2, 0, tzinfo=UTC)),
    (dt.datetime(2026, 3, 31, 9, 30, tzinfo=UTC), 6, dt.datetime(2026, 9, 30, 9, 30, tzinfo=UTC)),
    (dt.datetime(2026, 1, 31, tzinfo=UTC), 1, dt.datetime(2026, 2, 28, tzinfo=UTC)),
    (dt.datetime(2026, 11, 30, tzinfo=UTC), 3, dt.datetime(2027, 2, 28, tzinfo=UTC)),
    (dt.datetime(2026, 12, 15, tzinfo=UTC), 1, dt.datetime(2027, 1, 15, tzinfo=UTC)),
    (dt.datetime(2026, 7, 15, tzinfo=UTC), 6, dt.datetime(2027, 1, 15, tzinfo=UTC)),
    (dt.datetime(2028, 2, 29, tzinfo=UTC), 12, dt.datetime(2029, 2, 28, tzinfo=UTC)),
    (dt.datetime(2026, 5, 31, tzinfo=UTC), 0, dt.datetime(2026, 5, 31, tzinfo=UTC)),
])
def test_add_months_is_calendar_months(when: dt.datetime, months: int,
                                       expected: dt.datetime) -> None:
    assert add_months(when, months) == expected
    assert add_months(when, months).tzinfo is when.tzinfo


@pytest.mark.parametrize("identified", [
    dt.datetime(2027, 8, 31, 2, 0, tzinfo=UTC),  # + 6 months = 2028-02-29 (leap year)
    dt.datetime(2028, 8, 31, 2, 0, tzinfo=UTC),  # + 6 months = 2029-02-28
    dt.datetime(2026, 12, 31, 2, 0, tzinfo=UTC),  # + 6 months = 2027-06-30
    dt.datetime(2027, 1, 15, 12, 0, tzinfo=UTC),  # + 6 months = 2027-07-15
])
def test_elimination_waits_six_calendar_months(session: Session,
                                               identified: dt.datetime) -> None:
    eid = new_entry(session)
    walk(session, eid, ["claim", "visit"])
    cun = user(session, "cun")
    workflow.identify(session=session, user=cun, entry_id=eid, monitored_type="边缘易致贫户",
                      now=identified)
    session.commit()
    earliest = add_months(identified, 6)
    assert workflow.earliest_elimination(entry(session, eid)) == earliest
    before = snapshot(session, eid)
    for too_early in (identified, earliest - dt.timedelta(days=1),
                      earliest - dt.timedelta(seconds=1)):
        with pytest.raises(WorkflowError) as info:
            workflow.eliminate(session=session, user=cun, entry_id=eid, kind="自然消除",
                               now=too_early)
        assert info.value.status == 409
        assert "6 个月" in info.value.zh and "6 months" in info.value.en
        assert snapshot(session, eid) == before
    workflow.eliminate(session=session, user=cun, entry_id=eid, kind="自然消除", now=earliest)
    session.commit()
    e = entry(session, eid)
    assert (e.state, e.elimination_kind, e.closed_at) == ("风险消除", "自然消除", earliest)


def test_the_refusal_names_the_first_allowed_day(session: Session) -> None:
    eid = new_entry(session)
    walk(session, eid, ["claim", "visit"])
    cun = user(session, "cun")
    identified = dt.datetime(2027, 8, 31, 2, 0, tzinfo=UTC)
    workflow.identify(session=session, user=cun, entry_id=eid, monitored_type="边缘易致贫户",
                      now=identified)
    with pytest.raises(WorkflowError) as info:
        workflow.eliminate(session=session, user=cun, entry_id=eid, kind="自然消除",
                           now=identified + dt.timedelta(days=30))
    assert "2028-02-29" in info.value.zh and "2028-02-29" in info.value.en


def test_six_months_are_counted_on_the_beijing_calendar(session: Session) -> None:
    # Identified at 00:30 on 1 March 2027, Beijing time (still 28 February in UTC): the
    # risk can be eliminated from 1 September 2027 in Beijing, not from 29 August.
    beijing = dt.timezone(dt.timedelta(hours=8))
    identified = dt.datetime(2027, 3, 1, 0, 30, tzinfo=beijing)
    eid = new_entry(session)
    walk(session, eid, ["claim", "visit"])
    cun = user(session, "cun")
    workflow.identify(session=session, user=cun, entry_id=eid, monitored_type="边缘易致贫户",
                      now=identified)
    session.commit()
    session.expire_all()  # as stored: UTC
    earliest = workflow.earliest_elimination(entry(session, eid))
    assert earliest is not None
    assert earliest.astimezone(beijing).date() == dt.date(2027, 9, 1)
    with pytest.raises(WorkflowError):
        workflow.eliminate(session=session, user=cun, entry_id=eid, kind="自然消除",
                           now=dt.datetime(2027, 8, 31, 12, 0, tzinfo=beijing))


def test_assisted_elimination_needs_a_measure(session: Session) -> None:
    eid = new_entry(session)
    at = walk(session, eid, ["claim", "visit", "identify"], actor="cun")
    later = add_months(at, 7)
    cun = user(session, "cun")
    before = snapshot(session, eid)
    with pytest.raises(WorkflowError) as info:
        workflow.eliminate(session=session, user=cun, entry_id=eid, kind="帮扶消除", now=later)
    assert "帮扶措施" in info.value.zh and "measure" in info.value.en
    assert snapshot(session, eid) == before
    out = workflow.eliminate(session=session, user=cun, entry_id=eid, kind="自然消除",
                             now=later)
    assert (out.entry.state, out.entry.elimination_kind) == ("风险消除", "自然消除")


def test_needs_measure_a_month_after_identification(session: Session) -> None:
    eid = new_entry(session)
    at = walk(session, eid, ["claim", "visit", "identify"])
    e = entry(session, eid)
    assert e.identified_at == at
    assert not e.needs_measure(at + dt.timedelta(days=29))
    assert e.needs_measure(at + dt.timedelta(days=31))
    walk(session, eid, ["measure"], start=at + dt.timedelta(days=31))
    e = entry(session, eid)
    assert (e.state, e.measure_count) == ("帮扶中", 1)
    assert not e.needs_measure(at + dt.timedelta(days=31))
    assert not e.needs_measure(at + dt.timedelta(days=400))


def test_a_second_measure_keeps_assisting(session: Session) -> None:
    eid = new_entry(session)
    at = walk(session, eid, ["claim", "visit", "identify", "measure", "measure"])
    e = entry(session, eid)
    assert (e.state, e.measure_count) == ("帮扶中", 2)
    assert [a for _, a, _, _ in trail(session, eid)].count("measure added") == 2
    assert [a for _, a, _, _ in trail(session, eid)].count("state changed") == 4
    assert e.updated_at == at


# -- snooze -------------------------------------------------------------------------------


def test_snooze_needs_a_reason_and_an_expiry_within_90_days(session: Session) -> None:
    eid = new_entry(session)
    cun = user(session, "cun")
    before = snapshot(session, eid)
    for until, reason in ((NOW + dt.timedelta(days=7), ""),
                          (NOW + dt.timedelta(days=7), "   "),
                          (NOW + dt.timedelta(days=90, seconds=1), "外出"),
                          (NOW + dt.timedelta(days=91), "外出"),
                          (NOW, "外出"),
                          (NOW - dt.timedelta(hours=1), "外出")):
        with pytest.raises(WorkflowError) as info:
            workflow.snooze(session=session, user=cun, entry_id=eid, until=until,
                            reason=reason, now=NOW)
        assert info.value.status == 422
        assert snapshot(session, eid) == before
    with pytest.raises(ValueError, match="timezone-aware"):
        workflow.snooze(session=session, user=cun, entry_id=eid,
                        until=dt.datetime(2026, 12, 1), reason="外出", now=NOW)
    assert snapshot(session, eid) == before

    first = NOW + dt.timedelta(days=90)
    workflow.snooze(session=session, user=cun, entry_id=eid, until=first, reason="外出务工",
                    now=NOW)
    e = entry(session, eid)
    assert (e.snoozed_until, e.snooze_reason, e.state) == (first, "外出务工", "新预警")
    assert e.is_snoozed(NOW) and not e.is_snoozed(first)
    second = NOW + dt.timedelta(days=10)
    workflow.snooze(session=session, user=cun, entry_id=eid, until=second, reason="改期",
                    now=NOW)
    assert trail(session, eid) == [
        ("cun", "snoozed", None, f"{first.isoformat()} 外出务工"),
        ("cun", "snoozed", first.isoformat(), f"{second.isoformat()} 改期"),
    ]


# -- who may do what ----------------------------------------------------------------------


@pytest.mark.parametrize("who", ["cun", "xiang"])
def test_only_a_county_lead_or_admin_assigns(session: Session, who: str) -> None:
    eid = new_entry(session)
    before = snapshot(session, eid)
    with pytest.raises(Forbidden) as info:
        workflow.assign(session=session, user=user(session, who), entry_id=eid,
                        assignee="cun", now=NOW)
    assert info.value.status == 403
    assert snapshot(session, eid) == before


@pytest.mark.parametrize("who", ["xian", "admin"])
def test_assign_and_reassign(session: Session, who: str) -> None:
    eid = new_entry(session)
    lead = user(session, who)
    out = workflow.assign(session=session, user=lead, entry_id=eid, assignee="cun", now=NOW)
    assert out.changed
    e = entry(session, eid)
    assert (e.assignee, e.state, e.acknowledged_at) == ("cun", "已接收", NOW)
    later = NOW + dt.timedelta(days=2)
    workflow.assign(session=session, user=lead, entry_id=eid, assignee="xiang", now=later)
    assert (e.assignee, e.acknowledged_at) == ("xiang", NOW)
    # the same assignee again: nothing to record
    assert not workflow.assign(session=session, user=lead, entry_id=eid, assignee="xiang",
                               now=later).changed
    assert trail(session, eid) == [
        (who, "assigned", None, "cun"),
        (who, "state changed", "新预警", "已接收"),
        (who, "assigned", "cun", "xiang"),
    ]


@pytest.mark.parametrize("target", [
    "cun_b",  # an officer of another region
    "old",  # deactivated
    "pub",  # not an officer
    "nobody",  # no such account
    "",
    "cun' OR '1'='1",
])
def test_assign_only_to_an_active_officer_covering_the_region(session: Session,
                                                              target: str) -> None:
    eid = new_entry(session)
    before = snapshot(session, eid)
    with pytest.raises(WorkflowError) as info:
        workflow.assign(session=session, user=user(session, "xian"), entry_id=eid,
                        assignee=target, now=NOW)
    assert info.value.status == 422
    assert snapshot(session, eid) == before


def test_an_administrator_cannot_be_made_the_assignee(session: Session) -> None:
    eid = new_entry(session)
    with pytest.raises(WorkflowError):
        workflow.assign(session=session, user=user(session, "xian"), entry_id=eid,
                        assignee="admin", now=NOW)


def test_a_county_lead_of_another_county_sees_nothing(session: Session) -> None:
    eid = new_entry(session)
    before = snapshot(session, eid)
    for step in STEPS.values():
        with pytest.raises(LookupError):
            step(session, user(session, "xian_b"), eid, NOW)
    with pytest.raises(LookupError):
        workflow.view(session=session, user=user(session, "xian_b"), entry_id=eid, now=NOW)
    assert snapshot(session, eid) == before


@pytest.mark.parametrize("who", ["cun_b", "pub"])
def test_out_of_scope_and_unknown_entries_look_the_same(session: Session, who: str) -> None:
    eid = new_entry(session)
    before = snapshot(session, eid)
    for entry_id in (eid, 987654):
        for step in STEPS.values():
            with pytest.raises(LookupError) as info:
                step(session, user(session, who), entry_id, NOW)
            assert str(info.value) == f"no watch-list entry {entry_id}"
    assert snapshot(session, eid) == before


@pytest.mark.parametrize("who", ["cun", "xiang"])
def test_only_a_county_lead_escalates(session: Session, who: str) -> None:
    eid = new_entry(session)
    before = snapshot(session, eid)
    with pytest.raises(Forbidden):
        workflow.escalate(session=session, user=user(session, who), entry_id=eid,
                          reason="逾期", now=NOW)
    assert snapshot(session, eid) == before


def test_escalate(session: Session) -> None:
    eid = new_entry(session)
    xian = user(session, "xian")
    workflow.escalate(session=session, user=xian, entry_id=eid, reason="逾期未核实", now=NOW)
    e = entry(session, eid)
    assert (e.supervised_at, e.updated_at, e.state) == (NOW, NOW, "新预警")
    later = NOW + dt.timedelta(days=1)
    workflow.escalate(session=session, user=xian, entry_id=eid, reason="再次督办", now=later)
    assert e.supervised_at is not None and e.updated_at == later
    # the county lead's 督办 is not the deadline sweep's automatic escalation
    assert e.escalated_at is None
    assert trail(session, eid) == [("xian", "escalated", None, "逾期未核实"),
                                   ("xian", "escalated", None, "再次督办")]


def test_notes_are_kept_even_on_a_closed_entry(session: Session) -> None:
    eid = new_entry(session)
    at = walk(session, eid, ["claim", "dismiss"])
    workflow.add_note(session=session, user=user(session, "xiang"), entry_id=eid,
                      text="补充说明", now=at)
    assert trail(session, eid)[-1] == ("xiang", "note added", None, "补充说明")
    assert [(n.kind, n.text) for n in workflow.notes_of(session=session, entry_id=eid)] == [
        ("note", "补充说明")]


# -- the audit trail ----------------------------------------------------------------------


def test_view_records_who_looked(session: Session) -> None:
    eid = new_entry(session)
    seen = workflow.view(session=session, user=user(session, "xiang"), entry_id=eid, now=NOW)
    assert seen.id == eid
    workflow.view(session=session, user=user(session, "admin"), entry_id=eid, now=NOW)
    session.commit()
    assert trail(session, eid) == [("xiang", "viewed", None, None),
                                   ("admin", "viewed", None, None)]
    assert entry(session, eid).state == "新预警"  # looking changes nothing else
    with pytest.raises(LookupError):
        workflow.view(session=session, user=user(session, "cun_b"), entry_id=eid, now=NOW)
    assert len(trail(session, eid)) == 2


@pytest.mark.parametrize("sql", [
    "UPDATE watchlist_history SET actor = 'someone else'",
    "UPDATE watchlist_history SET new_value = NULL WHERE action = 'claimed'",
    "DELETE FROM watchlist_history",
    "DELETE FROM watchlist_history WHERE action = 'viewed'",
    "DELETE FROM watchlist_entries",  # cascades to the history: refused too
])
def test_history_cannot_be_changed_even_with_raw_sql(session: Session, sql: str) -> None:
    eid = new_entry(session)
    walk(session, eid, ["claim", "visit"], actor="cun")
    workflow.view(session=session, user=user(session, "cun"), entry_id=eid, now=NOW)
    session.commit()
    before = trail(session, eid)
    with pytest.raises(DBAPIError, match="append-only"):
        session.execute(text(sql))
    session.rollback()
    assert trail(session, eid) == before
    assert session.get(Entry, eid) is not None


def test_history_rows_cannot_be_deleted_through_the_orm(session: Session) -> None:
    eid = new_entry(session)
    row = session.scalars(select(History).where(History.entry_id == eid)).first()
    assert row is not None
    session.delete(row)
    with pytest.raises(DBAPIError, match="append-only"):
        session.flush()
    session.rollback()
    row = session.scalars(select(History).where(History.entry_id == eid)).one()
    row.actor = "rewritten"
    with pytest.raises(DBAPIError, match="append-only"):
        session.flush()
    session.rollback()
    assert session.scalars(select(History.actor).where(History.entry_id == eid)).one() == "system"

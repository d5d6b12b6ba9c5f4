"""Notifications: who is told, the sweep that queues, the dispatcher that sends."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import threading
import typing
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from consumers.watchlist import notify
from consumers.watchlist.models import (
    ROLE_COUNTY,
    ROLE_TOWNSHIP,
    ROLE_VILLAGE,
    Entry,
    History,
    Notification,
    User,
)
from consumers.watchlist.notify import (
    DeliveryError,
    Message,
    compose,
    county_leads,
    dingtalk_signed_url,
    dispatch,
    queue,
    responsible_officers,
    sweep,
)
from consumers.watchlist.service import record_alerts, set_state
from fanpin.settings import Settings
from schemas.events import HouseholdType, RiskType
from tests.unit.test_watchlist_helpers import (
    NOW,
    VILLAGE_A,
    VILLAGE_B,
    household,
    make_alert,
    sqlite_engine,
)

DAY = dt.timedelta(days=1)
TOWNSHIP_A = VILLAGE_A[:9]
COUNTY_A = VILLAGE_A[:6]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path / "var", web_base_url="https://fanpin.example.gov.cn/",
                    notify_min_interval_seconds=300)


def add_user(session: Session, username: str, role: str, region: str, *,
             channels: str = "email", active: bool = True, **extra: str) -> User:
    addresses = {"email": f"{username}@example.org", **extra}
    user = User(username=username, password_hash="x", role=role, region_code=region,
                active=active, channels=channels, **addresses)
    session.add(user)
    session.flush()
    return user


def add_entry(session: Session, n: int, *, village: str = VILLAGE_A, severity: str = "中",
              created: dt.datetime = NOW, risk_type: str = "因病") -> Entry:
    hh = household(village, n)
    record_alerts(session=session, alerts=[make_alert(hh, "2026-10", severity=severity,
                                                      risk_type=risk_type)], now=created)
    return session.scalars(select(Entry).where(Entry.household_id == hh)).one()


def outbox(session: Session) -> list[tuple[str, str, str, int, str]]:
    session.expire_all()
    return [(n.kind, n.recipient, n.channel, n.entry_id, n.dedupe_key)
            for n in session.scalars(select(Notification).order_by(Notification.dedupe_key))]


class Recorder:
    """A fake channel: remembers what it was asked to send; can be told to fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []
        self.fail: Exception | None = None

    def __call__(self, user: User, message: Message) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((user.username, message))


@pytest.fixture
def fakes() -> dict[str, Recorder]:
    return {"email": Recorder(), "wecom": Recorder(), "dingtalk": Recorder()}


def run_dispatch(session: Session, settings: Settings, fakes: dict[str, Recorder],
                 now: dt.datetime) -> notify.DispatchStats:
    return dispatch(session=session, settings=settings, now=now,
                    senders=typing.cast(dict[str, notify.Sender], fakes))


# -- who is told -------------------------------------------------------------------------


def test_responsible_officers_assignee_then_village_then_township(engine: Engine) -> None:
    with Session(engine) as s:
        add_user(s, "zhen1", ROLE_TOWNSHIP, TOWNSHIP_A)
        add_user(s, "zhen0", ROLE_TOWNSHIP, TOWNSHIP_A, active=False)
        add_user(s, "county1", ROLE_COUNTY, COUNTY_A)
        add_user(s, "county2", ROLE_COUNTY, VILLAGE_B[:6])  # another county
        entry = add_entry(s, 1)
        # Nobody in the village: the township's active officers.
        assert [u.username for u in responsible_officers(s, entry)] == ["zhen1"]
        add_user(s, "cun2", ROLE_VILLAGE, VILLAGE_A)
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A)
        add_user(s, "cun_old", ROLE_VILLAGE, VILLAGE_A, active=False)
        add_user(s, "cun_b", ROLE_VILLAGE, VILLAGE_B)
        assert [u.username for u in responsible_officers(s, entry)] == ["cun1", "cun2"]
        # An active assignee alone; an inactive one is passed over.
        entry.assignee = "zhen1"
        assert [u.username for u in responsible_officers(s, entry)] == ["zhen1"]
        entry.assignee = "zhen0"
        assert [u.username for u in responsible_officers(s, entry)] == ["cun1", "cun2"]
        entry.assignee = "nobody"
        assert [u.username for u in responsible_officers(s, entry)] == ["cun1", "cun2"]
        assert [u.username for u in county_leads(s, entry)] == ["county1"]


def test_queue_needs_an_address_and_is_idempotent(engine: Engine) -> None:
    with Session(engine) as s:
        u = add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A, channels="email, wecom,dingtalk,sms")
        u.dingtalk_webhook = "  "
        entry = add_entry(s, 1)
        assert queue(s, entry=entry, kind="high", recipients=[u, u], now=NOW) == 1  # email only
        assert queue(s, entry=entry, kind="high", recipients=[u], now=NOW) == 0
        u.wecom_webhook = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
        assert queue(s, entry=entry, kind="high", recipients=[u], now=NOW) == 1
        assert queue(s, entry=entry, kind="high", recipients=[u], now=NOW, tag="t2") == 2
        assert [row[4] for row in outbox(s)] == [
            f"high:{entry.id}::cun1:email", f"high:{entry.id}::cun1:wecom",
            f"high:{entry.id}:t2:cun1:email", f"high:{entry.id}:t2:cun1:wecom",
        ]
        with pytest.raises(ValueError):
            queue(s, entry=entry, kind="gossip", recipients=[u], now=NOW)


# -- the sweep ---------------------------------------------------------------------------


def test_sweep_high_is_once_per_entry_and_idempotent(engine: Engine) -> None:
    with Session(engine) as s:
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A, channels="email,wecom",
                 wecom_webhook="https://example.invalid/wecom")
        high = add_entry(s, 1, severity="高")
        add_entry(s, 2, severity="中")
        closed = add_entry(s, 3, severity="高")
        set_state(session=s, entry_id=closed.id, state="核实排除", actor="cun1", now=NOW)
        s.commit()
        stats = sweep(session=s, now=NOW)
        s.commit()
        assert (stats.high, stats.escalated, stats.reminded, stats.queued) == (1, 0, 0, 2)
        first = outbox(s)
        assert [(k, r, c, e) for k, r, c, e, _ in first] == [
            ("high", "cun1", "email", high.id), ("high", "cun1", "wecom", high.id)]
        s.refresh(high)
        assert high.high_notified_at == NOW
        history = s.scalar(select(func.count()).select_from(History))

        again = sweep(session=s, now=NOW + dt.timedelta(minutes=1))
        s.commit()
        assert (again.high, again.escalated, again.reminded, again.queued) == (0, 0, 0, 0)
        assert outbox(s) == first
        assert s.scalar(select(func.count()).select_from(History)) == history
        s.refresh(high)
        assert high.high_notified_at == NOW


def test_overdue_escalates_to_the_county_lead_with_history(engine: Engine) -> None:
    with Session(engine) as s:
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A)
        add_user(s, "lead1", ROLE_COUNTY, COUNTY_A)
        add_user(s, "lead2", ROLE_COUNTY, COUNTY_A, channels="")  # told only in the history
        add_user(s, "lead_b", ROLE_COUNTY, VILLAGE_B[:6])
        old = add_entry(s, 1, created=NOW - 16 * DAY)
        add_entry(s, 2, created=NOW - 14 * DAY)  # not overdue yet
        acknowledged = add_entry(s, 3, created=NOW - 20 * DAY)
        set_state(session=s, entry_id=acknowledged.id, state="已纳入监测", actor="cun1")
        s.commit()
        stats = sweep(session=s, now=NOW)
        s.commit()
        assert stats.escalated == 1
        rows = [(k, r, c, e) for k, r, c, e, _ in outbox(s)]
        assert ("overdue", "cun1", "email", old.id) in rows
        assert ("escalation", "lead1", "email", old.id) in rows
        assert ("reminder", "cun1", "email", old.id) in rows  # still 新预警 after 16 days
        assert {r[3] for r in rows} == {old.id, old.id + 1}  # entry 2 only gets a reminder
        assert not [r for r in rows if r[1] in ("lead2", "lead_b")]
        s.refresh(old)
        assert old.escalated_at == NOW
        h = s.scalars(select(History).where(History.entry_id == old.id,
                                            History.action == "escalated")).one()
        assert (h.actor, h.at, h.old_value) == ("system", NOW, None)
        assert h.new_value is not None and "lead1" in h.new_value and "lead2" in h.new_value

        assert sweep(session=s, now=NOW + DAY).queued == 0  # once only
        s.commit()
        assert s.scalar(select(func.count()).select_from(History)
                        .where(History.action == "escalated")) == 1


def test_snoozed_entry_still_escalates_but_pings_nobody(engine: Engine) -> None:
    with Session(engine) as s:
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A)
        add_user(s, "lead1", ROLE_COUNTY, COUNTY_A)
        entry = add_entry(s, 1, created=NOW - 16 * DAY)
        entry.snoozed_until = NOW + 3 * DAY
        s.commit()
        stats = sweep(session=s, now=NOW)
        s.commit()
        assert (stats.escalated, stats.reminded) == (1, 0)
        assert [(k, r) for k, r, *_ in outbox(s)] == [("escalation", "lead1")]
        s.refresh(entry)
        assert entry.escalated_at == NOW and entry.reminded_at is None
        # When the snooze runs out the reminder comes; the overdue ping was decided already.
        sweep(session=s, now=NOW + 4 * DAY)
        s.commit()
        assert sorted((k, r) for k, r, *_ in outbox(s)) == [
            ("escalation", "lead1"), ("reminder", "cun1")]


def test_reminder_only_after_two_days_in_new(engine: Engine) -> None:
    with Session(engine) as s:
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A)
        entry = add_entry(s, 1, created=NOW)
        taken = add_entry(s, 2, created=NOW)
        set_state(session=s, entry_id=taken.id, state="已接收", actor="cun1")
        s.commit()
        assert sweep(session=s, now=NOW + 2 * DAY).reminded == 0  # exactly 2 days: not yet
        s.commit()
        assert outbox(s) == []
        stats = sweep(session=s, now=NOW + 2 * DAY + dt.timedelta(minutes=1))
        s.commit()
        assert (stats.reminded, stats.queued) == (1, 1)
        assert [(k, r, e) for k, r, _, e, _ in outbox(s)] == [("reminder", "cun1", entry.id)]
        assert sweep(session=s, now=NOW + 5 * DAY).queued == 0


def test_sweep_counts_entries_nobody_can_be_told_about(engine: Engine) -> None:
    with Session(engine) as s:
        add_entry(s, 1, severity="高", village=VILLAGE_B)
        s.commit()
        stats = sweep(session=s, now=NOW)
        s.commit()
        assert (stats.high, stats.queued, stats.unrouted) == (1, 0, 1)


def test_sweep_works_through_more_than_one_chunk(engine: Engine,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "CHUNK", 3)
    with Session(engine) as s:
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A)
        for n in range(1, 11):
            add_entry(s, n, severity="高", created=NOW - 3 * DAY)
        s.commit()
        stats = sweep(session=s, now=NOW)
        s.commit()
        assert (stats.high, stats.reminded, stats.queued) == (10, 10, 20)
        assert s.scalar(select(func.count()).select_from(Entry)
                        .where(Entry.high_notified_at.is_(None))) == 0


# -- dispatch ----------------------------------------------------------------------------


def five_high(s: Session) -> list[Entry]:
    add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A, channels="email,wecom",
             wecom_webhook="https://example.invalid/wecom")
    entries = [add_entry(s, n, severity="高") for n in range(1, 6)]
    s.commit()
    sweep(session=s, now=NOW)
    s.commit()
    return entries


def test_one_message_per_person_per_channel(engine: Engine, settings: Settings,
                                            fakes: dict[str, Recorder]) -> None:
    with Session(engine) as s:
        entries = five_high(s)
        assert len(outbox(s)) == 10
        stats = run_dispatch(s, settings, fakes, NOW)
        assert (stats.messages, stats.delivered, stats.failed) == (2, 10, 0)
        assert [u for u, _ in fakes["email"].sent] == ["cun1"]
        assert [u for u, _ in fakes["wecom"].sent] == ["cun1"]
        message = fakes["wecom"].sent[0][1]
        assert message.title == "【防返贫预警】5 条高风险新预警"
        for e in entries:
            assert f"https://fanpin.example.gov.cn/entries/{e.id}" in message.markdown
            assert e.household_id in message.text
        assert VILLAGE_A in message.markdown
        # Due date: 15 days after NOW (2026-11-20 02:00 UTC), in Beijing time.
        assert "识别期限 2026-12-05" in message.text
        s.expire_all()
        assert s.scalar(select(func.count()).select_from(Notification)
                        .where(Notification.sent_at == NOW)) == 10
        assert run_dispatch(s, settings, fakes, NOW + DAY).messages == 0  # nothing pending


def test_min_interval_makes_the_next_message_wait(engine: Engine, settings: Settings,
                                                  fakes: dict[str, Recorder]) -> None:
    with Session(engine) as s:
        five_high(s)
        run_dispatch(s, settings, fakes, NOW)
        add_entry(s, 9, severity="高")
        s.commit()
        sweep(session=s, now=NOW + dt.timedelta(seconds=60))
        s.commit()
        early = run_dispatch(s, settings, fakes, NOW + dt.timedelta(seconds=60))
        assert (early.messages, early.deferred) == (0, 2)
        assert len(fakes["email"].sent) == 1
        later = run_dispatch(s, settings, fakes, NOW + dt.timedelta(seconds=300))
        assert (later.messages, later.delivered, later.deferred) == (2, 2, 0)
        assert fakes["email"].sent[-1][1].title == "【防返贫预警】1 条高风险新预警"


def test_failure_is_recorded_without_content_and_retried(
    engine: Engine, settings: Settings, fakes: dict[str, Recorder]
) -> None:
    with Session(engine) as s:
        five_high(s)
        fakes["wecom"].fail = DeliveryError("HTTP 502")
        fakes["email"].fail = RuntimeError("家庭成员 张三 因病 ...")  # never stored
        stats = run_dispatch(s, settings, fakes, NOW)
        assert (stats.messages, stats.failed) == (0, 2)
        s.expire_all()
        rows = s.scalars(select(Notification)).all()
        assert {(n.channel, n.attempts, n.last_error, n.sent_at) for n in rows} == {
            ("wecom", 1, "HTTP 502", None), ("email", 1, "RuntimeError", None)}
        fakes["wecom"].fail = fakes["email"].fail = None
        soon = NOW + dt.timedelta(seconds=30)
        stats = run_dispatch(s, settings, fakes, soon)  # backing off: not yet
        assert (stats.messages, stats.deferred) == (0, 2)
        later = NOW + notify.retry_after(1)
        stats = run_dispatch(s, settings, fakes, later)  # failures do not start the interval
        assert (stats.messages, stats.delivered) == (2, 10)
        s.expire_all()
        assert {n.sent_at for n in s.scalars(select(Notification))} == {later}


def test_retries_back_off_exponentially() -> None:
    waits = [notify.retry_after(n) for n in range(1, notify.MAX_ATTEMPTS + 1)]
    assert waits[:3] == [dt.timedelta(minutes=m) for m in (1, 2, 4)]
    assert waits == sorted(waits) and waits[-1] == notify.RETRY_MAX
    # eight tries span hours, not the eight minutes of a fixed one-minute retry
    assert sum(waits[:-1], dt.timedelta()) > dt.timedelta(hours=2)


def test_gives_up_after_eight_attempts(engine: Engine, settings: Settings,
                                       fakes: dict[str, Recorder]) -> None:
    with Session(engine) as s:
        five_high(s)
        fakes["email"].fail = DeliveryError("SMTPServerDisconnected")
        gave_up = 0
        for n in range(notify.MAX_ATTEMPTS):
            gave_up += run_dispatch(s, settings, fakes, NOW + n * DAY).gave_up
        assert gave_up == 5
        fakes["email"].fail = None
        run_dispatch(s, settings, fakes, NOW + 30 * DAY)
        assert fakes["email"].sent == []  # given up: not retried
        s.expire_all()
        assert {(n.attempts, n.sent_at) for n in s.scalars(
            select(Notification).where(Notification.channel == "email"))} == {(8, None)}


def test_deactivated_recipient_is_given_up_at_once(engine: Engine, settings: Settings,
                                                  fakes: dict[str, Recorder]) -> None:
    with Session(engine) as s:
        five_high(s)
        s.scalars(select(User)).one().active = False
        s.commit()
        stats = run_dispatch(s, settings, fakes, NOW)
        assert (stats.messages, stats.gave_up) == (0, 10)
        assert fakes["email"].sent == [] and fakes["wecom"].sent == []


def test_more_than_twenty_are_counted_not_listed(engine: Engine, settings: Settings,
                                                 fakes: dict[str, Recorder]) -> None:
    with Session(engine) as s:
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A)
        for n in range(1, 26):
            add_entry(s, n, severity="高", created=NOW - 16 * DAY)
        s.commit()
        sweep(session=s, now=NOW)
        s.commit()
        run_dispatch(s, settings, fakes, NOW)
        (user, message), = fakes["email"].sent
        assert message.title == "【防返贫预警】25 条高风险新预警、25 条逾期、25 条待接收提醒"
        assert message.text.count("/entries/") == 20
        assert "…另有 55 条" in message.text and "…另有 55 条" in message.markdown


def test_messages_carry_nothing_personal(engine: Engine, settings: Settings,
                                        fakes: dict[str, Recorder]) -> None:
    with Session(engine) as s:
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A)
        add_user(s, "lead1", ROLE_COUNTY, COUNTY_A)
        for n, risk in enumerate(typing.get_args(RiskType), 1):
            add_entry(s, n, severity="高", created=NOW - 16 * DAY, risk_type=risk)
        s.commit()
        sweep(session=s, now=NOW)
        s.commit()
        run_dispatch(s, settings, fakes, NOW)
        assert len(fakes["email"].sent) == 2
        forbidden = [*typing.get_args(RiskType), *typing.get_args(HouseholdType), "因病",
                     "姓名", "身份证", "病"]
        for _, m in fakes["email"].sent:
            for blob in (m.title, m.text, m.markdown):
                assert not [w for w in forbidden if w in blob], blob


def test_compose_keeps_markdown_within_the_wecom_limit() -> None:
    items = [notify.Item(kind="high", entry_id=n, household_id=household(VILLAGE_A, n),
                         region_code=VILLAGE_A, severity="高", state="新预警", due_at=NOW)
             for n in range(30)]
    message = compose(items, base_url="https://" + "x" * 200 + ".example")
    assert len(message.markdown.encode()) <= notify.MARKDOWN_MAX_BYTES
    assert "…另有" in message.markdown


def test_dingtalk_signature_matches_an_independent_computation() -> None:
    secret = "SEC0123456789abcdef/+="
    ts = 1763604000123
    url = dingtalk_signed_url("https://oapi.dingtalk.com/robot/send?access_token=abc", secret,
                              ts)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["access_token"] == ["abc"] and query["timestamp"] == [str(ts)]
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    mac.update(f"{ts}\n{secret}".encode())
    expected = base64.b64encode(mac.digest()).decode()
    assert query["sign"] == [expected]  # parse_qs undoes the URL encoding
    assert "+" not in url.split("sign=")[1] and "/" not in url.split("sign=")[1]
    bare = dingtalk_signed_url("https://example.invalid/robot", secret, ts)
    assert bare.startswith("https://example.invalid/robot?timestamp=")
    assert dingtalk_signed_url("https://x.invalid/r?a=1", None) == "https://x.invalid/r?a=1"


def test_webhook_url_must_be_http() -> None:
    user = User(username="u", role=ROLE_VILLAGE, channels="wecom",
                wecom_webhook="file:///etc/passwd")
    with pytest.raises(DeliveryError, match="BadWebhookURL"):
        notify.send_wecom(user, Message("t", "x", "x"))


def test_base_url_defaults_to_the_web_address(tmp_path: Path) -> None:
    assert notify.base_url_of(Settings(var_dir=tmp_path, web_host="10.0.0.5", web_port=8000,
                                       web_base_url="")) == "http://10.0.0.5:8000"


def test_run_once_and_the_loop_stop(engine: Engine, settings: Settings) -> None:
    with Session(engine) as s:
        add_user(s, "cun1", ROLE_VILLAGE, VILLAGE_A, channels="")  # no channel: nothing sent
        entry = add_entry(s, 1, severity="高")
        s.commit()
        entry_id = entry.id
    notify.run(settings, once=True, engine=engine)
    with Session(engine) as s:
        got = s.get(Entry, entry_id)
        assert got is not None and got.high_notified_at is not None
    stop = threading.Event()
    looping = settings.model_copy(update={"notify_interval_seconds": 0.05})
    thread = threading.Thread(target=notify.run, args=(looping,),
                              kwargs={"once": False, "stop": stop, "engine": engine})
    thread.start()
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_only_one_dispatcher_at_a_time(engine: Engine, settings: Settings,
                                       fakes: dict[str, Recorder]) -> None:
    with Session(engine) as s, Session(engine) as other:
        five_high(s)
        with notify._dispatcher_lock(other) as held:
            assert held
            assert run_dispatch(s, settings, fakes, NOW).busy
        assert fakes["email"].sent == []
        assert run_dispatch(s, settings, fakes, NOW).messages == 2

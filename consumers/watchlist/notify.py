"""Notifications: officers are told about the entries that need them instead of having to
look.

Two steps, each safe to run as often as you like and from several processes at once:

``sweep`` decides what deserves a message and queues it in the outbox (``Notification``):

* a new high-severity entry (``high``) to the officers responsible for it;
* identification still pending 15 days after the first lead: ``overdue`` to those officers
  (not while the entry is snoozed) and ``escalation`` to the county lead, recorded in the
  entry's history;
* an entry nobody has taken (新预警) for more than two days (``reminder``), unless snoozed.

Each is decided once per entry: ``high_notified_at`` / ``escalated_at`` / ``reminded_at`` is
set in the same transaction that queues the rows, and every row has a unique dedupe key.

``dispatch`` sends the outbox: ONE message per person per channel listing everything that
is pending for them (WeCom group robot, DingTalk custom robot, e-mail), at most one per
``notify_min_interval_seconds``; failures are retried on later runs, up to 8 attempts.

Group chats are semi-public, so a message carries only the household number (户编号), the
village code, severity, state, the identification due date and a link: never names, ID
numbers, risk types or health details. Logs carry counts only, and errors are stored as an
error type or status: webhook URLs hold the robot's key and are never logged or stored.

``run`` loops over both; ``fanpin notify`` and ``fanpin web`` start it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    and_,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from consumers.watchlist.access import BEIJING
from consumers.watchlist.models import (
    IDENTIFICATION_DAYS,
    OPEN_STATES,
    PENDING_STATES,
    ROLE_COUNTY,
    ROLE_TOWNSHIP,
    ROLE_VILLAGE,
    STATE_NEW,
    Entry,
    History,
    Notification,
    User,
    create_engine_for,
    init_db,
    utcnow,
)
from consumers.watchlist.service import SYSTEM_ACTOR
from consumers.watchlist.workflow import ACTION_ESCALATED
from fanpin.settings import Settings

log = logging.getLogger(__name__)

# Why someone is told. Also the order of the counts in a title and of the lines.
KIND_HIGH: Final = "high"
KIND_OVERDUE: Final = "overdue"
KIND_ESCALATION: Final = "escalation"
KIND_REMINDER: Final = "reminder"
KINDS: Final[tuple[str, ...]] = (KIND_HIGH, KIND_OVERDUE, KIND_ESCALATION, KIND_REMINDER)
KIND_LABELS: Final[dict[str, str]] = {
    KIND_HIGH: "高风险新预警",
    KIND_OVERDUE: "逾期",
    KIND_ESCALATION: "升级督办",  # overdue, escalated to the county lead; or a lead's 督办
    KIND_REMINDER: "待接收提醒",
}

CHANNEL_EMAIL: Final = "email"
CHANNEL_WECOM: Final = "wecom"
CHANNEL_DINGTALK: Final = "dingtalk"
# Which ``User`` column holds each channel's address.
CHANNEL_ADDRESS: Final[dict[str, str]] = {
    CHANNEL_EMAIL: "email",
    CHANNEL_WECOM: "wecom_webhook",
    CHANNEL_DINGTALK: "dingtalk_webhook",
}

HIGH_SEVERITY: Final = "高"
REMIND_AFTER: Final = dt.timedelta(days=2)  # 新预警 untouched longer than this: remind
RETRY_FIRST: Final = dt.timedelta(minutes=1)
RETRY_MAX: Final = dt.timedelta(hours=2)
MAX_ATTEMPTS: Final = 8  # failed sends of one outbox row before giving up on it
MAX_LINES: Final = 20  # entries listed in one message; the rest are counted
MARKDOWN_MAX_BYTES: Final = 4000  # WeCom refuses markdown content over 4096 bytes
CHUNK: Final = 500  # entries per sweep query, rows per UPDATE ... IN (...)
HTTP_TIMEOUT: Final = 10.0
# PostgreSQL advisory lock held by the one dispatcher sending at a time (727274 is init_db).
DISPATCH_LOCK_KEY: Final = 727275

TITLE_PREFIX: Final = "【防返贫预警】"


# -- who is told ---------------------------------------------------------------------------


def channels_of(user: User) -> list[str]:
    """The user's channels, as configured (``User.channels``), without stray blanks."""
    return [c.strip() for c in user.channel_list() if c.strip()]


def address_of(user: User, channel: str) -> str | None:
    """Where ``channel`` reaches ``user``, or None when it is not configured."""
    column = CHANNEL_ADDRESS.get(channel)
    value = getattr(user, column) if column else None
    return (value.strip() or None) if isinstance(value, str) else None


class _Directory:
    """The active users a batch of entries' notifications may go to, read in one query."""

    def __init__(self, users: Iterable[User]) -> None:
        self.by_name: dict[str, User] = {}
        self.by_region: dict[tuple[str, str], list[User]] = {}
        for user in sorted(users, key=lambda u: u.username):
            self.by_name[user.username] = user
            self.by_region.setdefault((user.role, user.region_code), []).append(user)

    @classmethod
    def load(cls, session: Session, targets: Iterable[tuple[str | None, str]]) -> _Directory:
        """Users for entries given as (assignee, region_code)."""
        assignees: set[str] = set()
        villages: set[str] = set()
        for assignee, region in targets:
            if assignee:
                assignees.add(assignee)
            villages.add(region)
        if not villages:
            return cls(())
        wanted: list[ColumnElement[bool]] = [
            and_(User.role == ROLE_VILLAGE, User.region_code.in_(villages)),
            and_(User.role == ROLE_TOWNSHIP, User.region_code.in_({v[:9] for v in villages})),
            and_(User.role == ROLE_COUNTY, User.region_code.in_({v[:6] for v in villages})),
        ]
        if assignees:
            wanted.append(User.username.in_(assignees))
        return cls(session.scalars(select(User).where(User.active.is_(True), or_(*wanted))))

    def responsible(self, assignee: str | None, region_code: str) -> list[User]:
        if assignee and assignee in self.by_name:
            return [self.by_name[assignee]]
        return list(
            self.by_region.get((ROLE_VILLAGE, region_code))
            or self.by_region.get((ROLE_TOWNSHIP, region_code[:9]))
            or ()
        )

    def county_leads(self, region_code: str) -> list[User]:
        return list(self.by_region.get((ROLE_COUNTY, region_code[:6]), ()))


def responsible_officers(session: Session, entry: Entry) -> list[User]:
    """Who works ``entry``: its assignee if that is an active account; else the active
    village officers of its village; if there are none, the active township officers of
    its township. Sorted by username; may be empty."""
    return _Directory.load(session, [(entry.assignee, entry.region_code)]).responsible(
        entry.assignee, entry.region_code
    )


def county_leads(session: Session, entry: Entry) -> list[User]:
    """The active county leads (县级负责人) of the entry's county, sorted by username."""
    return _Directory.load(session, [(None, entry.region_code)]).county_leads(entry.region_code)


# -- the outbox ----------------------------------------------------------------------------


def _outbox_rows(
    entry_id: int, kind: str, recipients: Iterable[User], now: dt.datetime, tag: str = ""
) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for user in recipients:
        for channel in channels_of(user):
            if address_of(user, channel) is None:
                continue
            key = f"{kind}:{entry_id}:{tag}:{user.username}:{channel}"
            rows[key] = {
                "dedupe_key": key,
                "recipient": user.username,
                "channel": channel,
                "kind": kind,
                "entry_id": entry_id,
                "created_at": now,
                "attempts": 0,
            }
    return list(rows.values())


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _insert_new(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert the outbox rows whose dedupe key is not taken yet; return how many were.
    ``ON CONFLICT DO NOTHING`` keeps this right when two sweeps race."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    added = 0
    for chunk in _chunks(rows):
        if dialect in ("postgresql", "sqlite"):
            ins = pg_insert if dialect == "postgresql" else sqlite_insert
            stmt = (
                ins(Notification)
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(Notification.id)
            )
            added += len(session.execute(stmt, list(chunk)).all())
        else:
            taken = set(session.scalars(select(Notification.dedupe_key).where(
                Notification.dedupe_key.in_([r["dedupe_key"] for r in chunk]))))
            new = [r for r in chunk if r["dedupe_key"] not in taken]
            if new:
                session.execute(insert(Notification), new)
            added += len(new)
    return added


def queue(
    session: Session,
    *,
    entry: Entry,
    kind: str,
    recipients: Iterable[User],
    now: dt.datetime,
    tag: str = "",
) -> int:
    """Queue a ``kind`` notification about ``entry`` for each recipient on each of their
    channels that has an address. Rows already queued (same dedupe key
    ``kind:entry:tag:username:channel``) are skipped. Returns the rows added; does not
    commit."""
    if kind not in KIND_LABELS:
        raise ValueError(f"unknown notification kind {kind!r}; known: {', '.join(KINDS)}")
    return _insert_new(session, _outbox_rows(entry.id, kind, recipients, now, tag))


# -- the sweep -----------------------------------------------------------------------------


@dataclass
class SweepStats:
    """What one ``sweep`` decided (entries) and queued (outbox rows)."""

    high: int = 0  # new high-severity entries announced
    escalated: int = 0  # overdue entries escalated to the county lead
    reminded: int = 0  # entries left in 新预警 that were reminded about
    queued: int = 0  # outbox rows added
    unrouted: int = 0  # decisions with no active officer (or county lead) to tell


# (id, assignee, region_code, snoozed_until) of one entry to notify about.
_Target = Row[int, str | None, str, dt.datetime | None]


def _candidates(session: Session, *where: ColumnElement[bool]) -> Iterator[Sequence[_Target]]:
    """The matching entries' routing columns, CHUNK at a time, in id order.

    Keyset paging, so an entry whose flag could not be set is not met twice. On
    PostgreSQL the rows are locked, and rows another sweep (or an officer) holds are
    skipped: they are picked up by the next run.
    """
    last = 0
    while True:
        rows = session.execute(
            select(Entry.id, Entry.assignee, Entry.region_code, Entry.snoozed_until)
            .where(*where, Entry.id > last)
            .order_by(Entry.id)
            .limit(CHUNK)
            .with_for_update(skip_locked=True, of=Entry)
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _snoozed(snoozed_until: dt.datetime | None, now: dt.datetime) -> bool:
    return snoozed_until is not None and snoozed_until > now


def _set_flag(session: Session, column: Any, ids: Sequence[int], now: dt.datetime) -> None:
    session.execute(update(Entry).where(Entry.id.in_(ids)).values({column: now}))


def sweep(*, session: Session, now: dt.datetime) -> SweepStats:
    """Queue the notifications that are due at ``now`` and mark the entries as told.

    Idempotent: each entry flag is set once, and a second run finds nothing new. Reads
    only the matching entries, CHUNK at a time (not the whole list). Flushes; the caller
    commits. On SQLite it takes the write lock up front, like ``record_alerts``.
    """
    if not session.in_transaction():
        session.connection(execution_options={"fanpin_write": True})
    stats = SweepStats()
    not_snoozed = or_(Entry.snoozed_until.is_(None), Entry.snoozed_until <= now)

    # (a) new high-severity entries
    for rows in _candidates(
        session,
        Entry.state.in_(OPEN_STATES),
        Entry.severity == HIGH_SEVERITY,
        Entry.high_notified_at.is_(None),
    ):
        directory = _Directory.load(session, ((r.assignee, r.region_code) for r in rows))
        out: list[dict[str, Any]] = []
        for r in rows:
            officers = directory.responsible(r.assignee, r.region_code)
            stats.unrouted += not officers
            out += _outbox_rows(r.id, KIND_HIGH, officers, now)
        stats.queued += _insert_new(session, out)
        _set_flag(session, Entry.high_notified_at, [r.id for r in rows], now)
        stats.high += len(rows)

    # (b) overdue: identification pending 15 days after the first lead
    for rows in _candidates(
        session,
        Entry.state.in_(PENDING_STATES),
        Entry.created_at < now - dt.timedelta(days=IDENTIFICATION_DAYS),
        Entry.escalated_at.is_(None),
    ):
        directory = _Directory.load(session, ((r.assignee, r.region_code) for r in rows))
        out = []
        history: list[dict[str, Any]] = []
        for r in rows:
            leads = directory.county_leads(r.region_code)
            stats.unrouted += not leads
            if not _snoozed(r.snoozed_until, now):
                officers = directory.responsible(r.assignee, r.region_code)
                stats.unrouted += not officers
                out += _outbox_rows(r.id, KIND_OVERDUE, officers, now)
            out += _outbox_rows(r.id, KIND_ESCALATION, leads, now)
            named = ", ".join(u.username for u in leads) or "(无)"
            history.append({
                "entry_id": r.id,
                "at": now,
                "actor": SYSTEM_ACTOR,
                "action": ACTION_ESCALATED,
                "old_value": None,
                "new_value": f"县级负责人: {named}",
            })
        stats.queued += _insert_new(session, out)
        session.execute(insert(History), history)
        _set_flag(session, Entry.escalated_at, [r.id for r in rows], now)
        stats.escalated += len(rows)

    # (c) nobody has taken the entry for more than REMIND_AFTER
    for rows in _candidates(
        session,
        Entry.state == STATE_NEW,
        Entry.created_at < now - REMIND_AFTER,
        Entry.reminded_at.is_(None),
        not_snoozed,
    ):
        directory = _Directory.load(session, ((r.assignee, r.region_code) for r in rows))
        out = []
        for r in rows:
            officers = directory.responsible(r.assignee, r.region_code)
            stats.unrouted += not officers
            out += _outbox_rows(r.id, KIND_REMINDER, officers, now)
        stats.queued += _insert_new(session, out)
        _set_flag(session, Entry.reminded_at, [r.id for r in rows], now)
        stats.reminded += len(rows)

    session.flush()
    return stats


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One pending notification as a message line: nothing personal."""

    kind: str
    entry_id: int
    household_id: str
    region_code: str
    severity: str
    state: str
    due_at: dt.datetime


@dataclass(frozen=True)
class Message:
    title: str  # the e-mail subject, the DingTalk title
    text: str  # plain text: the e-mail body
    markdown: str  # WeCom and DingTalk


def base_url_of(settings: Settings) -> str:
    """Where the links in messages point."""
    return (settings.web_base_url or f"http://{settings.web_host}:{settings.web_port}").rstrip(
        "/"
    )


def _title(counts: Mapping[str, int]) -> str:
    parts = [f"{counts[k]} 条{KIND_LABELS[k]}" for k in KINDS if counts.get(k)]
    return TITLE_PREFIX + "、".join(parts)


def _fields(item: Item) -> str:
    due = item.due_at.astimezone(BEIJING).strftime("%Y-%m-%d")
    return (
        f"村 {item.region_code}｜户编号 {item.household_id}｜风险等级 {item.severity}｜"
        f"状态 {item.state}｜识别期限 {due}"
    )


def compose(items: Sequence[Item], *, base_url: str) -> Message:
    """The one message listing ``items``: counts per kind in the title, then up to 20
    lines (kind, village code, household number, severity, state, due date in Beijing
    time, link) and how many more there are."""
    counts = Counter(item.kind for item in items)
    title = _title(counts)
    ordered = sorted(
        items,
        key=lambda i: (KINDS.index(i.kind) if i.kind in KINDS else len(KINDS), i.entry_id),
    )
    shown = min(MAX_LINES, len(ordered))
    while True:
        lines = ordered[:shown]
        rest = len(ordered) - shown
        more = [f"…另有 {rest} 条"] if rest else []
        markdown = "\n".join([
            f"### {title}",
            "",
            *(
                f"- **{KIND_LABELS.get(i.kind, i.kind)}**｜{_fields(i)}｜"
                f"[查看]({base_url}/entries/{i.entry_id})"
                for i in lines
            ),
            *more,
            "",
            f"请登录防返贫监测系统处理：{base_url}/",
        ])
        if len(markdown.encode()) <= MARKDOWN_MAX_BYTES or shown <= 1:
            break
        shown -= 1
    text = "\n".join([
        title,
        "",
        *(
            f"{n}. 【{KIND_LABELS.get(i.kind, i.kind)}】{_fields(i)}\n"
            f"   {base_url}/entries/{i.entry_id}"
            for n, i in enumerate(lines, 1)
        ),
        *more,
        "",
        f"请登录防返贫监测系统处理：{base_url}/",
        "",
        "（本邮件由系统自动发送，请勿回复。）",
    ])
    return Message(title=title, text=text, markdown=markdown)


# -- channels ------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A send failed. ``str()`` is safe to store and log: an error type, an HTTP status or
    an errcode, never message content or a webhook URL."""


Sender = Callable[[User, Message], None]


def _post_json(url: str, payload: Mapping[str, Any]) -> None:
    """POST ``payload`` to a robot webhook; succeed only on a reply with errcode 0."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise DeliveryError("BadWebhookURL")
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url,
        data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": "application/json; charset=utf-8"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            body = response.read(1 << 16)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DeliveryError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(type(exc).__name__) from None
    try:
        reply = json.loads(body)
    except ValueError:
        raise DeliveryError("BadReply") from None
    errcode = reply.get("errcode") if isinstance(reply, dict) else None
    if errcode != 0:
        raise DeliveryError(f"errcode {errcode}" if isinstance(errcode, int) else "BadReply")


def send_wecom(user: User, message: Message) -> None:
    """企业微信群机器人: markdown message to the user's webhook."""
    url = address_of(user, CHANNEL_WECOM)
    if url is None:
        raise DeliveryError("NoAddress")
    _post_json(url, {"msgtype": "markdown", "markdown": {"content": message.markdown}})


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """钉钉 custom robot signature (加签), URL-encoded: base64(HMAC-SHA256(key=secret,
    msg=f"{timestamp}\\n{secret}"))."""
    digest = hmac.new(
        secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode("ascii"))


def dingtalk_signed_url(url: str, secret: str | None, timestamp_ms: int | None = None) -> str:
    """The webhook URL with ``timestamp`` and ``sign`` appended when a secret is set."""
    if not secret:
        return url
    timestamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}timestamp={timestamp}&sign={dingtalk_sign(secret, timestamp)}"


def send_dingtalk(user: User, message: Message) -> None:
    """钉钉自定义机器人: markdown message, signed when the user has a secret."""
    url = address_of(user, CHANNEL_DINGTALK)
    if url is None:
        raise DeliveryError("NoAddress")
    _post_json(
        dingtalk_signed_url(url, (user.dingtalk_secret or "").strip() or None),
        {"msgtype": "markdown", "markdown": {"title": message.title, "text": message.markdown}},
    )


class SmtpSender:
    """E-mail over SMTP (optional STARTTLS and login), UTF-8 subject and body."""

    def __init__(self, settings: Settings) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.starttls = settings.smtp_starttls
        self.user = settings.smtp_user
        self.password = settings.smtp_password
        self.sender = settings.smtp_from

    def __call__(self, user: User, message: Message) -> None:
        to = address_of(user, CHANNEL_EMAIL)
        if to is None:
            raise DeliveryError("NoAddress")
        msg = EmailMessage()
        try:
            msg["Subject"] = message.title
            msg["From"] = self.sender
            msg["To"] = to
            msg["Date"] = formatdate(usegmt=True)
            msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        except (ValueError, TypeError):
            raise DeliveryError("BadAddress") from None
        msg.set_content(message.text, charset="utf-8", cte="base64")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=HTTP_TIMEOUT) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    password = self.password.get_secret_value() if self.password else ""
                    smtp.login(self.user, password)
                smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{type(exc).__name__} {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(type(exc).__name__) from None


def default_senders(settings: Settings) -> dict[str, Sender]:
    """The real channels."""
    return {
        CHANNEL_EMAIL: SmtpSender(settings),
        CHANNEL_WECOM: send_wecom,
        CHANNEL_DINGTALK: send_dingtalk,
    }


# -- dispatch ------------------------------------------------------------------------------


@dataclass
class DispatchStats:
    """What one ``dispatch`` sent."""

    messages: int = 0  # messages delivered (one per recipient and channel)
    delivered: int = 0  # outbox rows they carried
    failed: int = 0  # messages that failed; their rows are retried by a later run
    gave_up: int = 0  # outbox rows abandoned (MAX_ATTEMPTS reached, or recipient gone)
    deferred: int = 0  # recipients/channels waiting out notify_min_interval_seconds
    busy: bool = False  # another dispatcher was sending: this one did nothing


_PENDING = and_(Notification.sent_at.is_(None), Notification.attempts < MAX_ATTEMPTS)
_KIND_ORDER = case({k: n for n, k in enumerate(KINDS)}, value=Notification.kind,
                   else_=len(KINDS))


def _engine_of(session: Session) -> Engine:
    bind = session.get_bind()
    return bind.engine if isinstance(bind, Connection) else bind


@contextlib.contextmanager
def _dispatcher_lock(session: Session) -> Iterator[bool]:
    """Yield whether this process may send now: only one dispatcher sends at a time, so two
    web processes (or web and ``fanpin notify``) never send the same message twice.
    PostgreSQL: an advisory lock on a connection of its own. SQLite: ``flock`` on a file
    next to the database."""
    engine = _engine_of(session)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            held = bool(conn.scalar(select(func.pg_try_advisory_lock(DISPATCH_LOCK_KEY))))
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    try:
                        conn.scalar(select(func.pg_advisory_unlock(DISPATCH_LOCK_KEY)))
                        conn.commit()
                    except Exception:
                        conn.invalidate()  # closing the connection releases the lock
                        raise
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or (
        database.startswith("file:")
    ):
        yield True
        return
    with Path(f"{database}.notify-lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mark(session: Session, ids: Sequence[int], **values: Any) -> None:
    for chunk in _chunks(ids):
        session.execute(
            update(Notification)
            .where(Notification.id.in_(chunk))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def retry_after(attempts: int) -> dt.timedelta:
    """How long a failed notification waits before its next try: 1, 2, 4 ... minutes,
    at most 2 hours, so MAX_ATTEMPTS tries ride out two hours or more of outage."""
    return min(RETRY_FIRST * 2 ** max(attempts - 1, 0), RETRY_MAX)


def _send_group(
    session: Session,
    recipient: str,
    channel: str,
    senders: Mapping[str, Sender],
    base_url: str,
    now: dt.datetime,
    stats: DispatchStats,
) -> None:
    rows = session.execute(
        select(
            Notification.id, Notification.kind, Notification.attempts,
            Notification.last_attempt_at, Entry.id.label("eid"),
            Entry.household_id, Entry.region_code, Entry.severity, Entry.state,
            Entry.created_at,
        )
        .join(Entry, Entry.id == Notification.entry_id)
        .where(_PENDING, Notification.recipient == recipient, Notification.channel == channel)
        .order_by(_KIND_ORDER, Notification.entry_id, Notification.id)
    ).all()
    if any(r.last_attempt_at is not None and now < r.last_attempt_at + retry_after(r.attempts)
           for r in rows):
        stats.deferred += 1  # the last try failed: back off before the next
        return
    if not rows:
        return
    ids = [r.id for r in rows]
    user = session.scalar(select(User).where(User.username == recipient))
    if user is None or not user.active or channel not in channels_of(user):
        # The account is gone or no longer wants this channel: nothing to retry.
        _mark(session, ids, attempts=MAX_ATTEMPTS, last_error="RecipientUnavailable")
        stats.gave_up += len(ids)
        return
    items = [
        Item(kind=r.kind, entry_id=r.eid, household_id=r.household_id,
             region_code=r.region_code, severity=r.severity, state=r.state,
             due_at=r.created_at + dt.timedelta(days=IDENTIFICATION_DAYS))
        for r in rows
    ]
    message = compose(items, base_url=base_url)
    sender = senders.get(channel)
    try:
        if sender is None:
            raise DeliveryError("NoSender")
        sender(user, message)
    except Exception as exc:
        reason = str(exc)[:200] if isinstance(exc, DeliveryError) else type(exc).__name__
        _mark(session, ids, attempts=Notification.attempts + 1, last_error=reason,
              last_attempt_at=now)
        stats.failed += 1
        stats.gave_up += sum(1 for r in rows if r.attempts + 1 >= MAX_ATTEMPTS)
        return
    _mark(session, ids, sent_at=now)
    stats.messages += 1
    stats.delivered += len(ids)


def dispatch(
    *,
    session: Session,
    settings: Settings,
    now: dt.datetime,
    senders: Mapping[str, Sender] | None = None,
) -> DispatchStats:
    """Send the outbox: one message per recipient and channel listing all their pending
    notifications.

    A recipient/channel that got a message less than ``notify_min_interval_seconds``
    before ``now`` waits. Delivered rows get ``sent_at``; a failed message adds 1 to its
    rows' ``attempts`` and stores the error type in ``last_error``; rows are retried on
    later runs until MAX_ATTEMPTS. Commits after each message (so the database is not
    locked during network calls, and a crash re-sends at most one message). ``senders``
    maps channel to sender; the default is ``default_senders(settings)``.
    """
    senders = default_senders(settings) if senders is None else senders
    base_url = base_url_of(settings)
    stats = DispatchStats()
    with _dispatcher_lock(session) as held:
        if not held:
            stats.busy = True
            return stats
        groups = session.execute(
            select(Notification.recipient, Notification.channel)
            .where(_PENDING)
            .group_by(Notification.recipient, Notification.channel)
            .order_by(Notification.recipient, Notification.channel)
        ).all()
        since = now - dt.timedelta(seconds=settings.notify_min_interval_seconds)
        recent = {
            (r.recipient, r.channel)
            for r in session.execute(
                select(Notification.recipient, Notification.channel)
                .where(Notification.sent_at > since)
                .group_by(Notification.recipient, Notification.channel)
            )
        }
        session.commit()
        for recipient, channel in groups:
            if (recipient, channel) in recent:
                stats.deferred += 1
                continue
            _send_group(session, recipient, channel, senders, base_url, now, stats)
            session.commit()
    return stats


# -- the loop ------------------------------------------------------------------------------


def _nonzero(stats: SweepStats | DispatchStats) -> bool:
    return any(getattr(stats, f.name) for f in fields(stats))


def _sweep_step(engine: Engine) -> SweepStats:
    with Session(engine) as session:
        swept = sweep(session=session, now=utcnow())
        session.commit()
    if _nonzero(swept):
        log.info("notify sweep: %d high, %d escalated, %d reminded; %d queued, %d unrouted",
                 swept.high, swept.escalated, swept.reminded, swept.queued, swept.unrouted)
    return swept


def _dispatch_step(
    settings: Settings, engine: Engine, senders: Mapping[str, Sender] | None
) -> DispatchStats:
    with Session(engine) as session:
        sent = dispatch(session=session, settings=settings, now=utcnow(), senders=senders)
        session.commit()
    if _nonzero(sent):
        log.info("notify dispatch: %d messages (%d items), %d failed, %d given up, "
                 "%d deferred%s", sent.messages, sent.delivered, sent.failed, sent.gave_up,
                 sent.deferred, " (another dispatcher busy)" if sent.busy else "")
    return sent


def notify_once(
    settings: Settings, *, engine: Engine, senders: Mapping[str, Sender] | None = None
) -> tuple[SweepStats, DispatchStats]:
    """One sweep (committed), then one dispatch. Logs counts only."""
    return _sweep_step(engine), _dispatch_step(settings, engine, senders)


def run(
    settings: Settings,
    *,
    once: bool,
    stop: threading.Event | None = None,
    engine: Engine | None = None,
) -> None:
    """Sweep and dispatch every ``notify_interval_seconds`` until ``stop`` is set, or just
    once. Without ``engine`` it opens the watch list named by the settings (and disposes
    it at the end). In the loop a failed step is logged (its error type only) and retried
    on the next run, and a failed sweep does not keep the outbox from being sent; with
    ``once`` the error is raised."""
    own = engine is None
    if engine is None:
        engine = create_engine_for(settings.watchlist_url)
        init_db(engine)
    stop = stop or threading.Event()
    senders = default_senders(settings)
    steps: tuple[tuple[str, Callable[[Engine], object]], ...] = (
        ("sweep", _sweep_step),
        ("dispatch", lambda e: _dispatch_step(settings, e, senders)),
    )
    try:
        while not stop.is_set():
            for name, step in steps:
                try:
                    step(engine)
                except Exception as exc:
                    if once:
                        raise
                    log.warning("notify %s failed (%s); retrying in %.0fs", name,
                                type(exc).__name__, settings.notify_interval_seconds)
            if once or stop.wait(settings.notify_interval_seconds):
                break
    finally:
        if own:
            engine.dispose()

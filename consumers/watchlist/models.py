"""The watch list's tables.

One ``Entry`` is one episode of risk for one household: the alerts that arrive while the
entry is open are merged into it, so an officer sees one line per household to visit, not
one per month. Once the entry is closed (核实排除 or 风险消除) a later alert opens a new
episode. ``AlertRecord`` remembers every alert id ever stored, which is what makes a replay
of the alert topic change nothing. ``History`` is append-only: every change an officer or
the system makes is kept, with who and when.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC

# The workflow's states, in workflow order. Stored as these Chinese names.
STATE_NEW: Final = "新预警"
STATES: Final[tuple[str, ...]] = (
    STATE_NEW,  # raised by a department alert, nobody has looked yet
    "已接收",  # a duty officer has taken it
    "核实中",  # home visit (入户核实) under way
    "已纳入监测",  # identified as a monitored household (识别纳入)
    "核实排除",  # the visit found no risk: closed
    "帮扶中",  # being assisted
    "风险消除",  # income stable above the line for 6+ months: closed
)
CLOSED_STATES: Final[frozenset[str]] = frozenset({"核实排除", "风险消除"})
OPEN_STATES: Final[tuple[str, ...]] = tuple(s for s in STATES if s not in CLOSED_STATES)
# States in which identification is still pending; the policy wants it done within 15 days
# of the first lead, so entries left in these states longer are overdue.
PENDING_STATES: Final[tuple[str, ...]] = ("新预警", "已接收", "核实中")
IDENTIFICATION_DAYS: Final = 15
# An identified household with no assistance measure after this long is flagged.
MEASURE_DUE_DAYS: Final = 30

# Accounts' roles, and how many digits of the 12-digit village code each is bound to.
ROLE_VILLAGE: Final = "village"  # 村级干部: own village
ROLE_TOWNSHIP: Final = "township"  # 乡镇干部: own township
ROLE_COUNTY: Final = "county_lead"  # 县级负责人: own county; reassigns and escalates
ROLE_PUBLISHER: Final = "publisher"  # 部门数据发布员: no watch-list access
ROLE_ADMIN: Final = "admin"  # 管理员: accounts; sees every region
ROLES: Final[tuple[str, ...]] = (ROLE_VILLAGE, ROLE_TOWNSHIP, ROLE_COUNTY, ROLE_PUBLISHER,
                                 ROLE_ADMIN)
REGION_DIGITS: Final[dict[str, int]] = {ROLE_VILLAGE: 12, ROLE_TOWNSHIP: 9, ROLE_COUNTY: 6}

SEVERITIES: Final[tuple[str, ...]] = ("高", "中", "低")
SEVERITY_RANK: Final[dict[str, int]] = {"低": 1, "中": 2, "高": 3}

RISK_TYPE_SEP: Final = "、"
RULE_SEP: Final = ";"

_CLOSED_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in sorted(CLOSED_STATES)))


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones, so the value is stored as
    naive UTC and given its zone back on the way out. Naive datetimes are refused: a local
    time mistaken for UTC would shift every deadline by eight hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: watch-list times must be timezone-aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Entry(Base):
    """One household's episode of risk on the watch list."""

    __tablename__ = "watchlist_entries"
    __table_args__ = (
        # At most one open entry per household: two sinks racing to open one for the same
        # household collide here, and the loser retries and merges instead.
        Index(
            "uq_watchlist_entries_open_household",
            "household_id",
            unique=True,
            postgresql_where=text(f"NOT ({_CLOSED_SQL})"),
            sqlite_where=text(f"NOT ({_CLOSED_SQL})"),
        ),
        Index("ix_watchlist_entries_region_code", "region_code"),
        Index("ix_watchlist_entries_state", "state"),
        Index("ix_watchlist_entries_first_month", "first_month"),
        # The list page and the API (see docs/benchmarks-web.md): every column the list
        # filters and the default sort read, so counting, the state counts and picking a
        # page's ids are index-only scans and the wide rows (evidence and all) are read
        # only for the page itself. On PostgreSQL the non-key columns are INCLUDEd;
        # SQLite indexes the key columns only.
        # A region's entries (village, township or county: a range of region_code).
        Index(
            "ix_watchlist_entries_scope",
            "region_code",
            "first_month",
            postgresql_include=["severity", "state", "created_at", "risk_types", "assignee",
                                "id"],
        ),
        # Province-wide lists narrowed by state (new, overdue, unassigned: the pending and
        # open states), in the default order.
        Index(
            "ix_watchlist_entries_state_month",
            "state",
            "first_month",
            postgresql_include=["severity", "created_at", "risk_types", "assignee",
                                "region_code", "id"],
        ),
        # Unassigned entries (the "unassigned" flag), few at any time.
        Index(
            "ix_watchlist_entries_unassigned",
            "first_month",
            postgresql_include=["severity", "state", "created_at", "risk_types",
                                "region_code", "id"],
            postgresql_where=text("assignee IS NULL"),
            sqlite_where=text("assignee IS NULL"),
        ),
        # Province-wide lists narrowed by severity, in the default order.
        Index(
            "ix_watchlist_entries_severity_month",
            "severity",
            "first_month",
            postgresql_include=["state", "created_at", "risk_types", "assignee",
                                "region_code", "id"],
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_key: Mapped[str] = mapped_column(String(64), unique=True)  # f"{household_id}#{episode}"
    household_id: Mapped[str] = mapped_column(String(16), index=True)
    region_code: Mapped[str] = mapped_column(String(12))
    household_type: Mapped[str] = mapped_column(String(16))
    episode: Mapped[int] = mapped_column(Integer)
    risk_type: Mapped[str] = mapped_column(String(16))  # the main one, from the first alert
    risk_types: Mapped[str] = mapped_column(String(256))  # all seen, sorted, "、"-joined
    rules: Mapped[str] = mapped_column(Text)  # all rule names seen, sorted, ";"-joined
    severity: Mapped[str] = mapped_column(String(4))  # the highest seen
    state: Mapped[str] = mapped_column(String(16), default=STATE_NEW)
    first_month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    last_month: Mapped[str] = mapped_column(String(7))
    alert_count: Mapped[int] = mapped_column(Integer, default=1)
    evidence_json: Mapped[str] = mapped_column(Text)  # the latest month's reasons + evidence
    rule_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # The workflow (see consumers/watchlist/workflow.py). Usernames, not foreign keys: an
    # account can be deactivated without rewriting the record it left behind.
    assignee: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    identified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    monitored_type: Mapped[str | None] = mapped_column(String(16), default=None)
    dismiss_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    elimination_kind: Mapped[str | None] = mapped_column(String(16), default=None)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    measure_count: Mapped[int] = mapped_column(Integer, default=0)
    snoozed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    snooze_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # When the system told people: each is set once, which makes the notifications
    # idempotent however often the deadline sweep runs.
    escalated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    # A county lead's own escalation (督办), separate from the deadline's automatic one.
    supervised_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    high_notified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    alerts: Mapped[list[AlertRecord]] = relationship(
        back_populates="entry", order_by="(AlertRecord.month, AlertRecord.id)"
    )
    history: Mapped[list[History]] = relationship(
        back_populates="entry", order_by="History.id"
    )

    @property
    def is_open(self) -> bool:
        return self.state not in CLOSED_STATES

    def risk_type_list(self) -> list[str]:
        return [r for r in self.risk_types.split(RISK_TYPE_SEP) if r]

    def rule_list(self) -> list[str]:
        return [r for r in self.rules.split(RULE_SEP) if r]

    def is_overdue(self, now: dt.datetime | None = None) -> bool:
        """Identification is still pending more than 15 days after the first lead."""
        now = now or utcnow()
        return self.state in PENDING_STATES and self.created_at < now - dt.timedelta(
            days=IDENTIFICATION_DAYS
        )

    def due_at(self) -> dt.datetime:
        """When identification is due: 15 days after the first lead reached the list."""
        return self.created_at + dt.timedelta(days=IDENTIFICATION_DAYS)

    def needs_measure(self, now: dt.datetime | None = None) -> bool:
        """Identified more than a month ago and still no assistance measure recorded."""
        now = now or utcnow()
        return (
            self.state == "已纳入监测"
            and self.measure_count == 0
            and self.identified_at is not None
            and self.identified_at < now - dt.timedelta(days=MEASURE_DUE_DAYS)
        )

    def is_snoozed(self, now: dt.datetime | None = None) -> bool:
        now = now or utcnow()
        return self.snoozed_until is not None and self.snoozed_until > now

    def days_open(self, now: dt.datetime | None = None) -> int:
        now = now or utcnow()
        return max(0, (now - self.created_at).days)


class AlertRecord(Base):
    """Every alert stored, by its deterministic id: the idempotency fingerprint."""

    __tablename__ = "watchlist_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(255), unique=True)
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("watchlist_entries.id", ondelete="CASCADE"), index=True
    )
    household_id: Mapped[str] = mapped_column(String(16), index=True)
    month: Mapped[str] = mapped_column(String(7))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    payload: Mapped[str] = mapped_column(Text)  # the alert as published (JSON)

    entry: Mapped[Entry] = relationship(back_populates="alerts")


class History(Base):
    """Append-only log of what happened to an entry. Never updated, never deleted."""

    __tablename__ = "watchlist_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("watchlist_entries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    old_value: Mapped[str | None] = mapped_column(Text, default=None)
    new_value: Mapped[str | None] = mapped_column(Text, default=None)

    entry: Mapped[Entry] = relationship(back_populates="history")


class RegionName(Base):
    """The statistics bureau's names of provinces, counties, townships and villages."""

    __tablename__ = "regions"

    code: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(8))  # 省 市 县 乡镇 村


class Note(Base):
    """A note on an entry: a home-visit record, or anything an officer wants kept."""

    __tablename__ = "watchlist_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("watchlist_entries.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    author: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "visit" or "note"
    text: Mapped[str] = mapped_column(Text)


class Measure(Base):
    """An assistance measure (帮扶措施) for an identified household."""

    __tablename__ = "watchlist_measures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("watchlist_entries.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    author: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)


class User(Base):
    """An account. ``region_code`` is the code prefix the account may see: a village
    officer's 12 digits, a township's 9, a county's 6; empty for administrators and
    publishers (publishers see no watch-list entries at all)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    region_code: Mapped[str] = mapped_column(String(12), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Notification channels, each optional: "email", "wecom", "dingtalk" in ``channels``.
    channels: Mapped[str] = mapped_column(String(64), default="")
    email: Mapped[str | None] = mapped_column(String(255), default=None)
    wecom_webhook: Mapped[str | None] = mapped_column(Text, default=None)
    dingtalk_webhook: Mapped[str | None] = mapped_column(Text, default=None)
    dingtalk_secret: Mapped[str | None] = mapped_column(String(128), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def channel_list(self) -> list[str]:
        return [c for c in self.channels.split(",") if c]


class WebSession(Base):
    """A logged-in browser. Only the SHA-256 of the cookie value is stored."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class LoginAttempt(Base):
    """Failed logins, for rate limiting across processes."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128))  # "user:<name>" or "ip:<address>"
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Notification(Base):
    """The notification outbox: one row per (recipient, channel, reason, entry), queued in
    the transaction that decided it and sent (grouped per recipient) by the dispatcher."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_pending", "sent_at", "recipient"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    recipient: Mapped[str] = mapped_column(String(64))  # username
    channel: Mapped[str] = mapped_column(String(16))  # email | wecom | dingtalk
    kind: Mapped[str] = mapped_column(String(16))  # high | overdue | escalation | reminder
    entry_id: Mapped[int] = mapped_column(ForeignKey("watchlist_entries.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class FeedFileRecord(Base):
    """One department file's receipt (see ``schemas.events.FeedFile``), once per distinct
    file content: publishing the same file again changes nothing."""

    __tablename__ = "feed_files"
    __table_args__ = (Index("ix_feed_files_feed_published", "feed", "published_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    feed: Mapped[str] = mapped_column(String(16))
    dept: Mapped[str] = mapped_column(String(16))
    file: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    rows_accepted: Mapped[int] = mapped_column(Integer)
    rows_rejected: Mapped[int] = mapped_column(Integer)
    rejects_json: Mapped[str] = mapped_column(Text)  # {"reason code": rows}
    file_error: Mapped[str | None] = mapped_column(Text, default=None)
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _sqlite_on_begin): sqlite3's legacy mode starts
    # transactions only at the first write, so a read-then-write would not be atomic.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    try:
        # WAL lets the web pages read while a sink writes; the busy timeout makes a second
        # writer wait for the lock instead of failing at once.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


def _sqlite_on_begin(conn: Any) -> None:
    # A writer asks for the write lock up front (BEGIN IMMEDIATE), so two sinks queue on
    # the busy timeout rather than both reading and then failing to upgrade their lock.
    if conn.get_execution_options().get("fanpin_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def create_engine_for(url: str) -> Engine:
    """An engine for the watch list at ``url``.

    ``sqlite:///path`` creates the parent folder and turns on WAL and a busy timeout.
    ``postgresql://`` and ``postgres://`` are rewritten to use psycopg 3
    (``postgresql+psycopg://``); other drivers are refused, since only psycopg is installed.
    """
    parsed = make_url(url)
    # Split by hand: asking SQLAlchemy for the driver would load the "postgres" dialect,
    # which no longer exists.
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend in ("postgresql", "postgres"):
        if driver in ("", "psycopg"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        else:
            raise ValueError(
                f"unsupported PostgreSQL driver {driver!r}: use postgresql+psycopg:// "
                "or plain postgresql://"
            )
        return create_engine(parsed, pool_pre_ping=True)
    raise ValueError(f"unsupported watch-list database URL scheme {parsed.drivername!r}")


# The audit trail is append-only in the database itself, not just by convention: an
# UPDATE or DELETE of a history row fails whoever sends it.
_APPEND_ONLY_SQLITE: Final = (
    "CREATE TRIGGER IF NOT EXISTS watchlist_history_no_update BEFORE UPDATE ON "
    "watchlist_history BEGIN SELECT RAISE(ABORT, 'watchlist_history is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS watchlist_history_no_delete BEFORE DELETE ON "
    "watchlist_history BEGIN SELECT RAISE(ABORT, 'watchlist_history is append-only'); END",
)
_APPEND_ONLY_POSTGRES: Final = (
    "CREATE OR REPLACE FUNCTION watchlist_history_append_only() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'watchlist_history is append-only'; END $$",
    "DROP TRIGGER IF EXISTS watchlist_history_append_only ON watchlist_history",
    "CREATE TRIGGER watchlist_history_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
    "ON watchlist_history FOR EACH STATEMENT EXECUTE FUNCTION watchlist_history_append_only()",
)


def _add_missing_columns(conn: Connection) -> None:
    """Add the columns a newer Fanpin defines to tables an older one created. New columns
    are all nullable or defaulted, so ``ALTER TABLE ... ADD COLUMN`` is enough."""
    inspector = inspect(conn)
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = column.type.compile(dialect=conn.dialect)
            default = getattr(column.default, "arg", None)
            if isinstance(default, bool):
                ddl += " DEFAULT " + ("TRUE" if default else "FALSE")
            elif isinstance(default, int | str) and not callable(default):
                ddl += " DEFAULT " + (str(default) if isinstance(default, int) else "''")
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {ddl}')


def init_db(engine: Engine) -> None:
    """Create the watch-list tables and columns that do not exist yet, and the triggers
    that keep the audit trail append-only. Existing data is kept. Several processes may
    run this at once (web and sink both do): on PostgreSQL they take turns."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if postgres:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")  # "fanpin" init
        Base.metadata.create_all(conn)
        _add_missing_columns(conn)
        for sql in _APPEND_ONLY_POSTGRES if postgres else _APPEND_ONLY_SQLITE:
            conn.exec_driver_sql(sql)

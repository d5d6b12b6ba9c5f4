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
    text,
)
from sqlalchemy.engine import make_url
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


def init_db(engine: Engine) -> None:
    """Create the watch-list tables that do not exist yet. Existing data is kept."""
    Base.metadata.create_all(engine)

"""Watch-list operations: store alerts, query entries, change state.

Every function takes keyword-only arguments, the session first. ``record_alerts`` owns its
transaction (it commits, and retries on a conflict with another writer); the others leave
committing to the caller.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from sqlalchemy import ColumnElement, Select, case, false, func, literal, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, selectinload

from consumers.watchlist.models import (
    IDENTIFICATION_DAYS,
    MEASURE_DUE_DAYS,
    OPEN_STATES,
    PENDING_STATES,
    RISK_TYPE_SEP,
    RULE_SEP,
    SEVERITY_RANK,
    STATE_NEW,
    STATES,
    AlertRecord,
    Entry,
    History,
    utcnow,
)
from schemas import Alert, encode
from schemas.events import Evidence, Reason, decode_event

log = logging.getLogger(__name__)

SYSTEM_ACTOR: Final = "system"
MAX_ATTEMPTS: Final = 8
MAX_PAGE_SIZE: Final = 500

ACTION_CREATED: Final = "created"
ACTION_MERGED: Final = "alert merged"
ACTION_SEVERITY: Final = "severity raised"
ACTION_STATE: Final = "state changed"
ACTION_REVISED: Final = "alert revised"
ACTION_SEVERITY_LOWERED: Final = "severity lowered"


@dataclass(frozen=True)
class RecordStats:
    """What one ``record_alerts`` call did with its alerts."""

    new_entries: int = 0  # alerts that opened a new entry
    merged: int = 0  # alerts merged into an open entry
    duplicates: int = 0  # alerts already stored (a replay): nothing changed
    revised: int = 0  # a month judged again with late data: the stored alert replaced

    def __add__(self, other: RecordStats) -> RecordStats:
        return RecordStats(
            self.new_entries + other.new_entries,
            self.merged + other.merged,
            self.duplicates + other.duplicates,
            self.revised + other.revised,
        )


class EvidenceView(msgspec.Struct, frozen=True):
    """What ``Entry.evidence_json`` holds: the latest month's alert, minus its identity."""

    alert_id: str
    month: str
    rule_version: str
    reasons: list[Reason]
    evidence: Evidence


_evidence_encoder = msgspec.json.Encoder(decimal_format="string")
_evidence_decoder = msgspec.json.Decoder(EvidenceView)


def evidence_of(entry: Entry) -> EvidenceView:
    """The reasons and numbers behind ``entry`` (from its latest-month alert)."""
    return _evidence_decoder.decode(entry.evidence_json)


def _evidence_json(alert: Alert) -> str:
    view = EvidenceView(
        alert_id=alert.id,
        month=alert.month,
        rule_version=alert.rule_version,
        reasons=list(alert.reasons),
        evidence=alert.evidence,
    )
    return _evidence_encoder.encode(view).decode()


def _risk_types_of(alert: Alert) -> set[str]:
    return {alert.risk_type, *(r.risk_type for r in alert.reasons)}


def _rules_of(alert: Alert) -> set[str]:
    return {r.rule for r in alert.reasons}


def _join(values: Iterable[str], sep: str) -> str:
    return sep.join(sorted({v for v in values if v}))


def _split(value: str, sep: str) -> set[str]:
    return {v for v in value.split(sep) if v}


# -- storing alerts -----------------------------------------------------------------------


def record_alerts(
    *, session: Session, alerts: Sequence[Alert], now: dt.datetime | None = None
) -> RecordStats:
    """Store a batch of alerts on the watch list, in one transaction, and commit.

    Idempotent: an alert whose id is already stored changes nothing, so replaying the
    alert topic is safe. An alert for a household with an open entry is merged into it;
    otherwise it opens a new entry (the household's next episode).

    Safe with several writers: a writer that loses a race (the same alert, or a new entry
    for the same household, stored by another process first) gets a unique-constraint
    error, rolls back and redoes the whole batch, which then sees the other's rows. The
    session must carry no uncommitted work of the caller's: a retry rolls it back.
    """
    now = now or utcnow()
    # A stable order: per household oldest month first (so the first alert opens the entry
    # and names its main risk type), and the same row-lock order in every writer, so two
    # writers cannot deadlock on each other's households.
    ordered = sorted(alerts, key=lambda a: (a.household_id, a.month, a.id))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            if not session.in_transaction():
                # SQLite: take the write lock at BEGIN (see models._sqlite_on_begin).
                session.connection(execution_options={"fanpin_write": True})
            stats = RecordStats()
            for alert in ordered:
                stats += _record_one(session, alert, now)
            session.commit()
            return stats
        except (IntegrityError, OperationalError) as exc:
            session.rollback()
            if attempt == MAX_ATTEMPTS or not _retryable(exc):
                raise
            log.info("watch-list write conflict (attempt %d), retrying: %s", attempt, exc.orig)
            time.sleep(random.uniform(0.01, 0.05) * attempt)  # jitter: don't collide again
    raise AssertionError("unreachable")


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in ("40001", "40P01"):  # serialization failure, deadlock detected
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message


def _record_one(session: Session, alert: Alert, now: dt.datetime) -> RecordStats:
    seen = session.scalars(select(AlertRecord).where(AlertRecord.alert_id == alert.id)
                           .with_for_update()).first()
    if seen is not None:
        payload = encode(alert).decode()
        if seen.payload == payload:
            return RecordStats(duplicates=1)
        _revise(session, seen, alert, payload, now)
        return RecordStats(revised=1)

    # Lock the open entry so a concurrent merge into it waits for us (PostgreSQL; SQLite
    # already holds the database write lock).
    entry = session.scalars(
        select(Entry)
        .where(Entry.household_id == alert.household_id, Entry.state.in_(OPEN_STATES))
        .order_by(Entry.episode.desc())
        .limit(1)
        .with_for_update()
    ).first()

    if entry is None:
        entry = _open_entry(session, alert, now)
        stats = RecordStats(new_entries=1)
    else:
        _merge(session, entry, alert, now)
        stats = RecordStats(merged=1)

    session.add(
        AlertRecord(
            alert_id=alert.id,
            entry_id=entry.id,
            household_id=alert.household_id,
            month=alert.month,
            received_at=now,
            payload=encode(alert).decode(),
        )
    )
    session.flush()
    return stats


def _revise(session: Session, record: AlertRecord, alert: Alert, payload: str,
            now: dt.datetime) -> None:
    """The worker judged a month again (data for it came late): keep the latest judgement.
    Alerts of one household travel in order on one partition, so the last one read is the
    latest; a replay reads them again in the same order. The entry's severity, risk types
    and rules are worked out again from its alerts as they now stand, so they are what an
    in-order run gives, not a union with the superseded judgement."""
    record.payload = payload
    entry = session.get(Entry, record.entry_id, with_for_update=True)
    assert entry is not None
    session.flush()
    alerts = [decode_event(p.encode()) for p in session.scalars(
        select(AlertRecord.payload).where(AlertRecord.entry_id == entry.id)
        .order_by(AlertRecord.month, AlertRecord.id))]
    current = [a for a in alerts if isinstance(a, Alert)]
    old_severity = entry.severity
    if alert.month == entry.last_month:
        entry.evidence_json = _evidence_json(alert)
        entry.rule_version = alert.rule_version
    if current:
        entry.risk_type = current[0].risk_type
        entry.severity = max((a.severity for a in current),
                             key=lambda v: SEVERITY_RANK.get(v, 0))
        entry.risk_types = _join(set().union(*map(_risk_types_of, current)), RISK_TYPE_SEP)
        entry.rules = _join(set().union(*map(_rules_of, current)), RULE_SEP)
    entry.updated_at = now
    session.add(History(entry_id=entry.id, at=now, actor=SYSTEM_ACTOR, action=ACTION_REVISED,
                        new_value=f"{alert.month} {alert.severity} ({alert.id})"))
    if entry.severity != old_severity:
        raised = SEVERITY_RANK.get(entry.severity, 0) > SEVERITY_RANK.get(old_severity, 0)
        session.add(History(entry_id=entry.id, at=now, actor=SYSTEM_ACTOR,
                            action=ACTION_SEVERITY if raised else ACTION_SEVERITY_LOWERED,
                            old_value=old_severity, new_value=entry.severity))
    session.flush()


def _open_entry(session: Session, alert: Alert, now: dt.datetime) -> Entry:
    # Entries are never deleted, so max(episode) + 1 is the number of earlier entries + 1.
    last_episode = session.scalar(
        select(func.max(Entry.episode)).where(Entry.household_id == alert.household_id)
    )
    episode = (last_episode or 0) + 1
    entry = Entry(
        entry_key=f"{alert.household_id}#{episode}",
        household_id=alert.household_id,
        region_code=alert.region_code,
        household_type=alert.household_type,
        episode=episode,
        risk_type=alert.risk_type,
        risk_types=_join(_risk_types_of(alert), RISK_TYPE_SEP),
        rules=_join(_rules_of(alert), RULE_SEP),
        severity=alert.severity,
        state=STATE_NEW,
        first_month=alert.month,
        last_month=alert.month,
        alert_count=1,
        evidence_json=_evidence_json(alert),
        rule_version=alert.rule_version,
        created_at=now,
        updated_at=now,
    )
    session.add(entry)
    session.flush()  # assigns entry.id; a racing writer's entry_key collides here
    session.add(
        History(
            entry_id=entry.id,
            at=now,
            actor=SYSTEM_ACTOR,
            action=ACTION_CREATED,
            new_value=f"{alert.month} {alert.severity} {entry.risk_types} ({alert.id})",
        )
    )
    return entry


def _merge(session: Session, entry: Entry, alert: Alert, now: dt.datetime) -> None:
    old_severity = entry.severity
    entry.alert_count += 1
    entry.first_month = min(entry.first_month, alert.month)
    if alert.month >= entry.last_month:
        # The newest month's numbers are the ones an officer should check.
        entry.last_month = alert.month
        entry.evidence_json = _evidence_json(alert)
        entry.rule_version = alert.rule_version
        entry.region_code = alert.region_code
        entry.household_type = alert.household_type
    if SEVERITY_RANK.get(alert.severity, 0) > SEVERITY_RANK.get(entry.severity, 0):
        entry.severity = alert.severity
    entry.risk_types = _join(
        _split(entry.risk_types, RISK_TYPE_SEP) | _risk_types_of(alert), RISK_TYPE_SEP
    )
    entry.rules = _join(_split(entry.rules, RULE_SEP) | _rules_of(alert), RULE_SEP)
    entry.updated_at = now
    session.add(
        History(
            entry_id=entry.id,
            at=now,
            actor=SYSTEM_ACTOR,
            action=ACTION_MERGED,
            old_value=None,
            new_value=f"{alert.month} {alert.severity} ({alert.id})",
        )
    )
    if entry.severity != old_severity:
        session.add(
            History(
                entry_id=entry.id,
                at=now,
                actor=SYSTEM_ACTOR,
                action=ACTION_SEVERITY,
                old_value=old_severity,
                new_value=entry.severity,
            )
        )


# -- workflow -----------------------------------------------------------------------------


def set_state(
    *,
    session: Session,
    entry_id: int,
    state: str,
    actor: str,
    now: dt.datetime | None = None,
) -> Entry:
    """Move an entry to ``state``, recording who did it. Flushes; the caller commits.

    Raises ``ValueError`` for an unknown state and ``LookupError`` for an unknown entry.
    Reopening a closed entry while the household has another open one violates the
    one-open-entry rule and raises ``IntegrityError``.
    """
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}; known: {', '.join(STATES)}")
    entry = session.get(Entry, entry_id, with_for_update=True)
    if entry is None:
        raise LookupError(f"no watch-list entry {entry_id}")
    if entry.state == state:
        return entry
    now = now or utcnow()
    session.add(
        History(
            entry_id=entry.id,
            at=now,
            actor=actor,
            action=ACTION_STATE,
            old_value=entry.state,
            new_value=state,
        )
    )
    entry.state = state
    entry.updated_at = now
    session.flush()
    return entry


# -- queries ------------------------------------------------------------------------------

_SEVERITY_ORDER = case(SEVERITY_RANK, value=Entry.severity, else_=0)

# Sort keys an URL may ask for; anything else is refused by ``list_entries``.
SORTS: Final[dict[str, tuple[ColumnElement[Any], ...]]] = {
    "first_month": (Entry.first_month.asc(), _SEVERITY_ORDER.desc(), Entry.id.asc()),
    "-first_month": (Entry.first_month.desc(), _SEVERITY_ORDER.desc(), Entry.id.asc()),
    "last_month": (Entry.last_month.asc(), Entry.id.asc()),
    "-last_month": (Entry.last_month.desc(), Entry.id.asc()),
    "severity": (_SEVERITY_ORDER.desc(), Entry.first_month.asc(), Entry.id.asc()),
    "region": (Entry.region_code.asc(), Entry.household_id.asc(), Entry.episode.asc()),
    "household": (Entry.household_id.asc(), Entry.episode.asc()),
    "alert_count": (Entry.alert_count.desc(), Entry.id.asc()),
    "-updated": (Entry.updated_at.desc(), Entry.id.desc()),
}
DEFAULT_SORT: Final = "first_month"


# Flags a list can be narrowed to, besides the columns.
FLAGS: Final[tuple[str, ...]] = ("needs_measure", "snoozed", "escalated", "unassigned")


@dataclass(frozen=True)
class EntryFilter:
    """What a list, an export or an API query asks for. ``region_prefix`` is the start of
    the 12-digit village code (a county is its first 6 digits); the web layer narrows it to
    the user's own region before it gets here. ``risk_type`` matches any risk type the
    entry has seen. ``overdue`` selects entries still awaiting identification more than 15
    days after they arrived (``True``) or the rest (``False``). ``nothing`` matches no row
    (a region outside the user's scope)."""

    region_prefix: str | None = None
    risk_type: str | None = None
    severity: str | None = None
    state: str | None = None
    overdue: bool | None = None
    assignee: str | None = None
    flag: str | None = None
    nothing: bool = False


def _filters(f: EntryFilter, now: dt.datetime | None) -> list[ColumnElement[bool]]:
    # Every value goes in as a bound parameter; LIKE wildcards in the prefix are escaped.
    where: list[ColumnElement[bool]] = []
    texts = (f.region_prefix, f.risk_type, f.severity, f.state, f.assignee, f.flag)
    if f.nothing or any(v and "\x00" in v for v in texts):
        # No stored value holds a NUL, and PostgreSQL refuses one in a parameter.
        return [false()]
    now = now or utcnow()
    if f.region_prefix:
        where.append(Entry.region_code.startswith(f.region_prefix, autoescape=True))
        # The same rows as a range, which a plain b-tree index on region_code serves in any
        # collation and in a prepared statement's generic plan (a LIKE prefix is served
        # only under the C collation, and only when the planner sees the value).
        low, high = _prefix_range(f.region_prefix)
        if low is not None:
            where.append(Entry.region_code >= low)
        if high is not None:
            where.append(Entry.region_code < high)
    if f.risk_type:
        # Match a whole item of the "、"-joined list, not a substring of one.
        padded = literal(RISK_TYPE_SEP) + Entry.risk_types + literal(RISK_TYPE_SEP)
        where.append(padded.contains(f"{RISK_TYPE_SEP}{f.risk_type}{RISK_TYPE_SEP}",
                                     autoescape=True))
    if f.severity:
        where.append(Entry.severity == f.severity)
    if f.state:
        where.append(Entry.state == f.state)
    if f.assignee:
        where.append(Entry.assignee == f.assignee)
    if f.overdue is not None:
        cutoff = now - dt.timedelta(days=IDENTIFICATION_DAYS)
        is_overdue = Entry.state.in_(PENDING_STATES) & (Entry.created_at < cutoff)
        where.append(is_overdue if f.overdue else ~is_overdue)
    if f.flag == "needs_measure":
        where.append((Entry.state == "已纳入监测") & (Entry.measure_count == 0)
                     & (Entry.identified_at < now - dt.timedelta(days=MEASURE_DUE_DAYS)))
    elif f.flag == "snoozed":
        where.append(Entry.snoozed_until > now)
    elif f.flag == "escalated":
        where.append((Entry.escalated_at.is_not(None) | Entry.supervised_at.is_not(None))
                     & Entry.state.in_(OPEN_STATES))
    elif f.flag == "unassigned":
        where.append(Entry.assignee.is_(None) & Entry.state.in_(OPEN_STATES))
    elif f.flag:
        where.append(false())
    return where


def _prefix_range(prefix: str) -> tuple[str | None, str | None]:
    """Bounds ``[low, high)`` holding exactly the digit strings that start with ``prefix``
    (region codes are digits); ``(None, None)`` for anything but digits, ``high`` None when
    the prefix is all nines."""
    if not (prefix.isascii() and prefix.isdigit()):
        return None, None
    stem = prefix.rstrip("9")
    if not stem:
        return prefix, None
    return prefix, stem[:-1] + str(int(stem[-1]) + 1)


def filtered_entries(
    filters: EntryFilter = EntryFilter(), *, sort: str = DEFAULT_SORT,
    now: dt.datetime | None = None,
) -> Select[Entry]:
    """The SELECT behind ``list_entries`` and the exports, without paging."""
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}; known: {', '.join(SORTS)}")
    return select(Entry).where(*_filters(filters, now)).order_by(*SORTS[sort])


def list_entries(
    *,
    session: Session,
    filters: EntryFilter = EntryFilter(),
    sort: str = DEFAULT_SORT,
    page: int = 1,
    page_size: int = 50,
    now: dt.datetime | None = None,
) -> tuple[list[Entry], int]:
    """One page of entries matching ``filters``, and the number matching in all.
    ``page`` starts at 1; ``page_size`` is capped at 500."""
    stmt = filtered_entries(filters, sort=sort, now=now)
    page = max(1, page)
    page_size = min(max(1, page_size), MAX_PAGE_SIZE)
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    if total <= (page - 1) * page_size:
        return [], total
    # Pick the page's ids first, then read only those rows: the ids (and every column the
    # filters and the sort need) come from a covering index, so the wide rows, evidence
    # and all, are read 50 at a time instead of for every match before the sort. The
    # sorts all end in a unique key, so the order is the same as sorting the rows.
    page_ids = (
        stmt.with_only_columns(Entry.id)
        .limit(page_size)
        .offset((page - 1) * page_size)
        .scalar_subquery()
    )
    rows = session.scalars(
        select(Entry).where(Entry.id.in_(page_ids)).order_by(*SORTS[sort])
    ).all()
    return list(rows), total


def get_entry(*, session: Session, entry_id: int) -> Entry | None:
    """One entry with its alerts and history loaded, or None."""
    return session.scalars(
        select(Entry)
        .where(Entry.id == entry_id)
        .options(selectinload(Entry.alerts), selectinload(Entry.history))
    ).first()


def counts_by_state(*, session: Session, filters: EntryFilter | None = None,
                    now: dt.datetime | None = None) -> dict[str, int]:
    """The number of entries in each state (every state listed, in workflow order),
    optionally among those matching ``filters``."""
    counts = dict.fromkeys(STATES, 0)
    stmt = select(Entry.state, func.count()).group_by(Entry.state)
    if filters is not None:
        stmt = stmt.where(*_filters(filters, now))
    for state, n in session.execute(stmt):
        counts[state] = n
    return counts


def overdue_count(*, session: Session, now: dt.datetime | None = None) -> int:
    """Entries still awaiting identification more than 15 days after the first lead."""
    where = _filters(EntryFilter(overdue=True), now)
    return session.scalar(select(func.count()).select_from(Entry).where(*where)) or 0

"""``fanpin status``: the operator's first questions, answered at a terminal.

Is the pipeline keeping up (consumer lag, worker and sink alive)? Did every department send
this month's file (each feed's last file and its rows)? Is anything piling up in the
dead-letter topic? And where does the watch list stand (entries by state, overdue)?
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from fanpin.settings import Settings


@dataclass
class GroupStatus:
    group: str
    members: int
    lag: dict[str, int]  # topic -> messages not yet committed

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


@dataclass
class FeedStatus:
    feed: str
    dept: str
    last_file: str
    published_at: str  # ISO 8601, UTC
    age_days: float
    rows_accepted: int
    rows_rejected: int
    files: int
    file_error: str | None


@dataclass
class Status:
    bootstrap: str
    broker_up: bool
    groups: list[GroupStatus] = field(default_factory=list)
    dead_letters: int = 0
    feeds: list[FeedStatus] = field(default_factory=list)
    entries_by_state: dict[str, int] = field(default_factory=dict)
    overdue: int = 0
    watchlist_error: str | None = None
    broker_error: str | None = None

    @property
    def healthy(self) -> bool:
        return (self.broker_up and all(g.members > 0 for g in self.groups)
                and self.watchlist_error is None)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["healthy"] = self.healthy
        return out


def gather(settings: Settings, now: dt.datetime | None = None) -> Status:
    now = now or dt.datetime.now(dt.UTC)
    status = Status(bootstrap=settings.bootstrap_servers, broker_up=False)
    _kafka(settings, status)
    _watchlist(settings, status, now)
    return status


def _reachable(bootstrap: str, timeout: float = 2.0) -> str | None:
    """None if any bootstrap server accepts a TCP connection, else why not."""
    import socket

    why = "no bootstrap servers"
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                          timeout=timeout):
                return None
        except (OSError, ValueError) as exc:
            why = f"{server.strip()}: {exc}"
    return why


def _kafka(settings: Settings, status: Status) -> None:
    import logging

    from kafka.errors import KafkaError

    from fanpin.kafka_admin import Admin, pipeline_groups
    from fanpin.kafka_check import KafkaSetupError

    unreachable = _reachable(settings.bootstrap_servers)
    if unreachable:
        status.broker_error = unreachable
        return
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the table says it better
    try:
        admin = Admin(settings)
    except KafkaSetupError as exc:  # refused the credentials, TLS failed, ...: it says why
        status.broker_error = str(exc).removeprefix("cannot use Kafka: ")
        return
    except KafkaError as exc:
        status.broker_error = f"{type(exc).__name__}: {exc}"
        return
    try:
        status.broker_up = True
        for group, topics in pipeline_groups(settings).items():
            by_topic = dict.fromkeys(topics, 0)
            for tp, lag in admin.partition_lag(group, topics).items():
                by_topic[tp.topic] += lag
            status.groups.append(GroupStatus(group, admin.group_members(group), by_topic))
        status.dead_letters = sum(admin.end_offsets(settings.topic("dead-letters")).values())
    except KafkaError as exc:
        status.broker_error = f"{type(exc).__name__}: {exc}"
    finally:
        admin.close()


def _watchlist(settings: Settings, status: Status, now: dt.datetime) -> None:
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from consumers.watchlist.feeds import feed_summary
    from consumers.watchlist.models import create_engine_for, init_db
    from consumers.watchlist.service import counts_by_state, overdue_count

    engine = create_engine_for(settings.watchlist_url)
    try:
        init_db(engine)
        with Session(engine) as session:
            status.entries_by_state = counts_by_state(session=session)
            status.overdue = overdue_count(session=session, now=now)
            for f in feed_summary(session=session):
                status.feeds.append(FeedStatus(
                    feed=f.feed, dept=f.dept, last_file=f.last_file,
                    published_at=f.last_published_at.isoformat(timespec="seconds"),
                    age_days=round((now - f.last_published_at).total_seconds() / 86400, 1),
                    rows_accepted=f.last_accepted, rows_rejected=f.last_rejected,
                    files=f.files, file_error=f.last_error))
    except SQLAlchemyError as exc:
        status.watchlist_error = f"{type(exc).__name__}: {exc.__class__.__doc__ or exc}"[:200]
    finally:
        engine.dispose()


FEED_NAMES = {"regions": "行政区划", "thresholds": "监测范围", "roster": "花名册",
              "income": "收入监测", "medical": "医保结算", "employment": "就业"}
MONTHLY_FEEDS = ("income", "medical", "employment")


def render(status: Status) -> str:
    """Plain text for a terminal (no colour, so it can be mailed or logged as is)."""
    lines: list[str] = []
    up = "up" if status.broker_up else f"DOWN ({status.broker_error or 'unreachable'})"
    lines.append(f"Kafka {status.bootstrap}: {up}")
    if status.groups:
        lines.append("")
        lines.append("Consumers (消费组)          alive   lag (messages not yet processed)")
        for g in status.groups:
            alive = f"{g.members} up" if g.members else "DOWN"
            detail = ", ".join(f"{t.split('.', 1)[-1]} {n}" for t, n in g.lag.items())
            lines.append(f"  {g.group:<24} {alive:<7} {g.total_lag:>8}  ({detail})")
        lines.append(f"  dead letters (死信): {status.dead_letters}")
    lines.append("")
    lines.append("Feeds (各部门最近文件)       last file                 published (UTC)"
                 "        age   rows  rejected")
    seen = {f.feed for f in status.feeds}
    for f in status.feeds:
        flag = ""
        if f.file_error:
            flag = "  FILE REFUSED"
        elif f.feed in MONTHLY_FEEDS and f.age_days > 35:
            flag = "  LATE"
        label = f"{f.feed} {FEED_NAMES.get(f.feed, '')}"
        lines.append(f"  {label:<24} {f.last_file:<25} {f.published_at[:16]:<16} "
                     f"{f.age_days:>6.1f}d {f.rows_accepted:>6} {f.rows_rejected:>8}{flag}")
    for feed in MONTHLY_FEEDS:
        if feed not in seen:
            lines.append(f"  {feed + ' ' + FEED_NAMES[feed]:<24} (no file yet)")
    lines.append("")
    if status.watchlist_error:
        lines.append(f"Watch list: UNAVAILABLE ({status.watchlist_error})")
    else:
        counts = "  ".join(f"{k} {v}" for k, v in status.entries_by_state.items())
        lines.append(f"Watch list (预警名单): {counts}")
        lines.append(f"  overdue (超期未识别): {status.overdue}")
    lines.append("")
    lines.append("healthy" if status.healthy else "NOT HEALTHY: see the lines marked DOWN above")
    return "\n".join(lines)

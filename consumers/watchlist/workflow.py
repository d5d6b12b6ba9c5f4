"""The watch-list workflow, as the policy describes it.

新预警 → 已接收 (claimed or assigned) → 核实中 (home visit) → 已纳入监测 (identified, with the
monitored type) or 核实排除 (dismissed, with a reason) → 帮扶中 (assistance measures) →
风险消除 (帮扶消除 or 自然消除, no earlier than 6 months after identification).

Each action checks who may do it (see ``access``), changes the entry, and appends to its
audit trail (``History``: who, when, what, old → new). They flush; the caller commits.
A refused action raises ``WorkflowError`` with a message an officer can act on (in Chinese,
with the English in ``.en``); nothing is changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from consumers.watchlist import access
from consumers.watchlist.models import (
    CLOSED_STATES,
    ROLE_ADMIN,
    ROLE_COUNTY,
    Entry,
    History,
    Measure,
    Note,
    User,
    utcnow,
)
from consumers.watchlist.service import ACTION_STATE

ACKNOWLEDGED: Final = "已接收"
VISITING: Final = "核实中"
IDENTIFIED: Final = "已纳入监测"
DISMISSED: Final = "核实排除"
ASSISTING: Final = "帮扶中"
ELIMINATED: Final = "风险消除"

MONITORED_TYPES: Final[tuple[str, ...]] = ("脱贫不稳定户", "边缘易致贫户", "突发严重困难户")
# Why a visit can rule an entry out; stored as the code, shown through labels.
DISMISS_REASONS: Final[dict[str, str]] = {
    "not_at_risk": "经核实无返贫致贫风险",
    "data_error": "部门数据有误",
    "duplicate": "重复预警",
}
# The national categories of assistance measures (帮扶措施).
MEASURE_CATEGORIES: Final[tuple[str, ...]] = (
    "产业帮扶", "就业帮扶", "健康帮扶", "教育帮扶", "住房安全保障", "饮水安全保障",
    "综合保障", "金融帮扶", "消费帮扶", "公益岗位", "其他",
)
ELIMINATION_KINDS: Final[tuple[str, ...]] = ("帮扶消除", "自然消除")
# The policy: risk is eliminated only after income has been stable for 6 months.
ELIMINATION_MIN_MONTHS: Final = 6
SNOOZE_MAX_DAYS: Final = 90
NOTE_MAX: Final = 2000

ACTION_VIEWED: Final = "viewed"
ACTION_CLAIMED: Final = "claimed"
ACTION_ASSIGNED: Final = "assigned"
ACTION_IDENTIFIED: Final = "identified"
ACTION_DISMISSED: Final = "dismissed"
ACTION_MEASURE: Final = "measure added"
ACTION_ELIMINATED: Final = "eliminated"
ACTION_SNOOZED: Final = "snoozed"
ACTION_NOTE: Final = "note added"
ACTION_VISIT: Final = "visit recorded"
ACTION_ESCALATED: Final = "escalated"
ACTION_EXPORTED: Final = "exported"


class WorkflowError(ValueError):
    """An action the workflow refuses. ``str()`` is Chinese; ``en`` is the English."""

    def __init__(self, zh: str, en: str, *, status: int = 409) -> None:
        super().__init__(zh)
        self.zh = zh
        self.en = en
        self.status = status


class Forbidden(WorkflowError):
    def __init__(self, zh: str = "无权操作该预警。",
                 en: str = "You may not act on this entry.") -> None:
        super().__init__(zh, en, status=403)


@dataclass(frozen=True)
class Outcome:
    entry: Entry
    changed: bool = True


def add_months(when: dt.datetime, months: int) -> dt.datetime:
    """``when`` plus whole calendar months (the 31st becomes the month's last day)."""
    month0 = when.month - 1 + months
    year, month = when.year + month0 // 12, month0 % 12 + 1
    for day in (when.day, 30, 29, 28):
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def earliest_elimination(entry: Entry) -> dt.datetime | None:
    """The first moment the policy lets this entry's risk be eliminated."""
    if entry.identified_at is None:
        return None
    # Calendar months as officers count them: in Beijing time, not UTC.
    local = entry.identified_at.astimezone(access.BEIJING)
    return add_months(local, ELIMINATION_MIN_MONTHS).astimezone(dt.UTC)


def can_eliminate(entry: Entry, now: dt.datetime) -> bool:
    """Whether the policy's 6 months since identification have passed."""
    earliest = earliest_elimination(entry)
    return earliest is not None and now >= earliest


def _audit(session: Session, entry: Entry, user: User | str, action: str,
           old: str | None, new: str | None, now: dt.datetime) -> None:
    actor = user if isinstance(user, str) else user.username
    session.add(History(entry_id=entry.id, at=now, actor=actor, action=action,
                        old_value=old, new_value=new))


def _load(session: Session, user: User, entry_id: int, *, write: bool = True) -> Entry:
    entry = session.get(Entry, entry_id, with_for_update=write)
    if entry is None or not access.can_see(user, entry.region_code):
        # The same answer for "no such entry" and "not yours": ids do not leak.
        raise LookupError(f"no watch-list entry {entry_id}")
    if write and not access.can_act(user):
        raise Forbidden()
    return entry


def _require_state(entry: Entry, allowed: tuple[str, ...], zh_action: str, en_action: str) -> None:
    if entry.state not in allowed:
        raise WorkflowError(
            f"当前状态为“{entry.state}”，不能{zh_action}（需处于：{'、'.join(allowed)}）。",
            f"The entry is in state {entry.state}; {en_action} needs one of: "
            f"{', '.join(allowed)}.",
        )


def _move(session: Session, entry: Entry, user: User, state: str, now: dt.datetime) -> None:
    if entry.state == state:
        return
    _audit(session, entry, user, ACTION_STATE, entry.state, state, now)
    entry.state = state
    entry.updated_at = now
    if state in CLOSED_STATES:
        entry.closed_at = now


def _text(value: str | None, zh_field: str, en_field: str, *, required: bool = True) -> str:
    value = (value or "").strip()
    if required and not value:
        raise WorkflowError(f"请填写{zh_field}。", f"{en_field} is required.", status=422)
    if len(value) > NOTE_MAX:
        raise WorkflowError(f"{zh_field}过长（最多 {NOTE_MAX} 字）。",
                            f"{en_field} is too long (at most {NOTE_MAX} characters).",
                            status=422)
    return value


# -- reading ------------------------------------------------------------------------------


def view(*, session: Session, user: User, entry_id: int, now: dt.datetime | None = None) -> Entry:
    """Open an entry's page: checks scope and records the view of personal details."""
    entry = _load(session, user, entry_id, write=False)
    _audit(session, entry, user, ACTION_VIEWED, None, None, now or utcnow())
    session.flush()
    return entry


# -- actions ------------------------------------------------------------------------------


def claim(*, session: Session, user: User, entry_id: int,
          now: dt.datetime | None = None) -> Outcome:
    """Take a new entry: it becomes the user's, and acknowledged."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    if entry.state != "新预警" and entry.assignee == user.username:
        return Outcome(entry, changed=False)
    _require_state(entry, ("新预警",), "认领", "claiming")
    _audit(session, entry, user, ACTION_CLAIMED, entry.assignee, user.username, now)
    entry.assignee = user.username
    entry.acknowledged_at = entry.acknowledged_at or now
    _move(session, entry, user, ACKNOWLEDGED, now)
    session.flush()
    return Outcome(entry)


def assign(*, session: Session, user: User, entry_id: int, assignee: str,
           now: dt.datetime | None = None) -> Outcome:
    """A county lead (or an administrator) gives the entry to an officer of its region."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    if user.role not in (ROLE_COUNTY, ROLE_ADMIN):
        raise Forbidden("只有县级负责人可以分配或改派预警。",
                        "Only a county lead can assign or reassign entries.")
    if entry.state in CLOSED_STATES:
        raise WorkflowError("已关闭的预警不能再分配。", "A closed entry cannot be assigned.")
    target = session.scalar(select(User).where(User.username == assignee, User.active))
    if target is None or target.role not in access.OFFICER_ROLES or not access.can_see(
            target, entry.region_code):
        raise WorkflowError("该账号不存在、已停用，或不负责该户所在地区。",
                            "No active officer with that name covers this household's region.",
                            status=422)
    if entry.assignee == target.username:
        return Outcome(entry, changed=False)
    _audit(session, entry, user, ACTION_ASSIGNED, entry.assignee, target.username, now)
    entry.assignee = target.username
    entry.acknowledged_at = entry.acknowledged_at or now
    if entry.state == "新预警":
        _move(session, entry, user, ACKNOWLEDGED, now)
    entry.updated_at = now
    session.flush()
    return Outcome(entry)


def start_visit(*, session: Session, user: User, entry_id: int, note: str | None = None,
                now: dt.datetime | None = None) -> Outcome:
    """Record a home visit (入户核实). The first one moves the entry to 核实中."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    _require_state(entry, ("新预警", ACKNOWLEDGED, VISITING), "登记入户核实", "recording a visit")
    text = _text(note, "核实情况", "The visit's findings")
    if entry.assignee is None:
        entry.assignee = user.username
        _audit(session, entry, user, ACTION_CLAIMED, None, user.username, now)
    entry.acknowledged_at = entry.acknowledged_at or now
    session.add(Note(entry_id=entry.id, at=now, author=user.username, kind="visit", text=text))
    _audit(session, entry, user, ACTION_VISIT, None, text[:200], now)
    _move(session, entry, user, VISITING, now)
    entry.updated_at = now
    session.flush()
    return Outcome(entry)


def identify(*, session: Session, user: User, entry_id: int, monitored_type: str,
             now: dt.datetime | None = None) -> Outcome:
    """识别纳入: the visit confirmed the risk; the household becomes a monitored one."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    if monitored_type not in MONITORED_TYPES:
        raise WorkflowError(f"监测对象类型应为：{'、'.join(MONITORED_TYPES)}。",
                            f"The monitored type must be one of {', '.join(MONITORED_TYPES)}.",
                            status=422)
    _require_state(entry, (VISITING,), "识别纳入（请先登记入户核实）",
                   "identification (record the home visit first)")
    _audit(session, entry, user, ACTION_IDENTIFIED, None, monitored_type, now)
    entry.monitored_type = monitored_type
    entry.identified_at = now
    _move(session, entry, user, IDENTIFIED, now)
    session.flush()
    return Outcome(entry)


def dismiss(*, session: Session, user: User, entry_id: int, reason: str,
            now: dt.datetime | None = None) -> Outcome:
    """核实排除: the visit found no risk, the data was wrong, or the lead is a duplicate."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    if reason not in DISMISS_REASONS:
        raise WorkflowError("请选择排除原因。", "Choose a reason for ruling the entry out.",
                            status=422)
    _require_state(entry, (ACKNOWLEDGED, VISITING), "核实排除", "ruling out")
    _audit(session, entry, user, ACTION_DISMISSED, None, reason, now)
    entry.dismiss_reason = reason
    _move(session, entry, user, DISMISSED, now)
    session.flush()
    return Outcome(entry)


def add_measure(*, session: Session, user: User, entry_id: int, category: str, text: str,
                now: dt.datetime | None = None) -> Outcome:
    """Record an assistance measure; the first one moves the household to 帮扶中."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    if category not in MEASURE_CATEGORIES:
        raise WorkflowError(f"帮扶措施类别应为：{'、'.join(MEASURE_CATEGORIES)}。",
                            "Unknown measure category.", status=422)
    _require_state(entry, (IDENTIFIED, ASSISTING), "登记帮扶措施", "recording a measure")
    body = _text(text, "措施内容", "The measure's description")
    session.add(Measure(entry_id=entry.id, at=now, author=user.username, category=category,
                        text=body))
    entry.measure_count += 1
    _audit(session, entry, user, ACTION_MEASURE, None, f"{category}：{body[:200]}", now)
    _move(session, entry, user, ASSISTING, now)
    entry.updated_at = now
    session.flush()
    return Outcome(entry)


def eliminate(*, session: Session, user: User, entry_id: int, kind: str,
              now: dt.datetime | None = None) -> Outcome:
    """风险消除. Refused earlier than 6 months after identification; 帮扶消除 also needs a
    recorded measure."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    if kind not in ELIMINATION_KINDS:
        raise WorkflowError(f"消除方式应为：{'、'.join(ELIMINATION_KINDS)}。",
                            "Unknown elimination kind.", status=422)
    _require_state(entry, (IDENTIFIED, ASSISTING), "标注风险消除", "eliminating the risk")
    earliest = earliest_elimination(entry)
    if earliest is None or not can_eliminate(entry, now):
        day = earliest.astimezone(access.BEIJING).date().isoformat() if earliest else "—"
        raise WorkflowError(
            f"纳入监测未满 {ELIMINATION_MIN_MONTHS} 个月，{day} 之前不能标注风险消除。",
            f"Risk cannot be marked eliminated within {ELIMINATION_MIN_MONTHS} months of "
            f"identification (not before {day}).",
        )
    if kind == "帮扶消除" and entry.measure_count == 0:
        raise WorkflowError("尚未登记帮扶措施，不能以“帮扶消除”关闭；请登记措施或选择“自然消除”。",
                            "No assistance measure is recorded: record one, or choose "
                            "natural elimination.")
    _audit(session, entry, user, ACTION_ELIMINATED, None, kind, now)
    entry.elimination_kind = kind
    _move(session, entry, user, ELIMINATED, now)
    session.flush()
    return Outcome(entry)


def snooze(*, session: Session, user: User, entry_id: int, until: dt.datetime, reason: str,
           now: dt.datetime | None = None) -> Outcome:
    """Quiet an open entry's reminders until ``until`` (at most 90 days), with a reason.
    The 15-day deadline and the county lead's escalation are not affected."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    if entry.state in CLOSED_STATES:
        raise WorkflowError("已关闭的预警不能暂缓。", "A closed entry cannot be snoozed.")
    text = _text(reason, "暂缓原因", "The reason")
    if until.tzinfo is None:
        raise ValueError("snooze expiry must be timezone-aware")
    if until <= now or until > now + dt.timedelta(days=SNOOZE_MAX_DAYS):
        raise WorkflowError(f"暂缓截止时间须在今后 {SNOOZE_MAX_DAYS} 天之内。",
                            f"The expiry must be within the next {SNOOZE_MAX_DAYS} days.",
                            status=422)
    old = entry.snoozed_until.isoformat() if entry.snoozed_until else None
    _audit(session, entry, user, ACTION_SNOOZED, old, f"{until.isoformat()} {text}", now)
    entry.snoozed_until = until
    entry.snooze_reason = text
    entry.updated_at = now
    session.flush()
    return Outcome(entry)


def add_note(*, session: Session, user: User, entry_id: int, text: str,
             now: dt.datetime | None = None) -> Outcome:
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    body = _text(text, "备注", "The note")
    session.add(Note(entry_id=entry.id, at=now, author=user.username, kind="note", text=body))
    _audit(session, entry, user, ACTION_NOTE, None, body[:200], now)
    entry.updated_at = now
    session.flush()
    return Outcome(entry)


def escalate(*, session: Session, user: User, entry_id: int, reason: str,
             now: dt.datetime | None = None) -> Outcome:
    """A county lead escalates an open entry (督办): it is flagged and the officers told."""
    now = now or utcnow()
    entry = _load(session, user, entry_id)
    if user.role not in (ROLE_COUNTY, ROLE_ADMIN):
        raise Forbidden("只有县级负责人可以督办。", "Only a county lead can escalate.")
    if entry.state in CLOSED_STATES:
        raise WorkflowError("已关闭的预警不能督办。", "A closed entry cannot be escalated.")
    text = _text(reason, "督办事由", "The reason")
    _audit(session, entry, user, ACTION_ESCALATED, None, text[:200], now)
    entry.supervised_at = now
    entry.updated_at = now
    session.flush()
    return Outcome(entry)


def notes_of(*, session: Session, entry_id: int) -> list[Note]:
    return list(session.scalars(select(Note).where(Note.entry_id == entry_id)
                                .order_by(Note.at, Note.id)))


def measures_of(*, session: Session, entry_id: int) -> list[Measure]:
    return list(session.scalars(select(Measure).where(Measure.entry_id == entry_id)
                                .order_by(Measure.at, Measure.id)))

"""The detection rules: ``step(state, event, policy) -> (state, alerts)``.

Pure functions, no Faust, Kafka or SQL. Every income report closes a month for its
household, and the month is judged the way the policy judges it: the income expected over
the next 12 months, minus rigid spending (out-of-pocket medical cost after all three
insurance layers), per head, against that year's monitoring line.

Signals (a sudden income drop, a medical spike, a job loss that is not a job change) do not
raise alerts by themselves: a well-off household that loses a job is not at risk, and
alerting on it costs an officer a wasted home visit. A signal widens the margin and names
the risk type; one household in trouble gets one alert with all its reasons.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from schemas.events import (
    Alert,
    EmploymentEvent,
    Evidence,
    IncomeReport,
    MedicalSettlement,
    Origin,
    Reason,
    RiskType,
    RosterMember,
    Severity,
)
from streams.rules.config import RuleConfig, Thresholds
from streams.rules.months import month_index, month_label, year_of
from streams.rules.state import (
    ENDED,
    REGISTERED,
    UNEMPLOYED,
    HouseholdState,
    fold_employment,
    fold_income,
    fold_medical,
    fold_roster,
    rigid_spending,
)

RULES_CODE_VERSION = "1"
CENT = Decimal("0.01")


@dataclass
class Policy:
    """What the rules need besides the household: the monitoring lines by year and the
    thresholds."""

    lines: dict[int, Decimal]
    config: RuleConfig = field(default_factory=RuleConfig.load)

    @property
    def rule_version(self) -> str:
        return f"r{RULES_CODE_VERSION}/{self.config.version}"

    def line_for(self, year: int) -> tuple[int, Decimal] | None:
        """That year's line, or the latest earlier one when the year is not published yet."""
        known = [y for y in self.lines if y <= year]
        if not known:
            return None
        y = max(known)
        return y, self.lines[y]


@dataclass(frozen=True)
class Signal:
    rule: str
    risk_type: RiskType
    detail: str


Event = RosterMember | IncomeReport | MedicalSettlement | EmploymentEvent


def step(state: HouseholdState, event: Event, policy: Policy) -> tuple[HouseholdState, list[Alert]]:
    if isinstance(event, IncomeReport):
        state = fold_income(state, event)
        month = month_index(event.month)
        if month < state.evaluated_month:
            return state, []  # a late report for a month already judged: keep, don't re-judge
        state.evaluated_month = month
        alert = evaluate(state, month, policy)
        if alert is None:
            return state, []
        if month not in state.alert_months:
            state.alert_months = sorted([*state.alert_months, month])[-12:]
        return state, [alert]
    if isinstance(event, MedicalSettlement):
        return fold_medical(state, event), []
    if isinstance(event, EmploymentEvent):
        return fold_employment(state, event), []
    if isinstance(event, RosterMember):
        return fold_roster(state, event), []
    raise TypeError(f"no rule handles {type(event).__name__}")


# --- the month's judgement -------------------------------------------------------------

def _total(parts: list[int]) -> int:
    return parts[0] + parts[1] + parts[2] + parts[3]


def _window(state: HouseholdState, first: int, last: int, part: int | None = None) -> list[int]:
    out = []
    for m in range(first, last + 1):
        parts = state.income.get(m)
        if parts is not None:
            out.append(_total(parts) if part is None else parts[part])
    return out


def project_income(state: HouseholdState, month: int, th: Thresholds) -> tuple[int, int, int]:
    """Household income (fen) expected over months month..month+11, the trailing 12 months'
    income, and how many months of history there are.

    The same months last year carry the season (harvest, Spring Festival, December
    bonuses); the latest months against the same months a year earlier carry the trend.
    With less than a year of history, the months seen stand in for the missing ones.
    """
    history = _window(state, month - 11, month)
    baseline = sum(history)
    n = len(history)
    if n == 0:
        return 0, 0, 0
    current = _total(state.income[month])
    last_year = _window(state, month - 11, month - 1)  # same months as month+1..month+11
    w = th.drop_window_months
    recent = sum(_window(state, month - w + 1, month))
    year_ago = _window(state, month - w - 11, month - 12)
    if len(year_ago) == w and sum(year_ago) > 0:
        ratio = Decimal(recent) / Decimal(sum(year_ago))
        ratio = min(max(ratio, Decimal("0")), Decimal("1.5"))
    else:
        ratio = Decimal(1)
    if len(last_year) == 11:
        projected = current + int(ratio * sum(last_year))
    else:
        mean = Decimal(baseline) / n
        missing = 11 - len(last_year)
        projected = current + int(ratio * (sum(last_year) + mean * missing))
    return projected, baseline, n


def _drop_signal(state: HouseholdState, month: int, th: Thresholds) -> Signal | None:
    w = th.drop_window_months
    recent = _window(state, month - w + 1, month)
    year_ago = _window(state, month - w - 11, month - 12)
    if len(recent) < w:
        return None
    if len(year_ago) == w and sum(year_ago) > 0:
        base, base_label = sum(year_ago), "去年同期"
    else:
        prior = _window(state, month - w - 11, month - w)
        if len(prior) < th.min_history_months:
            return None
        base, base_label = int(Decimal(sum(prior)) / len(prior) * w), "此前月均"
    if base <= 0 or Decimal(sum(recent)) >= th.drop_ratio * base:
        return None
    # Which part of income fell decides the risk type.
    wages_now = sum(_window(state, month - w + 1, month, part=0))
    business_now = sum(_window(state, month - w + 1, month, part=1))
    wages_then = sum(_window(state, month - w - 11, month - 12, part=0)) or sum(
        _window(state, month - w - 11, month - w, part=0))
    business_then = sum(_window(state, month - w - 11, month - 12, part=1)) or sum(
        _window(state, month - w - 11, month - w, part=1))
    risk: RiskType = (
        "因务工就业不稳" if (wages_then - wages_now) >= (business_then - business_now)
        else "因产业项目失败"
    )
    return Signal(
        "income-drop", risk,
        f"近{w}个月收入 {_yuan(sum(recent))} 元，{base_label} {_yuan(base)} 元，"
        f"降至 {Decimal(sum(recent)) / base:.0%}",
    )


def _medical_signal(state: HouseholdState, month: int, th: Thresholds) -> Signal | None:
    reversed_ids = {s.reverses for s in state.settlements.values() if s.reverses}
    stays = [s for sid, s in state.settlements.items()
             if s.inpatient and month - 2 <= s.month <= month and sid not in reversed_ids]
    biggest = max((s.out_of_pocket for s in stays), default=0)
    oop = rigid_spending(state, month - 11, month)
    income = sum(_window(state, month - 11, month))
    if biggest > th.spike_single_stay_yuan * 100:
        return Signal("medical-spike", "因病",
                      f"单次住院个人自付 {_yuan(biggest)} 元，超过 {th.spike_single_stay_yuan} 元")
    if income > 0 and Decimal(oop) > th.spike_income_share * income:
        return Signal("medical-spike", "因病",
                      f"近12个月个人自付 {_yuan(oop)} 元，占家庭收入 {Decimal(oop) / income:.0%}")
    return None


def _job_loss_signal(state: HouseholdState, month: int, th: Thresholds) -> Signal | None:
    month_end = _month_end(month)
    recent_start = _month_start(month - 2)
    for person, events in state.jobs.items():
        separations = [d for d, c in events if c in (ENDED, UNEMPLOYED) and d <= month_end]
        if not separations:
            continue
        sep = max(separations)
        if sep < recent_start:
            continue
        rehired = any(c == REGISTERED and sep <= d <= month_end for d, c in events)
        wage_after = state.last_wage.get(person, 0) > sep
        if rehired or wage_after:
            continue  # a job change
        registered_unemployed = any(c == UNEMPLOYED and d >= sep for d, c in events)
        if registered_unemployed or month_end - sep >= th.job_change_days:
            return Signal("job-loss", "因务工就业不稳",
                          f"家庭成员于 {dt.date.fromordinal(sep)} 解除劳动合同或失业登记，"
                          f"{th.job_change_days} 天内未再就业")
    return None


def _lacks_labour(state: HouseholdState) -> bool:
    if not state.members:
        return False
    able = sum(1 for labour in state.members.values() if labour in ("普通劳动力", "技能劳动力"))
    return able == 0


def evaluate(state: HouseholdState, month: int, policy: Policy) -> Alert | None:
    found = policy.line_for(year_of(month))
    if found is None:
        return None
    line_year, line = found
    th = policy.config.for_(state.region_code, year_of(month))
    size = state.size or len(state.members) or 1
    projected, baseline, n = project_income(state, month, th)
    if n < th.min_history_months:
        return None
    rigid = rigid_spending(state, month - 11, month)
    per_capita = (Decimal(projected - rigid) / 100 / size).quantize(CENT, ROUND_HALF_UP)
    signals = [s for s in (_medical_signal(state, month, th), _job_loss_signal(state, month, th),
                           _drop_signal(state, month, th)) if s is not None]
    margin = th.shock_margin if signals else th.alert_margin
    if per_capita >= line * margin:
        return None
    if signals:
        risk_type = signals[0].risk_type
    elif _lacks_labour(state):
        risk_type = "缺劳动力"
    else:
        risk_type = "其他"
    reasons = [Reason(s.rule, s.risk_type, s.detail) for s in signals]
    reasons.append(Reason(
        "projected-below-line", risk_type,
        f"预计未来12个月人均纯收入（扣除刚性支出后）{per_capita} 元，"
        f"{'低于' if per_capita < line else '接近'} {line_year} 年监测线 {line} 元",
    ))
    severity: Severity = "高" if per_capita < line * Decimal("0.8") else (
        "中" if per_capita < line else "低")
    evidence = Evidence(
        monitoring_line=line,
        line_year=line_year,
        household_size=size,
        projected_income_12m=_yuan(projected),
        rigid_spending_12m=_yuan(rigid),
        projected_per_capita=per_capita,
        baseline_income_12m=_yuan(baseline),
        months_of_history=n,
        sources=_sources(state, month),
    )
    version = policy.rule_version
    digest = hashlib.sha256(f"{state.household_id}|{month}|{version}".encode()).hexdigest()
    return Alert(
        id="a" + digest[:31],
        household_id=state.household_id,
        region_code=state.region_code,
        household_type=state.household_type,  # type: ignore[arg-type]
        month=month_label(month),
        rule_version=version,
        risk_type=risk_type,
        severity=severity,
        reasons=reasons,
        evidence=evidence,
    )


def _sources(state: HouseholdState, month: int) -> list[Origin]:
    """The rows behind a judgement: the last three income reports, the biggest
    out-of-pocket settlements of the year, and the latest separations."""
    out = [Origin("rural", state.income_files[m], state.income[m][4])
           for m in range(month - 2, month + 1) if m in state.income]
    big = sorted((s for s in state.settlements.values() if month - 11 <= s.month <= month
                  and s.out_of_pocket > 0), key=lambda s: -s.out_of_pocket)[:5]
    out += [Origin("medical", s.file, s.line) for s in big]
    out += [Origin("employment", str(src[0]), int(src[1])) for src in state.job_sources.values()]
    return out


def _yuan(amount_fen: int) -> Decimal:
    return (Decimal(amount_fen) / 100).quantize(CENT)


def _month_start(month: int) -> int:
    return dt.date(month // 12, month % 12 + 1, 1).toordinal()


def _month_end(month: int) -> int:
    return _month_start(month + 1) - 1

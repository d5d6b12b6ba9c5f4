"""The detection rules: ``step(state, event, policy) -> (state, alerts)``.

Pure functions, no Faust, Kafka or SQL. Every income report closes a month for its
household, and the month is judged the way the policy judges it: every 12-month window
still open, its income minus rigid spending (out-of-pocket medical cost after all three
insurance layers) per head, against the line of its year (``streams.rules.forecast``).

Shocks (a wage loss, a failed project, a serious illness) and the local medical triggers do
not raise alerts by themselves: a well-off household that loses a job is not at risk, and
alerting on it costs an officer a wasted home visit. They shape the forecast and name the
risk type; one household in trouble gets one alert with all its reasons.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from schemas.events import (
    Alert,
    EmploymentEvent,
    Evidence,
    IncomeReport,
    MedicalSettlement,
    MonthFigures,
    Origin,
    Reason,
    RiskType,
    RosterMember,
    Severity,
)
from streams.rules.config import RuleConfig, Thresholds
from streams.rules.forecast import BUSINESS, WAGES, Forecast, forecast
from streams.rules.months import first_day, month_index, month_label, month_of, year_of
from streams.rules.state import (
    EMPLOYMENT_CODES,
    ENDED,
    REGISTERED,
    UNEMPLOYED,
    WAGE,
    HouseholdState,
    fold_employment,
    fold_income,
    fold_medical,
    fold_roster,
    rigid_spending,
)

RULES_CODE_VERSION = "2"
CENT = Decimal("0.01")
HISTORY_MONTHS = 24  # months of figures an alert carries for the watch list's charts
_LOSS_CODES = frozenset((ENDED, UNEMPLOYED))
_START_CODES = frozenset(EMPLOYMENT_CODES.values()) - _LOSS_CODES - {WAGE}


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
    """Fold one event into the household's state; judge the months it decides.

    A month is judged when its income report arrives. Data that arrives late, after later
    months were judged, is not left out of them: a month whose income report comes for the
    first time after a later one is judged then, and the months judged since are judged
    again; so are the months from a late settlement's month on (a settlement settled in a
    month already judged). Only months that still have all their data in the state are
    judged again (the last ``REJUDGE_MONTHS`` + 1). A judgement again gives the same alert
    id; the watch list keeps the latest. A report repeated for a month already judged
    changes nothing but that month's judgement (the same alert again, which the watch list
    already holds).
    """
    if isinstance(event, IncomeReport):
        month = month_index(event.month)
        first_time = month not in state.income
        state = fold_income(state, event)
        if month >= state.evaluated_month:
            state.evaluated_month = month
            return state, _judge(state, (month,), policy)
        if not first_time or month not in state.income:  # a repeat, or older than kept
            return state, []
        return state, _judge(state, _judged_since(state, month), policy)
    if isinstance(event, MedicalSettlement):
        late = (event.settlement_id not in state.settlements
                and month_of(event.settled) <= state.evaluated_month)
        state = fold_medical(state, event)
        if not late:
            return state, []
        return state, _judge(state, _judged_since(state, month_of(event.settled)), policy)
    if isinstance(event, EmploymentEvent):
        return fold_employment(state, event), []
    if isinstance(event, RosterMember):
        return fold_roster(state, event), []
    raise TypeError(f"no rule handles {type(event).__name__}")


# How far back a month can be judged again: its judgement reads 24 months of income and
# the settlements of the months before it, and the state keeps 26 and 14 of them, counted
# from the newest. Older months would be judged on less than they were, so data that comes
# later than this is kept but judges nothing again (a replay of old files, for example).
REJUDGE_MONTHS = 2


def _judged_since(state: HouseholdState, month: int) -> list[int]:
    """The months from ``month`` on that have been judged (every kept income month up to
    the latest judged) and can be judged again on everything they were judged on, oldest
    first."""
    newest = max(state.latest_month(),
                 max((x.month for x in state.settlements.values()), default=-1))
    first = max(month, newest - REJUDGE_MONTHS)
    return sorted(m for m in state.income if first <= m <= state.evaluated_month)


def _judge(state: HouseholdState, months: Iterable[int], policy: Policy) -> list[Alert]:
    out = []
    for month in months:
        alert = evaluate(state, month, policy)
        if alert is not None:
            out.append(alert)
    return out


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
    recent_start = first_day(month - 2)
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


def _lacks_labour(state: HouseholdState, month: int) -> bool:
    """Nobody in the household earns wages: in the national system's terms the household
    is poor for lack of labour (缺劳动力), whatever the roster says about ability."""
    return not any(parts[0] > 0 for m, parts in state.income.items() if month - 23 <= m <= month)


_SHOCK_TYPE: dict[int, RiskType] = {WAGES: "因务工就业不稳", BUSINESS: "因产业项目失败"}
_COMPONENT_NAME = {WAGES: "工资性收入", BUSINESS: "经营净收入"}


def _shock_reasons(fc: Forecast) -> list[tuple[float, Reason]]:
    """Each shock in progress with the income it is expected to cost over the window."""
    out: list[tuple[float, Reason]] = []
    end = fc.window_start + 12
    for s in fc.shocks:
        rule = "job-loss" if s.component == WAGES else "business-failure"
        months = max(0, min(end, s.lasts_until) - max(fc.month + 1, fc.window_start))
        cost = (1 - s.depth) * s.normal_monthly * (min(fc.month, end - 1) - s.start + 1 + months)
        out.append((cost, Reason(
            rule, _SHOCK_TYPE[s.component],
            f"{_COMPONENT_NAME[s.component]}自 {month_label(s.start)} 起降至正常水平的 "
            f"{s.depth:.0%}（正常每月约 {_yuan(s.normal_monthly)} 元），"
            f"预计持续至 {month_label(s.lasts_until - 1)}",
        )))
    if fc.episode is not None:
        e = fc.episode
        extra = f"，预计后续还将自付约 {_yuan(e.expected_more)} 元" if e.expected_more else ""
        out.append((float(e.spent + e.expected_more), Reason(
            "illness", "因病",
            f"自 {month_label(e.start)} 起 {e.months} 个月医疗费用个人自付 {_yuan(e.spent)} 元"
            f"（三重保障后）{extra}",
        )))
    return out


def evaluate(state: HouseholdState, month: int, policy: Policy) -> Alert | None:
    th = policy.config.for_(state.region_code, year_of(month))
    last_two_years = range(month - 23, month + 1)
    if sum(map(last_two_years.__contains__, state.income)) < th.min_history_months:
        return None
    size = state.size or len(state.members) or 1
    # The line of each window's first month (month-11 .. month), for this judgement only
    # (lines can change).
    first = month - 11
    found = policy.line_for(year_of(month))
    known: int | None = int(found[1]) if found is not None else None
    lines: dict[int, int | None] = dict.fromkeys(range(first, month + 1), known)
    if year_of(first) != year_of(month):
        found = policy.line_for(year_of(first))
        known = int(found[1]) if found is not None else None
        lines.update(dict.fromkeys(range(first, year_of(month) * 12), known))
    fc = forecast(state, month, th, lines.get, size)
    if fc is None:
        return None
    if fc.ratio >= th.numbers.alert_margin:
        return None
    found = policy.line_for(year_of(fc.window_start))
    assert found is not None  # forecast() only judges windows with a line
    line_year, line = found
    per_capita = (Decimal(fc.income - fc.rigid) / 100 / size).quantize(CENT, ROUND_HALF_UP)

    shocks = sorted(_shock_reasons(fc), key=lambda x: -x[0])
    medical = _medical_signal(state, month, th)
    job = _job_loss_signal(state, month, th)
    poor_all_along = Decimal(repr(fc.normal_ratio)) < th.alert_margin
    if poor_all_along or not shocks:
        risk_type: RiskType = "缺劳动力" if _lacks_labour(state, month) else "其他"
    else:
        risk_type = shocks[0][1].risk_type
    reasons = [r for _, r in shocks]
    if medical is not None:
        reasons.append(Reason(medical.rule, medical.risk_type, medical.detail))
    if job is not None and not any(r.rule == "job-loss" for r in reasons):
        reasons.append(Reason(job.rule, job.risk_type, job.detail))
    window = f"{month_label(fc.window_start)} 至 {month_label(fc.window_start + 11)}"
    normal_pc = (Decimal(fc.normal_income - fc.normal_rigid) / 100 / size).quantize(CENT)
    reasons.append(Reason(
        "projected-below-line", risk_type,
        f"{window} 人均纯收入（扣除刚性支出后）预计 {per_capita} 元，"
        f"{'低于' if per_capita < line else '接近'} {line_year} 年监测线 {line} 元"
        f"（无冲击时约 {normal_pc} 元）",
    ))
    severity: Severity = "高" if per_capita < line * Decimal("0.8") else (
        "中" if per_capita < line else "低")
    evidence = Evidence(
        monitoring_line=line,
        line_year=line_year,
        household_size=size,
        projected_income_12m=_yuan(fc.income),
        rigid_spending_12m=_yuan(fc.rigid),
        projected_per_capita=per_capita,
        baseline_income_12m=_yuan(sum(_window(state, month - 11, month))),
        months_of_history=fc.months_of_history,
        sources=_sources(state, month),
        history=_history(state, month),
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


def _history(state: HouseholdState, month: int) -> list[MonthFigures]:
    """The household's figures month by month, for the watch list's charts: the last
    ``HISTORY_MONTHS`` months up to ``month``, from the first one with any figure.

    Only what the state still holds can be shown (``streams.rules.state``): income for
    the last ``INCOME_MONTHS_KEPT`` months, settlements for the last
    ``SETTLEMENT_MONTHS_KEPT`` months (older months then show no out-of-pocket cost) and
    the last six job events of each person (older ones are not counted). A reversed
    settlement counts in no month, as in ``rigid_spending``. Built only when an alert is
    raised, never on the per-event path."""
    first = month - HISTORY_MONTHS + 1
    losses: dict[int, int] = {}
    starts: dict[int, int] = {}
    for events in state.jobs.values():
        for day, code in events:
            m = month_of(dt.date.fromordinal(day))
            if code in _LOSS_CODES:
                losses[m] = losses.get(m, 0) + 1
            elif code in _START_CODES:
                starts[m] = starts.get(m, 0) + 1
    out: list[MonthFigures] = []
    for m in range(first, month + 1):
        parts = state.income.get(m)
        oop = rigid_spending(state, m, m)
        lost, started = losses.get(m, 0), starts.get(m, 0)
        if not out and parts is None and not oop and not lost and not started:
            continue  # before the first month with any figure
        out.append(MonthFigures(
            month=month_label(m),
            income=None if parts is None else _yuan(_total(parts)),
            out_of_pocket=_yuan(oop),
            job_losses=lost,
            job_starts=started,
        ))
    return out


def _yuan(amount_fen: int) -> Decimal:
    return (Decimal(amount_fen) / 100).quantize(CENT)


def _month_end(month: int) -> int:
    return first_day(month + 1) - 1

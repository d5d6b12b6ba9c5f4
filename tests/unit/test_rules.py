"""Table-driven tests of the pure detection rules (streams.rules): no Faust, no Kafka."""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import get_args

import msgspec
import pytest

from schemas.events import (
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    Origin,
    RiskType,
    RosterMember,
)
from streams.rules.config import RuleConfig, Thresholds
from streams.rules.engine import (
    Policy,
    _job_loss_signal,
    _medical_signal,
    evaluate,
    step,
)
from streams.rules.forecast import (
    BUSINESS,
    WAGES,
    Forecast,
    _fast_forecast,
    _general_forecast,
    forecast,
)
from streams.rules.months import calendar_month, month_index, month_label, month_of, year_of
from streams.rules.state import (
    HouseholdState,
    dump_state,
    fold_employment,
    fold_income,
    fold_medical,
    fold_roster,
    load_state,
    rigid_spending,
)

HH = "9901210010010001"
REGION = "990121001001"
LINES = {2024: Decimal("7000"), 2025: Decimal("7200"), 2026: Decimal("7400")}
CONFIG = RuleConfig.load()
TH = Thresholds()
# No ordinary medical cost assumed, so the arithmetic in the cases below stays plain.
PLAIN_TH = replace(TH, outpatient_oop_prior_yuan=Decimal(0), inpatient_oop_prior_yuan=Decimal(0))
PLAIN = RuleConfig("plain", PLAIN_TH, [])


def policy(config: RuleConfig = CONFIG) -> Policy:
    return Policy(lines=dict(LINES), config=config)


# --- event builders ---------------------------------------------------------------------

def income(month: str, wages: str | int = 0, business: str | int = 0, *, size: int = 1,
           transfers: str | int = 0, line: int = 2, hh: str = HH,
           region: str = REGION) -> IncomeReport:
    w, b, t = Decimal(wages), Decimal(business), Decimal(transfers)
    return IncomeReport(
        id=f"inc-{hh}-{month}", origin=Origin("rural", f"income/{month}.csv", line),
        household_id=hh, region_code=region, month=month, household_size=size, wages=w,
        business=b, property=Decimal(0), transfers=t, total=w + b + t)


def medical(sid: str, settled: str, oop: str | int, *, inpatient: bool = True,
            reverses: str | None = None, line: int = 2,
            covered: str | int = 0) -> MedicalSettlement:
    day = dt.date.fromisoformat(settled)
    amount = Decimal(oop)
    paid = Decimal(covered) or amount
    return MedicalSettlement(
        id=f"med-{sid}-{line}", origin=Origin("medical", f"medical/{settled[:7]}.csv", line),
        settlement_id=sid, person="p1", insured_county=REGION[:6],
        visit_type="住院" if inpatient else "普通门诊", admitted=day - dt.timedelta(days=5),
        settled=day, total=amount + paid, basic_insurance=paid, critical_illness=Decimal(0),
        medical_assistance=Decimal(0), out_of_pocket=amount, reversal=reverses is not None,
        reverses=reverses, household_id=HH)


def job(kind: str, day: str, person: str = "p1", amount: str | None = None,
        line: int = 2) -> EmploymentEvent:
    d = dt.date.fromisoformat(day)
    return EmploymentEvent(
        id=f"emp-{person}-{kind}-{day}", origin=Origin("employment", f"employment/{day[:7]}.csv",
                                                       line),
        business_id=f"B-{person}-{day}-{kind}", person=person, region_code=REGION,
        business_type=kind, date=d, employer="某厂",  # type: ignore[arg-type]
        amount=Decimal(amount) if amount else None, work_place="省外", household_id=HH)


def member(person: str, labour: str = "普通劳动力", size: int = 1,
           htype: str = "脱贫户") -> RosterMember:
    return RosterMember(
        id=f"m-{person}", origin=Origin("rural", "roster.csv", 2), household_id=HH,
        region_code=REGION, household_type=htype, household_size=size,  # type: ignore[arg-type]
        member_no=1, person=person, relation="户主", labour=labour)  # type: ignore[arg-type]


def months(first: str, last: str) -> list[str]:
    return [month_label(m) for m in range(month_index(first), month_index(last) + 1)]


def flat_history(first: str, last: str, wages: int = 0, business: int = 0,
                 size: int = 1) -> list[IncomeReport]:
    return [income(m, wages, business, size=size) for m in months(first, last)]


def run(events: list[object], pol: Policy | None = None) -> tuple[HouseholdState, list]:
    """Feed events through ``step`` with the state round-tripped through bytes, as the
    changelog does. Returns the final state and every alert raised."""
    pol = pol or policy()
    raw, alerts = b"", []
    for ev in events:
        state, out = step(load_state(raw), ev, pol)  # type: ignore[arg-type]
        raw = dump_state(state)
        alerts += out
    return load_state(raw), alerts


M = month_index


# --- months -----------------------------------------------------------------------------

@pytest.mark.parametrize(("label", "index", "year", "cal"), [
    ("2025-01", 2025 * 12, 2025, 1),
    ("2025-12", 2025 * 12 + 11, 2025, 12),
    ("2026-01", 2026 * 12, 2026, 1),
    ("2024-02", 2024 * 12 + 1, 2024, 2),
], ids=["jan", "dec", "next-jan", "leap-feb"])
def test_month_index_round_trip(label: str, index: int, year: int, cal: int) -> None:
    assert month_index(label) == index
    assert month_label(index) == label
    assert year_of(index) == year
    assert calendar_month(index) == cal
    assert month_of(dt.date(year, cal, 28)) == index


def test_month_window_crosses_year_boundary() -> None:
    # Twelve months ending 2026-02 start at 2025-03: a plain integer range.
    last = M("2026-02")
    assert [month_label(m) for m in (last - 11, last)] == ["2025-03", "2026-02"]
    assert len(range(last - 11, last + 1)) == 12


@pytest.mark.parametrize(("first", "last", "expected_fen"), [
    ("2025-01", "2025-12", 100_00 + 200_00 + 400_00),
    ("2025-02", "2025-12", 200_00 + 400_00),
    ("2025-01", "2025-01", 100_00),  # window bounds are inclusive
    ("2025-12", "2025-12", 400_00),
    ("2026-01", "2026-12", 800_00),
    ("2024-01", "2024-12", 0),
], ids=["whole-year", "drop-first", "first-only", "last-only", "next-year", "empty"])
def test_rigid_spending_month_window(first: str, last: str, expected_fen: int) -> None:
    state = HouseholdState()
    for sid, day, oop in [("S1", "2025-01-31", 100), ("S2", "2025-06-01", 200),
                          ("S3", "2025-12-31", 400), ("S4", "2026-01-01", 800)]:
        fold_medical(state, medical(sid, day, oop))
    assert rigid_spending(state, M(first), M(last)) == expected_fen


# --- folding is idempotent ---------------------------------------------------------------

def _seeded() -> HouseholdState:
    state = HouseholdState()
    fold_roster(state, member("p1", size=2))
    for ev in flat_history("2025-01", "2025-04", wages=1000):
        fold_income(state, ev)
    fold_medical(state, medical("S0", "2025-02-10", 300))
    fold_employment(state, job("就业登记", "2025-01-05"))
    return state


IDEMPOTENT_EVENTS = [
    pytest.param(member("p2", "弱劳动力", size=2), id="roster"),
    pytest.param(income("2025-05", 900, 100, size=2), id="income-new-month"),
    pytest.param(income("2025-03", 1000, size=2, line=9), id="income-late-month"),
    pytest.param(medical("S1", "2025-05-03", "1234.56"), id="medical"),
    pytest.param(medical("S0", "2025-02-10", 300), id="medical-already-seen"),
    pytest.param(medical("R1", "2025-05-03", "-300", reverses="S0"), id="medical-reversal"),
    pytest.param(job("工资发放", "2025-05-15", amount="3000"), id="wage"),
    pytest.param(job("解除劳动合同", "2025-05-20"), id="contract-ended"),
    pytest.param(job("失业登记", "2025-05-21"), id="unemployed"),
    pytest.param(job("就业登记", "2025-01-05"), id="registered-already-seen"),
]


@pytest.mark.parametrize("event", IDEMPOTENT_EVENTS)
def test_same_event_twice_gives_same_state_bytes(event: object) -> None:
    pol = policy()
    once, alerts_once = step(_seeded(), event, pol)  # type: ignore[arg-type]
    once_bytes = dump_state(once)
    twice, alerts_twice = step(load_state(once_bytes), event, pol)  # type: ignore[arg-type]
    assert dump_state(twice) == once_bytes
    assert [a.id for a in alerts_twice] == [a.id for a in alerts_once]


def test_state_survives_serialisation() -> None:
    state = _seeded()
    assert load_state(dump_state(state)) == state
    assert load_state(None) == HouseholdState()


def test_income_keeps_bounded_history() -> None:
    state, _ = run(flat_history("2023-01", "2025-12", wages=5000))
    assert len(state.income) == 26
    assert min(state.income) == M("2025-12") - 25
    assert set(state.income_files) == set(state.income)


# --- settlements: dedup and reversals -----------------------------------------------------

S = medical
SETTLEMENT_CASES = [
    pytest.param([S("A", "2025-03-01", 500)], 500, id="single"),
    pytest.param([S("A", "2025-03-01", 500), S("A", "2025-03-01", 500)], 500,
                 id="same-row-twice"),
    pytest.param([S("A", "2025-03-01", 500, line=3), S("A", "2025-03-01", 500, line=40)], 500,
                 id="repeated-in-another-file"),
    pytest.param([S("A", "2025-03-01", 500), S("B", "2025-03-02", 700)], 1200, id="two"),
    pytest.param([S("A", "2025-03-01", 500), S("R", "2025-04-02", -500, reverses="A")], 0,
                 id="reversal-nets-out"),
    pytest.param([S("R", "2025-04-02", -500, reverses="A"), S("A", "2025-03-01", 500)], 0,
                 id="reversal-before-original"),
    pytest.param([S("A", "2025-03-01", 500), S("R", "2025-04-02", -500, reverses="A"),
                  S("R", "2025-04-02", -500, reverses="A")], 0, id="reversal-twice"),
    pytest.param([S("A", "2025-03-01", 500), S("B", "2025-03-05", 800),
                  S("R", "2025-04-02", -500, reverses="A")], 800, id="reverse-one-of-two"),
    pytest.param([S("A", "2025-03-01", 500), S("R", "2025-04-02", -999, reverses="Z")], 500,
                 id="reversal-of-unknown-settlement"),
    pytest.param([S("A", "2025-03-01", "123.45"), S("B", "2025-03-01", "0.55")], 124,
                 id="cents-exact"),
]


@pytest.mark.parametrize(("settlements", "expected_yuan"), SETTLEMENT_CASES)
def test_rigid_spending_dedup_and_reversals(settlements: list[MedicalSettlement],
                                            expected_yuan: int) -> None:
    state = HouseholdState()
    for s in settlements:
        fold_medical(state, s)
    assert rigid_spending(state, M("2025-01"), M("2025-12")) == expected_yuan * 100


def test_reversal_in_next_window_still_cancels() -> None:
    # The original is settled in December, the reversal in January: a window covering only
    # December must not count the cancelled settlement.
    state = HouseholdState()
    fold_medical(state, S("A", "2025-12-20", 9000))
    fold_medical(state, S("R", "2026-01-05", -9000, reverses="A"))
    assert rigid_spending(state, M("2025-01"), M("2025-12")) == 0


# --- job change vs job loss ---------------------------------------------------------------

JOB_CASES = [
    pytest.param([job("解除劳动合同", "2025-03-10"), job("就业登记", "2025-04-05")], "2025-05",
                 False, id="new-registration-within-45-days"),
    pytest.param([job("解除劳动合同", "2025-03-10"), job("就业登记", "2025-04-20")], "2025-04",
                 False, id="registration-on-day-41"),
    pytest.param([job("解除劳动合同", "2025-03-10")], "2025-03", False,
                 id="ended-21-days-ago-still-waiting"),
    pytest.param([job("解除劳动合同", "2025-03-10")], "2025-04", True,
                 id="ended-nothing-after-51-days"),
    pytest.param([job("解除劳动合同", "2025-03-10")], "2025-05", True,
                 id="ended-nothing-after-82-days"),
    pytest.param([job("解除劳动合同", "2025-03-10")], "2025-06", False,
                 id="separation-too-old-for-this-month"),
    pytest.param([job("失业登记", "2025-03-10")], "2025-03", True, id="registered-unemployed"),
    pytest.param([job("解除劳动合同", "2025-03-10"), job("失业登记", "2025-03-20")], "2025-03",
                 True, id="ended-then-unemployed"),
    pytest.param([job("解除劳动合同", "2025-03-10"), job("工资发放", "2025-04-15", amount="4000")],
                 "2025-05", False, id="wage-after-ending-is-a-new-job"),
    pytest.param([job("失业登记", "2025-03-10"), job("就业登记", "2025-04-01")], "2025-04", False,
                 id="unemployed-then-reemployed"),
    pytest.param([job("就业登记", "2025-01-10"), job("工资发放", "2025-03-15", amount="4000")],
                 "2025-03", False, id="steady-job"),
    pytest.param([job("解除劳动合同", "2025-03-10"), job("就业登记", "2025-04-05", person="p2")],
                 "2025-05", True, id="another-member-hired-does-not-cover"),
    pytest.param([job("解除劳动合同", "2025-05-10")], "2025-03", False,
                 id="future-separation-ignored"),
]


@pytest.mark.parametrize(("events", "judged", "signal"), JOB_CASES)
def test_job_change_vs_job_loss(events: list[EmploymentEvent], judged: str,
                                signal: bool) -> None:
    state = HouseholdState()
    for ev in events:
        fold_employment(state, ev)
    found = _job_loss_signal(state, M(judged), TH)
    assert (found is not None) == signal, found
    if found:
        assert found.rule == "job-loss"
        assert found.risk_type == "因务工就业不稳"


def test_same_day_new_registration_is_a_job_change() -> None:
    state = HouseholdState()
    fold_employment(state, job("就业登记", "2024-05-01"))
    fold_employment(state, job("解除劳动合同", "2025-03-10"))
    fold_employment(state, job("就业登记", "2025-03-10"))
    assert _job_loss_signal(state, M("2025-05"), TH) is None


def test_job_change_days_is_configurable() -> None:
    state = HouseholdState()
    fold_employment(state, job("解除劳动合同", "2025-03-10"))
    # 2025-03-31 is 21 days after the separation.
    assert _job_loss_signal(state, M("2025-03"), TH) is None
    assert _job_loss_signal(state, M("2025-03"), Thresholds(job_change_days=20)) is not None


# --- losses in progress, against the same months last year -------------------------------

def _migrant_year(year: int, festival_month: int, wages: int = 4000) -> list[IncomeReport]:
    """A migrant worker's wages: nothing in the Spring Festival month, a bonus in December,
    farm income peaking at harvest."""
    out = []
    for m in range(1, 13):
        w = 0 if m == festival_month else wages * 2 if m == 12 else wages
        b = 1500 if 7 <= m <= 10 else 300
        out.append(income(f"{year}-{m:02d}", w, b))
    return out


def _with(history: list[IncomeReport], month: str, wages: int, business: int) -> list:
    return [ev for ev in history if ev.month != month] + [income(month, wages, business)]


def _line_of(m: int) -> int | None:
    found = policy().line_for(year_of(m))
    return int(found[1]) if found else None


def _forecast(events: list[object], judged: str, th: Thresholds = TH) -> Forecast:
    state = HouseholdState()
    for ev in events:
        if isinstance(ev, IncomeReport):
            if M(ev.month) <= M(judged):
                fold_income(state, ev)
        elif isinstance(ev, MedicalSettlement):
            fold_medical(state, ev)
        elif isinstance(ev, EmploymentEvent):
            fold_employment(state, ev)
    fc = forecast(state, M(judged), th, _line_of, state.size or 1)
    assert fc is not None
    return fc


def _losses(fc: Forecast) -> list[str]:
    return [{WAGES: "因务工就业不稳", BUSINESS: "因产业项目失败"}[s.component]
            for s in fc.shocks]


# The policy cases (seasons, festivals, bonuses, job changes) and their benign look-alikes.
LOSS_CASES = [
    pytest.param(_migrant_year(2024, 2) + _migrant_year(2025, 2), "2025-02", [],
                 id="festival-zero-same-month-both-years"),
    pytest.param(_migrant_year(2024, 2) + _migrant_year(2025, 2), "2025-03", [],
                 id="month-after-festival"),
    pytest.param([income(m, 4000, 300) for m in months("2024-11", "2025-01")]
                 + [income("2025-02", 0, 300)], "2025-02", [],
                 id="festival-zero-with-no-year-before"),
    pytest.param(_migrant_year(2024, 2) + _migrant_year(2025, 2), "2025-12", [],
                 id="december-bonus"),
    pytest.param([income("2024-11", 4000), income("2024-12", 8000), income("2025-01", 4000)],
                 "2025-01", [], id="january-after-a-first-december-bonus"),
    pytest.param(_migrant_year(2024, 2) + _migrant_year(2025, 2), "2025-08", [],
                 id="harvest-peak-and-back"),
    pytest.param(_migrant_year(2024, 2) + [income(m, 0, 300) for m in
                                           months("2025-01", "2025-05")],
                 "2025-05", ["因务工就业不稳"], id="wages-stop"),
    pytest.param(_migrant_year(2024, 2) + _with(_migrant_year(2025, 2), "2025-05", 0, 300),
                 "2025-05", [], id="one-month-without-wages-is-noise"),
    pytest.param(_migrant_year(2024, 2) + _migrant_year(2025, 2)[:4]
                 + [income("2025-05", 0, 300), income("2025-06", 0, 300)],
                 "2025-06", ["因务工就业不稳"], id="second-month-without-wages"),
    pytest.param(_migrant_year(2024, 2) + [income(m, 2000, 300) for m in
                                           months("2025-01", "2025-04")],
                 "2025-04", ["因务工就业不稳"], id="one-of-two-earners-loses-job"),
    pytest.param(_migrant_year(2024, 2) + [income(m, 3200, 300) for m in
                                           months("2025-03", "2025-06")],
                 "2025-06", [], id="wage-cut-above-ratio"),
    pytest.param([income(m, 500, 5000) for m in months("2024-01", "2024-12")]
                 + [income(m, 500, 500) for m in months("2025-01", "2025-04")],
                 "2025-04", ["因产业项目失败"], id="business-collapses"),
    pytest.param([income(m, 4000, 250) for m in months("2024-01", "2024-12")]
                 + [income(m, 4000, 0) for m in months("2025-01", "2025-03")],
                 "2025-03", [], id="small-business-not-judged"),
    pytest.param([income(m, 3000, 0) for m in months("2024-07", "2025-04")]
                 + [income(m, 500, 0) for m in months("2025-05", "2025-07")],
                 "2025-07", ["因务工就业不稳"], id="short-history-uses-usual-level"),
]


@pytest.mark.parametrize(("history", "judged", "losses"), LOSS_CASES)
def test_losses_in_progress(history: list[IncomeReport], judged: str,
                            losses: list[str]) -> None:
    assert _losses(_forecast(history, judged)) == losses


def test_wage_loss_ratio_is_strict() -> None:
    # Exactly 75% of last year's same months is not a loss; just below is.
    base = [income(m, 1000) for m in months("2024-01", "2024-12")]
    at = base + [income(m, 750) for m in months("2025-01", "2025-03")]
    below = base + [income(m, "749.99") for m in months("2025-01", "2025-03")]
    assert _losses(_forecast(at, "2025-03")) == []
    assert _losses(_forecast(below, "2025-03")) == ["因务工就业不稳"]


def test_a_formal_job_loss_counts_from_the_first_month() -> None:
    history = _migrant_year(2024, 2) + _migrant_year(2025, 2)[:4] + [income("2025-05", 0, 300)]
    ended = [job("就业登记", "2024-01-02"), job("解除劳动合同", "2025-05-08")]
    fc = _forecast(history + ended, "2025-05")
    assert _losses(fc) == ["因务工就业不稳"]
    assert fc.shocks[0].start == M("2025-05")
    assert fc.shocks[0].lasts_until == M("2025-05") + TH.job_loss_months


def test_a_job_change_is_not_a_loss() -> None:
    # Contract ended, a new job registered 20 days later: two thin months are the change.
    history = _migrant_year(2024, 2) + _migrant_year(2025, 2)[:4] + [
        income("2025-05", 0, 300), income("2025-06", 0, 300)]
    changed = [job("解除劳动合同", "2025-05-08"), job("就业登记", "2025-05-28")]
    assert _losses(_forecast(history + changed, "2025-06")) == []
    assert _losses(_forecast(history, "2025-06")) == ["因务工就业不稳"]


def test_a_loss_recovers_after_its_expected_length() -> None:
    history = [income(m, 3000) for m in months("2024-01", "2024-12")] + [
        income(m, 0) for m in months("2025-01", "2025-02")]
    fc = _forecast(history, "2025-02")
    loss = fc.shocks[0]
    assert (loss.start, loss.depth) == (M("2025-01"), 0.0)
    # The window 2025-01..2025-12: no wages until the loss's expected end, then normal.
    worst = 12 - TH.job_loss_months
    assert fc.window_start == M("2025-01")
    assert fc.income == worst * 3000_00
    assert fc.normal_income == 12 * 3000_00


def test_wages_back_means_no_loss() -> None:
    history = [income(m, 3000) for m in months("2024-01", "2024-12")] + [
        income("2025-01", 0), income("2025-02", 0), income("2025-03", 3000)]
    assert _losses(_forecast(history, "2025-03")) == []


def test_cold_start_uses_the_months_seen() -> None:
    fc = _forecast([income("2025-05", 500), income("2025-06", 700)], "2025-06", PLAIN_TH)
    # Worst window starts 2025-05: May and June as reported, then the usual level (the
    # median, 600) for the ten months ahead.
    assert fc.window_start == M("2025-05")
    assert fc.income == 500_00 + 700_00 + 10 * 600_00
    assert fc.months_of_history == 2


def test_cold_start_business_income_follows_the_season() -> None:
    # One August of farm income at the harvest factor: a year of it is the season's sum.
    fc = _forecast([income("2025-08", 0, "1730")], "2025-08", PLAIN_TH)
    season = sum(TH.business_season)
    assert abs(fc.income - round(1000_00 * float(season))) <= 12


# --- medical spike ------------------------------------------------------------------------

RICH = [income(m, 8000) for m in months("2024-04", "2025-03")]  # 96000 a year
MEDICAL_CASES = [
    pytest.param([S("A", "2025-03-05", "10000.01")], RICH, True, id="stay-just-over-10000"),
    pytest.param([S("A", "2025-03-05", "10000.00")], RICH, False, id="stay-exactly-10000"),
    pytest.param([S("A", "2025-03-05", 15000, inpatient=False)], RICH, False,
                 id="outpatient-not-a-stay"),
    pytest.param([S("A", "2025-03-05", 6000), S("B", "2025-03-20", 6000)], RICH, False,
                 id="two-smaller-stays"),
    pytest.param([S("A", "2025-01-05", 12000)], RICH, True, id="stay-two-months-ago"),
    pytest.param([S("A", "2024-12-05", 12000)], RICH, False, id="stay-too-old-for-spike"),
    pytest.param([S("A", "2025-02-05", 12000), S("R", "2025-03-01", -12000, reverses="A")], RICH,
                 False, id="reversed-stay"),
    pytest.param([S("A", "2025-02-05", 12000), S("A", "2025-02-05", 12000)], RICH, True,
                 id="duplicated-stay"),
    pytest.param([S("A", "2025-01-05", 2000, inpatient=False)],
                 [income(m, 300) for m in months("2024-04", "2025-03")], True,
                 id="over-half-of-income"),
    pytest.param([S("A", "2025-01-05", 1800, inpatient=False)],
                 [income(m, 300) for m in months("2024-04", "2025-03")], False,
                 id="exactly-half-of-income"),
]


@pytest.mark.parametrize(("settlements", "history", "signal"), MEDICAL_CASES)
def test_medical_spike(settlements: list[MedicalSettlement], history: list[IncomeReport],
                       signal: bool) -> None:
    state = HouseholdState()
    for ev in history:
        fold_income(state, ev)
    for s in settlements:
        fold_medical(state, s)
    found = _medical_signal(state, M("2025-03"), TH)
    assert (found is not None) == signal, found
    if found:
        assert found.risk_type == "因病"


# --- alert only when the forecast window is below the line --------------------------------

def _judge(events: list[object], month: str, pol: Policy | None = None):
    state = HouseholdState()
    pol = pol or policy(PLAIN)
    for ev in events:
        state, _ = step(state, ev, pol)  # type: ignore[arg-type]
    return evaluate(state, M(month), pol)


WELL_OFF = flat_history("2024-01", "2025-06", 9000, size=3)

# 2025 line 7200; one person; flat income X a month forecasts to 12X a year.
ALERT_CASES = [
    pytest.param(flat_history("2024-01", "2025-06", 590), None, "其他", "中",
                 id="below-line-no-shock"),
    pytest.param(flat_history("2024-01", "2025-06", 400), None, "其他", "高",
                 id="far-below-line"),
    pytest.param(flat_history("2024-01", "2025-06", business=400), None, "缺劳动力", "高",
                 id="below-line-nobody-earns-wages"),
    pytest.param(flat_history("2024-01", "2025-06", 610), None, None, None,
                 id="just-above-line"),
    pytest.param(flat_history("2024-01", "2025-06", 610), [job("失业登记", "2025-06-03")],
                 None, None, id="record-without-income-drop"),
    pytest.param(flat_history("2024-01", "2025-04", 1000) + flat_history("2025-05", "2025-06"),
                 None, "因务工就业不稳", "高", id="modest-earner-loses-wages"),
    pytest.param(WELL_OFF[:-2] + flat_history("2025-05", "2025-06", size=3),
                 [job("就业登记", "2024-03-01"), job("解除劳动合同", "2025-05-01"),
                  job("失业登记", "2025-05-03")], None, None, id="well-off-loses-job"),
    pytest.param(WELL_OFF, [S("A", "2025-06-10", 20000)], None, None,
                 id="well-off-big-hospital-bill"),
    pytest.param(flat_history("2024-01", "2025-06", 1500), [S("A", "2025-06-10", 12000)],
                 "因病", "高", id="hospital-bill-pushes-below-line"),
    pytest.param(flat_history("2024-01", "2025-06", 1500),
                 [S("A", "2025-06-10", 2000, covered=150000)], None, None,
                 id="well-covered-big-bill"),
    pytest.param(flat_history("2024-01", "2025-06", 1500),
                 [S("A", "2025-05-10", 12000), S("R", "2025-06-01", -12000, reverses="A")],
                 None, None, id="reversed-stay"),
    pytest.param(flat_history("2024-01", "2025-06", 1200),
                 [S("A", "2025-06-10", 6000), S("A", "2025-06-10", 6000)], None, None,
                 id="duplicated-settlement-counts-once"),
    pytest.param(flat_history("2024-01", "2025-06", 1200),
                 [S("A", "2025-06-10", 6000), S("B", "2025-06-20", 6000)], "因病", "高",
                 id="two-settlements-count-twice"),
]


@pytest.mark.parametrize(("history", "extra", "risk", "severity"), ALERT_CASES)
def test_alert_only_below_the_line(history: list, extra: list | None, risk: str | None,
                                   severity: str | None) -> None:
    alert = _judge([member("p1", size=history[0].household_size), *(extra or []), *history],
                   "2025-06")
    if risk is None:
        assert alert is None, alert
        return
    assert alert is not None
    assert (alert.risk_type, alert.severity) == (risk, severity)
    assert alert.evidence.projected_per_capita < alert.evidence.monitoring_line
    assert alert.reasons[-1].rule == "projected-below-line"


def test_evidence_numbers_add_up() -> None:
    alert = _judge([member("p1", size=2), S("A", "2025-06-10", "12000.50"),
                    *flat_history("2025-01", "2025-06", 1500, size=2)], "2025-06")
    assert alert is not None
    ev = alert.evidence
    assert ev.monitoring_line == Decimal("7200") and ev.line_year == 2025
    assert ev.household_size == 2 and ev.months_of_history == 6
    assert ev.projected_income_12m == Decimal("18000.00")
    assert ev.baseline_income_12m == Decimal("9000.00")  # the six months reported
    # The stay, plus the chance the illness runs on: a second month (0.04 at 7500, 0.35 at
    # 12500, linear between) and then a third (half of those).
    p2 = Decimal("0.04") + Decimal("0.31") * (Decimal("12000.50") - 7500) / 5000
    more = (Decimal("12000.50") * p2 * Decimal("1.5")).quantize(Decimal("0.01"))
    assert abs(ev.rigid_spending_12m - (Decimal("12000.50") + more)) <= Decimal("0.01")
    assert ev.projected_per_capita == ((ev.projected_income_12m - ev.rigid_spending_12m)
                                       / 2).quantize(Decimal("0.01"))
    assert Origin("medical", "medical/2025-06.csv", 2) in ev.sources
    assert Origin("rural", "income/2025-06.csv", 2) in ev.sources
    assert [r.rule for r in alert.reasons] == ["illness", "medical-spike",
                                               "projected-below-line"]


def test_an_illness_that_goes_on_is_expected_to_cost_more() -> None:
    history = flat_history("2024-01", "2025-07", 2000, size=2)
    one = [S("A", "2025-07-10", 9000)]
    two = [S("Z", "2025-06-10", 9000), *one]
    first = _forecast([*history, *one], "2025-07", PLAIN_TH)
    second = _forecast([*history, *two], "2025-07", PLAIN_TH)
    assert first.episode is not None and second.episode is not None
    p2 = 0.04 + 0.31 * (9000 - 7500) / 5000
    third = float(PLAIN_TH.episode_third_month_chance)
    assert first.episode.expected_more == int(p2 * 9000_00 * (1 + third))
    assert second.episode.expected_more == int(9000_00 * third)
    ended = _forecast([*history, S("Z", "2025-06-10", 9000)], "2025-07", PLAIN_TH)
    assert ended.episode is not None and ended.episode.expected_more == 0


@pytest.mark.parametrize(("bill", "chance"), [
    (8000, 0.04 + 0.31 * 500 / 5000), (15000, 0.35 + 0.31 * 2500 / 5000), (24000, 0.86 + 0.14 *
                                                                           1500 / 5000),
    (40000, 1.0)])
def test_a_bigger_first_bill_is_likelier_to_go_on(bill: int, chance: float) -> None:
    fc = _forecast([*flat_history("2024-01", "2025-07", 2000), S("A", "2025-07-10", bill)],
                   "2025-07", PLAIN_TH)
    assert fc.episode is not None
    assert fc.episode.expected_more == int(chance * bill * 100 * 1.5)


def test_a_late_settlement_counts_in_the_month_it_was_settled() -> None:
    # A stay settled in May reaches the June file: the months judged after it include it.
    history = flat_history("2024-01", "2025-06", 1500)
    late = medical("L", "2025-05-20", 9000)
    late = msgspec.structs.replace(late, origin=Origin("medical", "medical/2025-06.csv", 7))
    state, _ = run([*history[:-1], late, history[-1]], policy(PLAIN))
    assert rigid_spending(state, M("2025-05"), M("2025-05")) == 9000_00
    fc = _forecast([*history, late], "2025-06", PLAIN_TH)
    assert fc.rigid >= 9000_00


def test_an_ordinary_stay_is_not_an_episode() -> None:
    fc = _forecast([*flat_history("2024-01", "2025-07", 2000), S("A", "2025-07-10", 6000)],
                   "2025-07", PLAIN_TH)
    assert fc.episode is None
    assert fc.rigid == 6000_00  # counted where it was settled, nothing more expected


def test_unpublished_year_uses_latest_line_and_no_line_means_no_alert() -> None:
    history = flat_history("2026-06", "2027-03", 300)
    alert = _judge(history, "2027-03")
    assert alert is not None and alert.evidence.line_year == 2026
    assert _judge(flat_history("2022-01", "2022-06", 100), "2022-06") is None


# --- cold start ---------------------------------------------------------------------------

COLD_CASES = [
    pytest.param([income("2025-06", 300)], id="one-month"),
    pytest.param([income("2025-05", 300), income("2025-06", 0)], id="two-months"),
    pytest.param([income("2025-06", 0)], id="one-zero-month"),
    pytest.param([S("A", "2025-06-01", 12000), job("失业登记", "2025-06-02"),
                  income("2025-06", 300)], id="person-events-first"),
    pytest.param([member("p1", "无劳动力"), income("2025-06", 300)], id="roster-then-one-month"),
    pytest.param([income("2025-06", 300), income("2025-06", 300)], id="same-month-twice"),
    pytest.param([income("2025-07", 300), income("2025-06", 300)], id="late-earlier-month"),
]


@pytest.mark.parametrize("events", COLD_CASES)
def test_cold_start_does_not_crash(events: list[object]) -> None:
    state, alerts = run(events)
    assert state.household_id == HH
    assert alerts, "300 yuan a month is far below the line from the first month"
    for a in alerts:
        assert a.evidence.months_of_history <= 2
        assert a.evidence.household_size >= 1


def test_late_report_is_judged_and_the_months_after_it_judged_again() -> None:
    state, alerts = run([income("2025-04", 100), income("2025-05", 100),
                         income("2025-07", 100), income("2025-06", 100)])
    assert M("2025-06") in state.income
    # 2025-06 is judged when it comes, and 2025-07 again now that its window is whole.
    assert [a.month for a in alerts] == ["2025-04", "2025-05", "2025-07", "2025-06", "2025-07"]
    # The second judgement of 2025-07 is the one an in-order run gives.
    assert alerts[-1] == run(
        [income(m, 100) for m in ("2025-04", "2025-05", "2025-06", "2025-07")])[1][-1]


def test_a_late_settlement_judges_the_recent_months_again() -> None:
    history = flat_history("2024-01", "2025-06", 700)
    state, _ = run(history)
    state, again = step(state, medical("s-late", "2025-05-20", 30000), policy())
    assert [a.month for a in again] == ["2025-05", "2025-06"]
    assert all(r.risk_type == "因病" for a in again for r in a.reasons[:1])


def test_old_data_replayed_judges_nothing_new() -> None:
    """A settlement from before the months the state keeps (a replay of old files) judges
    only the recent months again, which still hold all they were judged on: the same
    alerts as before, nothing the watch list would change."""
    history = flat_history("2024-01", "2025-06", 400)  # below the line: an alert a month
    state, first = run([*history, medical("s-new", "2025-06-10", 100)])
    state, again = step(state, medical("s-old", "2024-02-01", 30000), policy())
    assert "s-old" not in state.settlements  # older than the settlements kept
    latest = {a.month: a for a in first}
    assert again and all(a == latest[a.month] for a in again)
    assert {a.month for a in again} == {"2025-04", "2025-05", "2025-06"}


def test_a_repeated_late_report_is_not_judged_again() -> None:
    history = [income("2025-04", 100), income("2025-05", 100), income("2025-06", 100)]
    state, _ = run(history)
    state, again = step(state, history[0], policy())
    assert again == []


# --- alert id -----------------------------------------------------------------------------

def test_alert_id_is_deterministic() -> None:
    history = flat_history("2024-01", "2025-06", 300)
    _, first = run(history)
    _, again = run(history)
    assert [a.id for a in first] == [a.id for a in again]
    assert len({a.id for a in first}) == len(first)  # one id per household and month
    assert all(a.id.startswith("a") and len(a.id) == 32 for a in first)
    # A replay of an already-judged income report through the same state adds no new id.
    state, _ = run(history)
    _, replayed = step(state, history[-1], policy())
    assert [a.id for a in replayed] == [first[-1].id]


@pytest.mark.parametrize(("change", "same"), [
    ("nothing", True), ("household", False), ("month", False), ("rule-version", False),
], ids=lambda v: str(v))
def test_alert_id_depends_on_household_month_version(change: str, same: bool,
                                                     tmp_path: Path) -> None:
    hh = "9901210010010002" if change == "household" else HH
    last = "2025-07" if change == "month" else "2025-06"
    pol = policy()
    if change == "rule-version":
        (tmp_path / "r.toml").write_text('version = "other"\n', encoding="utf-8")
        pol = policy(RuleConfig.load(tmp_path / "r.toml"))
    _, base = run(flat_history("2024-01", "2025-06", 300))
    _, other = run([income(m, 300, hh=hh) for m in months("2024-01", last)], pol)
    assert (other[-1].id == base[-1].id) is same


# --- risk type naming ---------------------------------------------------------------------

RISK_CASES = [
    pytest.param([S("A", "2025-06-10", 12000), *flat_history("2024-01", "2025-06", 1500)],
                 "因病", id="illness"),
    pytest.param([*flat_history("2024-01", "2025-04", 1000),
                  *flat_history("2025-05", "2025-06", 100)], "因务工就业不稳", id="wages-fall"),
    pytest.param([*[income(m, 100, 800) for m in months("2024-01", "2025-03")],
                  *[income(m, 100, 50) for m in months("2025-04", "2025-06")]],
                 "因产业项目失败", id="business-fails"),
    pytest.param([member("p1", "无劳动力", size=2), member("p2", "弱劳动力", size=2),
                  *flat_history("2024-01", "2025-06", business=800, size=2)], "缺劳动力",
                 id="nobody-earns-wages"),
    pytest.param([member("p1", "普通劳动力", size=5), member("p2", "技能劳动力", size=5),
                  member("p3", "普通劳动力", size=5), member("p4", "无劳动力", size=5),
                  member("p5", "弱劳动力", size=5),
                  *flat_history("2024-01", "2025-06", 2000, size=5)], "其他", id="has-labour"),
    pytest.param([member("p1", "无劳动力", size=2), member("p2", "弱劳动力", size=2),
                  *flat_history("2024-01", "2025-04", business=800, size=2),
                  *flat_history("2025-05", "2025-06", business=100, size=2)], "缺劳动力",
                 id="poor-all-along-then-a-shock"),
    pytest.param(flat_history("2024-01", "2025-06", 400), "其他", id="no-roster"),
]


@pytest.mark.parametrize(("events", "risk"), RISK_CASES)
def test_risk_type_naming(events: list[object], risk: str) -> None:
    alert = _judge(events, "2025-06")
    assert alert is not None
    assert alert.risk_type == risk
    assert alert.risk_type in get_args(RiskType)
    assert all(r.risk_type in get_args(RiskType) for r in alert.reasons)


def test_one_household_in_trouble_is_one_alert_with_every_reason() -> None:
    events = [S("A", "2025-06-10", 30000), job("就业登记", "2024-01-02"),
              job("解除劳动合同", "2025-05-03"),
              *flat_history("2024-01", "2025-04", 1500), *flat_history("2025-05", "2025-06", 0)]
    state, alerts = run(events, policy(PLAIN))
    june = [a for a in alerts if a.month == "2025-06"]
    assert len(june) == 1
    rules = [r.rule for r in june[0].reasons]
    assert rules[:2] == ["illness", "job-loss"]  # the bigger cost first
    assert "medical-spike" in rules and rules[-1] == "projected-below-line"
    assert june[0].risk_type == "因病"


# --- RuleConfig ---------------------------------------------------------------------------

RULES = """\
version = "test-7"

[default]
alert_margin = 0.95
job_change_days = 40

[[override]]
region_prefix = "990121001"
job_change_days = 30

[[override]]
region_prefix = "990121"
year = 2026
business_failure_months = 12

[[override]]
region_prefix = "99"
wage_loss_ratio = 0.6

[[override]]
year = 2027
spike_single_stay_yuan = 8000
"""


@pytest.fixture
def rules(tmp_path: Path) -> RuleConfig:
    path = tmp_path / "rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return RuleConfig.load(path)


CONFIG_CASES = [
    pytest.param("990122001001", 2025, dict(alert_margin=Decimal("0.95"), job_change_days=40,
                                            business_failure_months=9,
                                            wage_loss_ratio=Decimal("0.6")), id="province-wide"),
    pytest.param("990121002001", 2025, dict(business_failure_months=9, job_change_days=40),
                 id="county-other-year"),
    pytest.param("990121002001", 2026, dict(business_failure_months=12, job_change_days=40,
                                            wage_loss_ratio=Decimal("0.6")), id="county-2026"),
    pytest.param("990121001001", 2026, dict(business_failure_months=12, job_change_days=30),
                 id="township-in-county-2026"),
    pytest.param("990121001001", 2025, dict(business_failure_months=9, job_change_days=30),
                 id="township-2025"),
    pytest.param("880000000000", 2025, dict(wage_loss_ratio=Decimal("0.75"),
                                            alert_margin=Decimal("0.95")), id="other-province"),
    pytest.param("880000000000", 2027, dict(spike_single_stay_yuan=Decimal("8000")),
                 id="year-only"),
    pytest.param("990121001001", 2027, dict(spike_single_stay_yuan=Decimal("8000"),
                                            job_change_days=30), id="year-and-prefix"),
]


@pytest.mark.parametrize(("region", "year", "expected"), CONFIG_CASES)
def test_config_overrides(rules: RuleConfig, region: str, year: int,
                          expected: dict[str, object]) -> None:
    th = rules.for_(region, year)
    for name, value in expected.items():
        assert getattr(th, name) == value, name
        assert type(getattr(th, name)) is type(value), name
    assert rules.version == "test-7"


def test_most_specific_override_wins_whatever_the_file_order(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(textwrap.dedent("""\
        [[override]]
        region_prefix = "990121"
        year = 2026
        job_change_days = 10
        [[override]]
        region_prefix = "990121"
        job_change_days = 20
        [[override]]
        region_prefix = "99"
        job_change_days = 30
        """), encoding="utf-8")
    cfg = RuleConfig.load(path)
    assert cfg.for_("990121001001", 2026).job_change_days == 10
    assert cfg.for_("990121001001", 2025).job_change_days == 20
    assert cfg.for_("990122001001", 2026).job_change_days == 30


def test_bundled_rules_equal_code_defaults() -> None:
    assert CONFIG.default == Thresholds()
    assert CONFIG.version != "unversioned"


def test_override_changes_the_decision(tmp_path: Path) -> None:
    # 2026 line 7400; 680 a month -> 8160 per head: above the line, but below the county's
    # 2026 margin (7400 * 1.2 = 8880).
    path = tmp_path / "r.toml"
    path.write_text(textwrap.dedent("""\
        version = "county-9"
        [default]
        outpatient_oop_prior_yuan = 0
        inpatient_oop_prior_yuan = 0
        [[override]]
        region_prefix = "990121"
        year = 2026
        alert_margin = 1.2
        """), encoding="utf-8")
    events = flat_history("2025-01", "2026-06", 680)
    assert _judge(events, "2026-06", policy(PLAIN)) is None
    alert = _judge(events, "2026-06", policy(RuleConfig.load(path)))
    assert alert is not None and alert.risk_type == "其他" and alert.severity == "低"
    assert alert.rule_version.endswith("/county-9")


def test_a_list_threshold_is_read_as_a_list(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[default]\nepisode_second_month_yuan = [9000, 20000]\n"
                    "episode_second_month_chance = [0.7, 0.2]\n", encoding="utf-8")
    assert RuleConfig.load(path).default.episode_second_month_chance == (Decimal("0.7"),
                                                                          Decimal("0.2"))
    path.write_text("[default]\nepisode_second_month_chance = 0.7\n", encoding="utf-8")
    with pytest.raises(ValueError, match="episode_second_month_chance"):
        RuleConfig.load(path)
    path.write_text("[default]\nbusiness_season = [1, 1]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="12 monthly factors"):
        RuleConfig.load(path)


@pytest.mark.parametrize(("text", "where", "key"), [
    ("[default]\nalert_margn = 0.9\n", "[default]", "alert_margn"),
    ("[[override]]\nregion_prefix = '99'\nshock_margn = 1.1\n", "[[override]] #1",
     "shock_margn"),
    ("[[override]]\nregion_prefix = '99'\n[[override]]\nyaer = 2026\nalert_margin = 0.5\n",
     "[[override]] #2", "yaer"),
], ids=["default", "override", "second-override-typo-year"])
def test_unknown_threshold_raises_naming_key(tmp_path: Path, text: str, where: str,
                                             key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=key) as info:
        RuleConfig.load(path)
    assert where in str(info.value)


@pytest.mark.parametrize("text", ["[defaults]\nalert_margin = 0.5\n", 'verison = "x"\n'],
                         ids=["table", "key"])
def test_unknown_top_level_key_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError):
        RuleConfig.load(path)


def test_policy_line_for() -> None:
    pol = policy()
    assert pol.line_for(2025) == (2025, Decimal("7200"))
    assert pol.line_for(2030) == (2026, Decimal("7400"))
    assert pol.line_for(2023) is None


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        income("2025-01").total = Decimal(1)  # type: ignore[misc]
    moved = msgspec.structs.replace(income("2025-01", 5), month="2025-02")
    assert moved.month == "2025-02" and moved.total == Decimal(5)


@pytest.mark.parametrize(("region", "year", "expected"), CONFIG_CASES)
def test_cached_numbers_follow_each_override(rules: RuleConfig, region: str, year: int,
                                             expected: dict[str, object]) -> None:
    """The float forms the forecast uses are cached per Thresholds object: each region and
    year gets its own, never the default's or another override's."""
    th = rules.for_(region, year)
    rules.default.numbers  # noqa: B018 - computed first, must not leak into th
    n = th.numbers
    assert n is rules.for_(region, year).numbers
    assert n.wage_loss_ratio == float(th.wage_loss_ratio)
    assert n.alert_margin == float(th.alert_margin)
    assert n.season == tuple(float(x) for x in th.business_season)
    assert n.episode_min_fen == th.episode_min_yuan * 100
    changed = replace(th, wage_loss_ratio=Decimal("0.3"), episode_min_yuan=Decimal("0.015"),
                      bonus_month=1)
    assert changed.numbers.wage_loss_ratio == 0.3 and n.wage_loss_ratio != 0.3
    assert changed.numbers.episode_min_fen == 2  # 1.5 fen: an integer amount >= 2 reaches it
    assert changed.numbers.usual_wage_month[0] is False and n.usual_wage_month[0] is True


def test_a_line_published_between_judgements_is_used() -> None:
    """Lines are looked up afresh for each judgement: the worker's reference data can add or
    change a line at any time."""
    pol = Policy(lines={2025: Decimal("7200")}, config=PLAIN)
    history = flat_history("2025-01", "2025-06", 590)
    assert _judge(history, "2025-06", pol) is not None
    pol.lines[2025] = Decimal("5000")
    assert _judge(history, "2025-06", pol) is None
    pol.lines.clear()
    assert _judge(history, "2025-06", pol) is None
    pol.lines[2024] = Decimal("9000")
    alert = _judge(history, "2025-06", pol)
    assert alert is not None and alert.evidence.line_year == 2024


# --- the forecast's fast path -----------------------------------------------------------

def _fast_and_general(events: list[object], judged: str, th: Thresholds = TH,
                      size: int = 1) -> tuple[Forecast | None, Forecast | None]:
    state = HouseholdState()
    for ev in events:
        if isinstance(ev, IncomeReport):
            fold_income(state, ev)
        elif isinstance(ev, MedicalSettlement):
            fold_medical(state, ev)
    t = M(judged)
    return (_fast_forecast(state, t, th, _line_of, size),
            _general_forecast(state, t, th, _line_of, size))


def _farm_year(first: str, last: str, wages: int = 3000, scale: int = 1) -> list[IncomeReport]:
    """Wages with a festival month, and farm income that follows the season."""
    out = []
    for m in months(first, last):
        cal = calendar_month(M(m))
        farm = Decimal(300 * scale + 7 * (M(m) % 5)) * TH.business_season[cal - 1]
        out.append(income(m, 0 if cal == 2 else wages, str(farm), transfers=120 + cal))
    return out


FAST_CASES = [
    pytest.param(_farm_year("2024-01", "2025-12"), "2025-12", True, id="full-two-years"),
    pytest.param(_farm_year("2024-06", "2025-11"), "2025-11", True,
                 id="months-missing-last-year"),
    pytest.param(_farm_year("2025-03", "2025-10"), "2025-10", True, id="under-13-months"),
    pytest.param(_farm_year("2025-10", "2025-10"), "2025-10", True, id="one-month"),
    pytest.param(_farm_year("2025-01", "2025-02"), "2025-02", True,
                 id="festival-month-with-no-year-before"),
    pytest.param(_farm_year("2025-01", "2025-12"), "2025-12", True, id="exactly-12-months"),
    pytest.param(_farm_year("2024-12", "2025-12"), "2025-12", True, id="exactly-13-months"),
    pytest.param([income(m, 1000) for m in months("2024-01", "2024-12")]
                 + [income(m, 750) for m in months("2025-01", "2025-03")], "2025-03", True,
                 id="wages-exactly-at-the-loss-ratio"),
    pytest.param([income(m, 1000) for m in months("2024-01", "2024-12")]
                 + [income(m, "749.99") for m in months("2025-01", "2025-03")], "2025-03",
                 False, id="wages-just-below-the-loss-ratio"),
    pytest.param([income(m, 500, 5000) for m in months("2024-01", "2024-12")]
                 + [income(m, 500, 2500) for m in months("2025-01", "2025-04")], "2025-04",
                 True, id="business-exactly-at-the-loss-ratio"),
    pytest.param([income(m, 500, 5000) for m in months("2024-01", "2024-12")]
                 + [income(m, 500, "2499.99") for m in months("2025-01", "2025-04")],
                 "2025-04", False, id="business-just-below-the-loss-ratio"),
    pytest.param([income(m, 3000) for m in months("2025-01", "2025-05")]
                 + [income("2025-06", 2250)], "2025-06", True,
                 id="young-wages-exactly-at-the-loss-ratio-of-the-level"),
    pytest.param([income(m, 3000, -800) for m in months("2024-09", "2025-08")]
                 + [income("2025-09", 3000, -2000)], "2025-09", True,
                 id="negative-business-income"),
    pytest.param([income(m, 3000, -800 - 50 * i) for i, m in
                  enumerate(months("2025-02", "2025-09"))], "2025-09", True,
                 id="negative-business-income-young"),
    pytest.param([income(m, 0, 0) for m in months("2024-05", "2025-07")], "2025-07", True,
                 id="no-income-at-all"),
    pytest.param([ev for ev in _farm_year("2024-01", "2025-09") if ev.month != "2024-07"],
                 "2025-09", False, id="a-gap-last-year"),
    pytest.param([ev for ev in _farm_year("2025-01", "2025-09") if ev.month != "2025-05"],
                 "2025-09", False, id="a-gap-this-year"),
    pytest.param(_farm_year("2024-01", "2025-09", scale=10**11), "2025-09", False,
                 id="amounts-too-big-for-exact-floats"),
    pytest.param([*_farm_year("2024-01", "2025-07"), S("A", "2025-07-10", 8000)], "2025-07",
                 True, id="oop-exactly-at-the-episode-minimum-in-t"),
    pytest.param([*_farm_year("2024-01", "2025-07"), S("A", "2025-06-10", 8000)], "2025-07",
                 True, id="oop-exactly-at-the-episode-minimum-in-t-1"),
    pytest.param([*_farm_year("2024-01", "2025-07"), S("A", "2025-07-10", "7999.99")],
                 "2025-07", True, id="oop-just-below-the-episode-minimum"),
    pytest.param([*_farm_year("2025-02", "2025-07"), S("A", "2025-05-10", 9000),
                  S("B", "2025-06-10", 8000), S("C", "2025-07-10", 12000),
                  S("D", "2025-07-11", 300, inpatient=False), S("R", "2025-07-12", 0,
                                                                reverses="C")],
                 "2025-07", True, id="episode-ongoing-with-a-reversal-young"),
    pytest.param([*_farm_year("2024-03", "2025-07"), S("A", "2025-03-10", 300, inpatient=False),
                  S("B", "2024-07-10", 9000), S("C", "2025-07-10", 20, inpatient=False)],
                 "2025-07", True, id="outpatient-and-old-settlements"),
]


@pytest.mark.parametrize(("events", "judged", "applies"), FAST_CASES)
@pytest.mark.parametrize("th", [TH, PLAIN_TH, replace(TH, episode_min_yuan=Decimal(0)),
                                replace(TH, alert_margin=Decimal("1.5"),
                                        chronic_prior_months=0, bonus_month=2)],
                         ids=["default", "plain", "episode-min-0", "odd"])
def test_the_fast_path_is_the_general_path(events: list[object], judged: str, applies: bool,
                                           th: Thresholds) -> None:
    """Where it applies, the fast path's forecast is the general path's, field for field
    (floats compared exactly); elsewhere it declines and forecast() is the general path."""
    fast, general = _fast_and_general(events, judged, th, size=3)
    assert general is not None
    if applies:
        assert fast is not None
        assert fast == general
        assert repr(fast) == repr(general)
    else:
        assert fast is None


def test_the_fast_path_declines_without_a_line() -> None:
    state = HouseholdState()
    for ev in _farm_year("2024-01", "2025-09"):
        fold_income(state, ev)
    assert _fast_forecast(state, M("2025-09"), TH, lambda m: None, 1) is None
    assert forecast(state, M("2025-09"), TH, lambda m: None, 1) is None
    assert _fast_forecast(state, M("2025-10"), TH, _line_of, 1) is None  # not reported

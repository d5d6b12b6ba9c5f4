"""Per-household state and how each event folds into it: pure, no I/O.

The state is small on purpose (it is written to a changelog topic after each update):
money in integer fen, months as integers, and only the window the rules look at.
Folding is idempotent: the same event applied twice leaves the state as it was, which is
what makes at-least-once processing safe.
"""

from __future__ import annotations

from decimal import Decimal
from operator import attrgetter

import msgspec

from schemas.events import EmploymentEvent, IncomeReport, MedicalSettlement, RosterMember
from streams.rules.months import month_index, month_of

# Months of income kept: two years covers "same months last year" plus the current window.
INCOME_MONTHS_KEPT = 26
SETTLEMENT_MONTHS_KEPT = 14

# Employment event codes, stored compactly.
REGISTERED, WAGE, ENDED, UNEMPLOYED = 0, 1, 2, 3
EMPLOYMENT_CODES = {"就业登记": REGISTERED, "工资发放": WAGE, "解除劳动合同": ENDED,
                    "失业登记": UNEMPLOYED}


_MONTH = attrgetter("month")


def fen(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


class Settlement(msgspec.Struct, array_like=True):
    month: int
    out_of_pocket: int  # fen; 0 for reversals
    inpatient: bool
    file: str
    line: int
    reverses: str | None = None


class HouseholdState(msgspec.Struct, omit_defaults=True):
    household_id: str = ""
    region_code: str = ""
    household_type: str = "一般农户"
    size: int = 0
    members: dict[str, str] = {}  # person pseudonym -> labour ability
    # month -> [wages, business, property, transfers, line in file] (fen); file in income_files
    income: dict[int, list[int]] = {}
    income_files: dict[int, str] = {}
    settlements: dict[str, Settlement] = {}
    # person -> sorted list of [date ordinal, code] for non-wage events, plus the last wage day
    jobs: dict[str, list[list[int]]] = {}
    last_wage: dict[str, int] = {}
    job_sources: dict[str, list[str | int]] = {}  # person -> [file, line] of the last separation
    evaluated_month: int = -1
    alert_months: list[int] = []

    def latest_month(self) -> int:
        return max(self.income) if self.income else -1


_STATE_ENCODER = msgspec.msgpack.Encoder()
_STATE_DECODER = msgspec.msgpack.Decoder(HouseholdState)


def dump_state(state: HouseholdState) -> bytes:
    return _STATE_ENCODER.encode(state)


def load_state(data: bytes | None) -> HouseholdState:
    return _STATE_DECODER.decode(data) if data else HouseholdState()


def fold_roster(state: HouseholdState, ev: RosterMember) -> HouseholdState:
    state.household_id = ev.household_id
    state.region_code = ev.region_code
    state.household_type = ev.household_type
    state.size = state.size or ev.household_size
    state.members[ev.person] = ev.labour
    return state


def fold_income(state: HouseholdState, ev: IncomeReport) -> HouseholdState:
    m = month_index(ev.month)
    state.household_id = ev.household_id
    state.region_code = state.region_code or ev.region_code
    latest = state.latest_month()
    if m >= latest:
        state.size = ev.household_size
    state.income[m] = [fen(ev.wages), fen(ev.business), fen(ev.property), fen(ev.transfers),
                       ev.origin.line]
    state.income_files[m] = ev.origin.file
    horizon = max(latest, m) - INCOME_MONTHS_KEPT  # the latest month now
    for old in [k for k in state.income if k <= horizon]:
        del state.income[old]
        state.income_files.pop(old, None)
    return state


def fold_medical(state: HouseholdState, ev: MedicalSettlement) -> HouseholdState:
    # A settlement id seen again (the export repeats rows) counts once: dict key.
    state.settlements[ev.settlement_id] = Settlement(
        month=month_of(ev.settled),
        out_of_pocket=0 if ev.reversal else fen(ev.out_of_pocket),
        inpatient=ev.visit_type == "住院",
        file=ev.origin.file,
        line=ev.origin.line,
        reverses=ev.reverses if ev.reversal else None,
    )
    newest = max(map(_MONTH, state.settlements.values()))
    horizon = newest - SETTLEMENT_MONTHS_KEPT
    for sid in [k for k, s in state.settlements.items() if s.month <= horizon]:
        del state.settlements[sid]
    return state


def fold_employment(state: HouseholdState, ev: EmploymentEvent) -> HouseholdState:
    code = EMPLOYMENT_CODES[ev.business_type]
    day = ev.date.toordinal()
    if code == WAGE:
        if day > state.last_wage.get(ev.person, 0):
            state.last_wage[ev.person] = day
        return state
    events = state.jobs.setdefault(ev.person, [])
    if [day, code] not in events:
        events.append([day, code])
        events.sort()
        del events[:-6]  # the last few changes are all a job-loss decision needs
    if code in (ENDED, UNEMPLOYED):
        state.job_sources[ev.person] = [ev.origin.file, ev.origin.line]
    return state


def rigid_spending(state: HouseholdState, first: int, last: int) -> int:
    """Out-of-pocket medical cost (fen) settled in months first..last, each settlement
    counted once and reversed ones netted out."""
    reversed_ids = {s.reverses for s in state.settlements.values() if s.reverses}
    return sum(
        s.out_of_pocket
        for sid, s in state.settlements.items()
        if first <= s.month <= last and sid not in reversed_ids
    )

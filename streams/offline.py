"""The same topology as the Faust app, in memory: roster join, then the detector.

Used by the stream-tier tests and by ``fanpin evaluate --offline`` to judge rules on a
scenario in seconds, without a broker. It runs the very same pure functions the agents
call, so what it finds is what the worker finds for the same event order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from schemas.events import (
    Alert,
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    Region,
    RosterMember,
)
from streams.rules.config import RuleConfig
from streams.rules.engine import Policy, step
from streams.rules.join import RosterLink, attach
from streams.rules.state import HouseholdState, dump_state, load_state


@dataclass
class OfflinePipeline:
    config: RuleConfig = field(default_factory=RuleConfig.load)
    lines: dict[int, Decimal] = field(default_factory=dict)
    roster: dict[str, RosterLink] = field(default_factory=dict)
    pending: dict[str, list[MedicalSettlement | EmploymentEvent]] = field(default_factory=dict)
    states: dict[str, bytes] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    unjoined: int = 0

    def __post_init__(self) -> None:
        self.policy = Policy(lines=self.lines, config=self.config)

    def feed(self, events: Iterable[object]) -> OfflinePipeline:
        for ev in events:
            self.handle(ev)
        return self

    def handle(self, ev: object) -> None:
        if isinstance(ev, MonitoringLine):
            self.lines[ev.year] = ev.line
        elif isinstance(ev, Region):
            pass
        elif isinstance(ev, RosterMember):
            self.roster[ev.person] = RosterLink(ev.household_id, ev.region_code)
            self._household(ev.household_id, ev)
            for parked in self.pending.pop(ev.person, []):
                self._household(ev.household_id, attach(parked, self.roster[ev.person]))
        elif isinstance(ev, MedicalSettlement | EmploymentEvent):
            link = self.roster.get(ev.person)
            if link is None:
                self.pending.setdefault(ev.person, []).append(ev)
                self.unjoined += 1
            else:
                self._household(link.household_id, attach(ev, link))
        elif isinstance(ev, IncomeReport):
            self._household(ev.household_id, ev)

    def _household(self, household_id: str, ev: object) -> None:
        # Round-trip the state through its serialised form, as the changelog does.
        state = load_state(self.states.get(household_id))
        state, alerts = step(state, ev, self.policy)  # type: ignore[arg-type]
        self.states[household_id] = dump_state(state)
        self.alerts.extend(alerts)

    def state_of(self, household_id: str) -> HouseholdState:
        return load_state(self.states.get(household_id))

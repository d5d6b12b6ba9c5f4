"""What the worker's two agents do with one message, without Faust or Kafka: unpack it into
events, join person events to their households, fold events into households and judge them.

A message is usually an ``EventBatch`` (hundreds of events for one partition) and may be a
single event. The agents in ``streams.agents`` only move bytes between topics and call
these functions, so the stream-tier tests drive them with in-memory stores.

Everything here is per event, in message order, so one household's events are still
applied in the order the departments' files gave them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from schemas.events import (
    Alert,
    EmploymentEvent,
    EventBatch,
    IncomeReport,
    MedicalSettlement,
    PartitionedEvent,
    RosterMember,
    decode_event,
    encode,
    encode_batch,
    partition_of,
    split_batch,
)
from streams.rules.engine import Policy, step
from streams.rules.join import RosterLink, attach, link_of, park, read_link, unpark
from streams.rules.state import HouseholdState, dump_state, load_state


class Store(Protocol):
    """The part of ``streams.store.StateStore`` the batch logic uses."""

    def partition(self, key: bytes) -> int: ...
    async def ready(self, partition: int) -> dict[bytes, bytes]: ...
    def put(self, partition: int, key: bytes, value: bytes | None) -> None: ...


@dataclass
class Item:
    """One event of a message: decoded, or the reason it could not be."""

    event: PartitionedEvent | None
    raw: bytes | None = None  # the event's own bytes, when known
    error: str | None = None

    def bytes(self) -> bytes:
        if self.raw is None:
            assert self.event is not None
            self.raw = encode(self.event)
        return self.raw


def unpack(value: bytes | None, allowed: tuple[type, ...]) -> list[Item]:
    """The events of one message. A batch that does not decode as a whole is opened event
    by event, so its good events go on and only the bad ones are dead-lettered."""
    if not value:
        return [Item(None, b"", "an empty message")]
    try:
        decoded = decode_event(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        try:
            parts = split_batch(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return [Item(None, value, f"not a known event: {exc}")]
        return [_one(raw, allowed) for raw in parts]
    if isinstance(decoded, EventBatch):
        return [Item(ev) if isinstance(ev, allowed) else
                Item(None, encode(ev), f"{type(ev).__name__} does not belong on this topic")
                for ev in decoded.events]
    if isinstance(decoded, allowed):
        return [Item(decoded, value)]  # type: ignore[arg-type]
    return [Item(None, value, f"{type(decoded).__name__} does not belong on this topic")]


def _one(raw: bytes, allowed: tuple[type, ...]) -> Item:
    try:
        ev = decode_event(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Item(None, raw, f"not a known event: {exc}")
    if not isinstance(ev, allowed):
        return Item(None, raw, f"{type(ev).__name__} does not belong on this topic")
    return Item(ev, raw)  # type: ignore[arg-type]


PERSON_KINDS: tuple[type, ...] = (RosterMember, MedicalSettlement, EmploymentEvent)
HOUSEHOLD_KINDS: tuple[type, ...] = (RosterMember, IncomeReport, MedicalSettlement,
                                     EmploymentEvent)


def kind_counts(items: list[Item]) -> Counter[tuple[str, str]]:
    """(department, event tag) of each event, for the events-in counter."""
    out: Counter[tuple[str, str]] = Counter()
    for it in items:
        if it.event is not None:
            tag = type(it.event).__struct_config__.tag
            out[(it.event.origin.dept, str(tag))] += 1
    return out


@dataclass
class Outcome:
    """What one message produced: encoded household events by household-events partition
    (join), alerts (detector), and events to dead-letter with their reasons."""

    forward: dict[int, list[bytes]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    dead: list[tuple[bytes, str]] = field(default_factory=list)
    evaluations: int = 0
    rule_seconds: float = 0.0

    def batches(self) -> list[tuple[int, bytes]]:
        return [(p, encode_batch(evs)) for p, evs in sorted(self.forward.items())]


# --- the roster join -------------------------------------------------------------------

async def join(items: list[Item], roster: Store, pending: Store,
               household_partitions: int) -> Outcome:
    """person events -> household events: finds each person's household in the roster.
    Events of a person whose roster row has not arrived yet are parked under the person
    (up to ``PENDING_LIMIT``) and released when it does."""
    out = Outcome()

    def forward(household_id: str, raw: bytes) -> None:
        p = partition_of(household_id.encode(), household_partitions)
        out.forward.setdefault(p, []).append(raw)

    for it in items:
        ev = it.event
        if ev is None:
            out.dead.append((it.raw or b"", it.error or "unreadable"))
            continue
        person = ev.person.encode()  # type: ignore[union-attr]
        p = roster.partition(person)
        links = await roster.ready(p)
        parked_all = await pending.ready(p)
        if isinstance(ev, RosterMember):
            roster.put(p, person, link_of(ev))
            forward(ev.household_id, it.bytes())
            parked = unpark(parked_all.get(person))
            if parked:
                joined = RosterLink(ev.household_id, ev.region_code)
                for raw in parked:
                    forward(ev.household_id,
                            encode(attach(decode_event(raw), joined)))  # type: ignore[arg-type]
                pending.put(p, person, None)
            continue
        link = read_link(links.get(person))
        if link is None:
            raw = it.bytes()
            parked_list, ok = park(parked_all.get(person), raw)
            if ok:
                pending.put(p, person, parked_list)
            else:
                out.dead.append((raw, "person is on no household roster"))
            continue
        forward(link.household_id, encode(attach(ev, link)))  # type: ignore[arg-type]
    return out


# --- the detector ----------------------------------------------------------------------

class WriteBehind:
    """Decoded household states changed since the store was last written, and the events
    applied to each since then.

    The detector keeps a household here across messages and writes it to the store (and
    its changelog) once per flush, not once per message: a household's medical,
    employment and income events of a month usually arrive in three messages close
    together. The input messages are acknowledged only after the flush, so Kafka commits
    no offset whose state is not in the changelog (still at-least-once). The events are
    kept to rebuild a state when a rule fails half way through one."""

    def __init__(self) -> None:
        self.states: dict[bytes, HouseholdState] = {}
        self.events: dict[bytes, list[PartitionedEvent]] = {}

    def __len__(self) -> int:
        return len(self.states)

    def write(self, households: Store) -> int:
        """Put every state into the store (the caller flushes the store) and forget them."""
        n = len(self.states)
        for key, state in self.states.items():
            households.put(households.partition(key), key, dump_state(state))
        self.states.clear()
        self.events.clear()
        return n

    def forget(self, partitions: set[int], households: Store) -> None:
        """Drop the states of partitions this worker gave up (they were written already,
        since Faust waits for every message to be acknowledged before it revokes)."""
        for key in [k for k in self.states if households.partition(k) in partitions]:
            del self.states[key]
            del self.events[key]


async def detect(items: list[Item], households: Store, policy: Policy,
                 clock: Callable[[], float] = time.perf_counter,
                 cache: WriteBehind | None = None) -> Outcome:
    """household events -> alerts. Each household's state is read once per message, every
    event of that household is folded in order (an income report judges the month), and
    the state is written back once (or kept in ``cache`` until its next write). An event
    the rules cannot handle is dead-lettered and the household's state is rebuilt without
    it, as if it had never arrived."""
    out = Outcome()
    by_household: dict[bytes, list[Item]] = {}
    for it in items:
        if it.event is None:
            out.dead.append((it.raw or b"", it.error or "unreadable"))
            continue
        hid = it.event.household_id
        if not hid:
            out.dead.append((it.bytes(), "a person event that was never joined to a household"))
            continue
        by_household.setdefault(hid.encode(), []).append(it)
    started = clock()
    for key, evs in by_household.items():
        p = households.partition(key)
        data = await households.ready(p)
        hid = key.decode()
        state = cache.states.get(key) if cache is not None else None
        if state is None:
            state = _load(data.get(key), hid)
            applied: list[PartitionedEvent] = []
        else:
            applied = cache.events[key]  # type: ignore[union-attr]
        for it in evs:
            ev = it.event
            try:
                state, alerts = step(state, ev, policy)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the worker
                out.dead.append((it.bytes(), f"rule failed: {type(exc).__name__}: {exc}"[:500]))
                # The failed step may have changed the state half way: start again from
                # the stored state with the events that went through since (their alerts
                # are already out).
                state = _load(data.get(key), hid)
                for done in applied:
                    state, _ = step(state, done, policy)
                continue
            applied.append(ev)  # type: ignore[arg-type]
            if isinstance(ev, IncomeReport):
                out.evaluations += 1
            out.alerts.extend(alerts)
        if cache is None:
            households.put(p, key, dump_state(state))
        else:
            cache.states[key] = state
            cache.events[key] = applied
    out.rule_seconds = clock() - started
    return out


def _load(data: bytes | None, household_id: str) -> HouseholdState:
    state = load_state(data)
    state.household_id = state.household_id or household_id  # the key is the household
    return state


def needs_line(items: list[Item], policy: Policy) -> bool:
    """True when an income report is for a year with no known monitoring line (the
    reference reader should catch up before judging it)."""
    from streams.rules.months import month_index

    return any(isinstance(it.event, IncomeReport)
               and policy.line_for(month_index(it.event.month) // 12) is None
               for it in items)


class MemoryStore:
    """A store without Kafka, for tests and offline runs: same interface, nothing durable."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.data: dict[int, dict[bytes, bytes]] = {}
        self.writes = 0

    def partition(self, key: bytes) -> int:
        return partition_of(key, self.partitions)

    async def ready(self, partition: int) -> dict[bytes, bytes]:
        return self.data.setdefault(partition, {})

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.writes += 1
        if value is None:
            self.data[partition].pop(key, None)
        else:
            self.data[partition][key] = value

    async def flush(self) -> None:
        return None

    def forget(self, partitions: object) -> None:
        return None

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(self.partition(key), {}).get(key)

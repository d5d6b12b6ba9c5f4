"""Faust agents: thin adapters between topics, tables and the pure rules."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

import msgspec
from faust.exceptions import PartitionsMismatch
from faust.types import EventT

from fanpin.metrics import (
    ALERTS_RAISED,
    DEAD_LETTERS,
    EVENTS_IN,
    FETCH_RESUMED,
    RULE_EVALUATION,
    kind_of,
)
from schemas.events import (
    DeadLetter,
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    RosterMember,
    decode_event,
    encode,
)
from streams.app import (
    alerts_topic,
    app,
    dead_letter_topic,
    household_table,
    household_topic,
    pending_table,
    person_topic,
    reference_topic,
    roster_table,
    settings,
)
from streams.reference import ReferenceData, ReferenceReader
from streams.rules.config import RuleConfig
from streams.rules.engine import Policy, step
from streams.rules.join import attach, link_of, park, read_link, unpark
from streams.rules.months import month_index
from streams.rules.state import dump_state, load_state

log = logging.getLogger(__name__)

reference = ReferenceData()
policy = Policy(lines=reference.lines, config=RuleConfig.load(settings.rules_file))
reference_ready = asyncio.Event()
_reader: ReferenceReader | None = None
_last_event = time.monotonic()
IDLE_BEFORE_RESUME = 15.0  # seconds without any event before a stalled partition is resumed
TABLE_RETRY_SECONDS = 1.0
TABLE_RETRIES = 120


async def _with_tables(what: str, body: Any) -> None:
    """Run ``body()`` (which reads and writes tables), retrying while Faust reports a
    changelog topic whose partitions it cannot see yet. That is the cluster's metadata
    catching up, not a bad message: dead-lettering the event would lose it."""
    for attempt in range(TABLE_RETRIES):
        try:
            await body()
            return
        except PartitionsMismatch as exc:
            if attempt == 0:
                log.warning("%s: %s; retrying until the changelog topic is visible", what,
                            str(exc).splitlines()[0])
            await asyncio.sleep(TABLE_RETRY_SECONDS)
    await body()  # the last try: its error goes to the caller


def stalled(committed: dict, ends: dict, idle: float) -> set:  # type: ignore[type-arg]
    """Partitions with messages this worker has not processed although its agents have
    been idle for a while: nothing is in flight, so nothing will move them on its own."""
    if idle < IDLE_BEFORE_RESUME:
        return set()
    return {tp for tp, end in ends.items() if end > (committed.get(tp) or 0)}


@app.timer(interval=5.0)
async def resume_stalled_fetches() -> None:
    """Faust 0.15 sometimes stops delivering one partition: its lag stays put while the
    worker sits idle, with no rebalance and no error (seen on a second replay of the same
    files). When that happens, resume the partition in Faust's fetcher and seek every
    partition back to its committed offset; replaying from there is harmless because
    folding events and recording alerts are idempotent."""
    consumer: Any = app.consumer  # the concrete Consumer: its fetch sets are not in ConsumerT
    idle = time.monotonic() - _last_event
    if idle < IDLE_BEFORE_RESUME or app.in_recovery or not consumer.flow_active:
        return
    sources = {person_topic.get_topic_name(), household_topic.get_topic_name()}
    assigned = {tp for tp in consumer.assignment() if tp.topic in sources}
    if not assigned:
        return
    ends = dict(await consumer.highwaters(*assigned))
    committed = {tp: consumer._committed_offset.get(tp) for tp in assigned}
    stuck = stalled(committed, ends, idle)
    if not stuck:
        return
    active = consumer._get_active_partitions()
    for tp in sorted(stuck):
        log.warning("%s[%d] has %d unprocessed messages and the worker is idle (active=%s "
                    "paused=%s buffered=%s); resuming it from the committed offset",
                    tp.topic, tp.partition, ends[tp] - (committed.get(tp) or 0),
                    tp in active, tp in consumer._paused_partitions,
                    tp in consumer._buffered_partitions)
        FETCH_RESUMED.inc()
        consumer._buffered_partitions.discard(tp)
        active.add(tp)
    consumer.resume_partitions(stuck)
    await consumer.perform_seek()


class _Misplaced(Exception):
    """An event of a kind that has no business on this topic."""


async def dead_letter(event: EventT, reason: str, consumer: str) -> None:
    msg = event.message
    raw = event.value if isinstance(event.value, bytes) else b""
    await dead_letter_topic.send(value=encode(DeadLetter(
        topic=msg.topic, partition=msg.partition, offset=msg.offset, reason=reason[:500],
        payload=raw[:4096].decode("utf-8", "replace"), consumer=consumer)))
    DEAD_LETTERS.labels(consumer).inc()
    log.warning("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset,
                reason[:200])


@app.task
async def follow_reference() -> None:
    global _reader
    _reader = ReferenceReader(topic=reference_topic.get_topic_name(),
                              bootstrap=settings.bootstrap_servers,
                              client_options=settings.kafka_client_options(), data=reference)
    await _reader.start()
    reference_ready.set()
    await _reader.follow()


@app.agent(person_topic, name="roster-join")
async def roster_join(stream):  # type: ignore[no-untyped-def]
    """person-events -> household-events: finds each person's household in the roster."""
    global _last_event
    async for event in stream.events():
        _last_event = time.monotonic()
        try:
            await _with_tables("roster-join", partial(_join_one, event))
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
            log.exception("roster-join failed on %s[%d]@%d", event.message.topic,
                          event.message.partition, event.message.offset)
            await dead_letter(event, f"roster-join failed: {type(exc).__name__}: {exc}",
                              "roster-join")


async def _join_one(event: EventT) -> None:
    try:
        ev = decode_event(event.value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        await dead_letter(event, f"not a known event: {exc}", "roster-join")
        return
    person = event.key
    if isinstance(ev, RosterMember | MedicalSettlement | EmploymentEvent):
        EVENTS_IN.labels(ev.origin.dept, kind_of(str(type(ev).__struct_config__.tag))).inc()
    if isinstance(ev, RosterMember):
        roster_table[person] = link_of(ev)
        await household_topic.send(key=ev.household_id.encode(), value=event.value)
        parked = unpark(pending_table.get(person))
        if parked:
            link = read_link(roster_table.get(person))
            assert link is not None
            for raw in parked:
                joined = attach(decode_event(raw), link)  # type: ignore[arg-type]
                await household_topic.send(key=link.household_id.encode(),
                                           value=encode(joined))
            del pending_table[person]
    elif isinstance(ev, MedicalSettlement | EmploymentEvent):
        link = read_link(roster_table.get(person))
        if link is None:
            parked_list, ok = park(pending_table.get(person), event.value)
            if ok:
                pending_table[person] = parked_list
            else:
                await dead_letter(event, "person is on no household roster", "roster-join")
            return
        await household_topic.send(key=link.household_id.encode(),
                                   value=encode(attach(ev, link)))
    else:
        await dead_letter(event, f"{type(ev).__name__} does not belong on person-events",
                          "roster-join")


@app.agent(household_topic, name="household-risk-detector")
async def household_risk_detector(stream):  # type: ignore[no-untyped-def]
    """household-events -> alerts: folds each event into the household's state and judges
    the month when its income report arrives."""
    global _last_event
    await reference_ready.wait()
    async for event in stream.events():
        _last_event = time.monotonic()
        alerts: list[Any] = []

        async def judge(event: EventT = event) -> None:
            nonlocal alerts
            ev = decode_event(event.value)
            if not isinstance(ev, IncomeReport | MedicalSettlement | EmploymentEvent
                              | RosterMember):
                raise _Misplaced(f"{type(ev).__name__} does not belong on household-events")
            if isinstance(ev, IncomeReport) and policy.line_for(month_index(ev.month) // 12) \
                    is None and _reader is not None:
                await _reader.catch_up()
            started = time.perf_counter()
            state = load_state(household_table.get(event.key))
            state, alerts = step(state, ev, policy)
            RULE_EVALUATION.observe(time.perf_counter() - started)
            household_table[event.key] = dump_state(state)
            if isinstance(ev, IncomeReport):  # the rest came through roster-join
                EVENTS_IN.labels(ev.origin.dept, "income").inc()

        try:
            await _with_tables("household-risk-detector", judge)
        except _Misplaced as exc:
            await dead_letter(event, str(exc), "household-risk-detector")
            continue
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await dead_letter(event, f"not a known event: {exc}", "household-risk-detector")
            continue
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
            log.exception("household-risk-detector failed on %s[%d]@%d", event.message.topic,
                          event.message.partition, event.message.offset)
            await dead_letter(event, f"rule failed: {type(exc).__name__}: {exc}",
                              "household-risk-detector")
            continue
        for alert in alerts:
            # The alert keeps the triggering event's timestamp, so the sink can measure the
            # lag from a department row published to its watch-list entry.
            await alerts_topic.send(key=alert.household_id.encode(), value=encode(alert),
                                    timestamp=event.message.timestamp)
            ALERTS_RAISED.labels(alert.reasons[0].rule if alert.reasons else "",
                                 alert.risk_type).inc()

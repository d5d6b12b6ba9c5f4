"""Faust agents: thin adapters between topics, the state stores and the pure rules.

Each Kafka message is a batch of events (``schemas.events.EventBatch``) or a single event;
``streams.batch`` does the work, these agents move its results to topics and flush the
stores. Faust flushes the producer before committing an input offset, so everything a
message produced is in Kafka before the message counts as done (at-least-once)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faust.types import EventT

from fanpin.metrics import (
    ALERTS_RAISED,
    DEAD_LETTERS,
    EVENTS_IN,
    FETCH_RESUMED,
    RULE_EVALUATION,
    kind_of,
)
from schemas.events import DeadLetter, IncomeReport, encode
from streams.app import (
    alerts_topic,
    app,
    dead_letter_topic,
    household_store,
    household_topic,
    pending_store,
    person_topic,
    reference_topic,
    roster_store,
    settings,
)
from streams.batch import (
    HOUSEHOLD_KINDS,
    PERSON_KINDS,
    Item,
    WriteBehind,
    detect,
    join,
    kind_counts,
    needs_line,
    unpack,
)
from streams.reference import ReferenceData, ReferenceReader
from streams.rules.config import RuleConfig
from streams.rules.engine import Policy

log = logging.getLogger(__name__)

reference = ReferenceData()
policy = Policy(lines=reference.lines, config=RuleConfig.load(settings.rules_file))
reference_ready = asyncio.Event()
_reader: ReferenceReader | None = None
_last_event = time.monotonic()
IDLE_BEFORE_RESUME = 15.0  # seconds without any event before a stalled partition is resumed


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


async def dead_letter(event: EventT, reason: str, consumer: str,
                      payload: bytes | None = None) -> None:
    """Send one message (or one event of a batch message: ``payload``) to the dead-letter
    topic with the reason, and carry on."""
    msg = event.message
    raw = payload if payload is not None else (
        event.value if isinstance(event.value, bytes) else b"")
    await dead_letter_topic.send(value=encode(DeadLetter(
        topic=msg.topic, partition=msg.partition, offset=msg.offset, reason=reason[:500],
        payload=raw[:4096].decode("utf-8", "replace"), consumer=consumer)))
    DEAD_LETTERS.labels(consumer).inc()
    log.warning("dead-lettered %s %s[%d]@%d: %s", "an event of" if payload is not None else "",
                msg.topic, msg.partition, msg.offset, reason[:200])


@app.task
async def follow_reference() -> None:
    global _reader
    _reader = ReferenceReader(topic=reference_topic.get_topic_name(),
                              bootstrap=settings.bootstrap_servers,
                              client_options=settings.aiokafka_client_options(), data=reference)
    await _reader.start()
    reference_ready.set()
    await _reader.follow()


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_revoked(app: Any, revoked: set[Any], **kwargs: Any) -> None:
    """Faust has finished the events in flight and flushed the producer: drop the state of
    partitions this worker gave up, so it is read back (changed or not) if they return."""
    for store, topic in ((roster_store, person_topic), (pending_store, person_topic),
                         (household_store, household_topic)):
        gone = {tp.partition for tp in revoked if tp.topic == topic.get_topic_name()}
        if store is household_store:
            _pending.forget(gone, household_store)
        store.forget(gone)


def _count_in(items: list[Item], only: tuple[type, ...]) -> None:
    for (dept, tag), n in kind_counts([it for it in items
                                        if isinstance(it.event, only)]).items():
        EVENTS_IN.labels(dept, kind_of(tag)).inc(n)


async def _dead_letters(event: EventT, dead: list[tuple[bytes, str]], consumer: str) -> None:
    whole = len(dead) == 1 and dead[0][0] == event.value
    for raw, reason in dead:
        await dead_letter(event, reason, consumer, payload=None if whole else raw)


@app.agent(person_topic, name="roster-join")
async def roster_join(stream):  # type: ignore[no-untyped-def]
    """person-events -> household-events: finds each person's household in the roster and
    forwards the events, one batch message per household-events partition."""
    global _last_event
    async for event in stream.events():
        _last_event = time.monotonic()
        try:
            items = unpack(event.value, PERSON_KINDS)
            _count_in(items, PERSON_KINDS)
            out = await join(items, roster_store, pending_store,
                             household_topic.partitions or settings.partitions)
            for partition, value in out.batches():
                await household_topic.send(value=value, partition=partition,
                                           timestamp=event.message.timestamp)
            await roster_store.flush()
            await pending_store.flush()
            await _dead_letters(event, out.dead, "roster-join")
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
            log.exception("roster-join failed on %s[%d]@%d", event.message.topic,
                          event.message.partition, event.message.offset)
            await dead_letter(event, f"roster-join failed: {type(exc).__name__}: {exc}",
                              "roster-join")


#: The detector writes changed households to its store at most this long after a message
#: (or sooner, see below), and only then acknowledges the messages behind them.
FLUSH_SECONDS = 0.5
FLUSH_MESSAGES = 200  # ... or after this many messages
FLUSH_HOUSEHOLDS = 50_000  # ... or when this many households wait to be written
_pending = WriteBehind()
_unacked: list[tuple[Any, EventT]] = []  # (stream, event) processed, not yet acknowledged
_detector_lock = asyncio.Lock()
_last_flush = time.monotonic()


async def _flush_detector() -> None:
    """Write the changed households (one changelog batch per partition), then acknowledge
    the messages they came from: Faust commits an offset only once its message is
    acknowledged, and flushes the producer before it commits."""
    global _last_flush
    _pending.write(household_store)
    await household_store.flush()
    acks, _unacked[:] = list(_unacked), []
    for stream, event in acks:
        await stream.ack(event)
    _last_flush = time.monotonic()


@app.timer(interval=FLUSH_SECONDS / 2)
async def flush_detector_when_quiet() -> None:
    if _unacked and time.monotonic() - _last_flush >= FLUSH_SECONDS:
        async with _detector_lock:
            await _flush_detector()


@app.agent(household_topic, name="household-risk-detector")
async def household_risk_detector(stream):  # type: ignore[no-untyped-def]
    """household-events -> alerts: folds each household's events into its state and judges
    the month when its income report arrives. Alerts go out at once; states are written
    behind (``_flush_detector``) and messages acknowledged after that."""
    global _last_event
    await reference_ready.wait()
    manual = stream.noack()
    async for event in manual.events():
        _last_event = time.monotonic()
        async with _detector_lock:
            await _detect_one(event)
            _unacked.append((manual, event))
            if (len(_unacked) >= FLUSH_MESSAGES or len(_pending) >= FLUSH_HOUSEHOLDS
                    or time.monotonic() - _last_flush >= FLUSH_SECONDS):
                await _flush_detector()


async def _detect_one(event: EventT) -> None:
    try:
        items = unpack(event.value, HOUSEHOLD_KINDS)
        if _reader is not None and needs_line(items, policy):
            await _reader.catch_up()
        out = await detect(items, household_store, policy, cache=_pending)
        if any(it.event is not None for it in items):
            RULE_EVALUATION.observe(out.rule_seconds / len(items))
        _count_in(items, (IncomeReport,))  # the rest were counted by roster-join
        # An alert keeps the triggering message's timestamp, so the sink can measure the
        # lag from a department row published to its watch-list entry.
        for alert in out.alerts:
            await alerts_topic.send(key=alert.household_id.encode(), value=encode(alert),
                                    timestamp=event.message.timestamp)
            ALERTS_RAISED.labels(alert.reasons[0].rule if alert.reasons else "",
                                 alert.risk_type).inc()
        await _dead_letters(event, out.dead, "household-risk-detector")
    except Exception as exc:  # noqa: BLE001 - one bad message must not stop the worker
        log.exception("household-risk-detector failed on %s[%d]@%d", event.message.topic,
                      event.message.partition, event.message.offset)
        await dead_letter(event, f"detector failed: {type(exc).__name__}: {exc}",
                          "household-risk-detector")

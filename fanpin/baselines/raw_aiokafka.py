"""Baseline: a raw aiokafka consumer running the detection rules, no durability.

All partitions of the input topic are assigned by hand (no consumer group, no rebalance),
read from the beginning with ``getmany``, and each message is decoded with
``decode_event`` and folded with ``step`` into an in-memory ``dict[bytes, HouseholdState]``
(no state serialisation, no changelog, no offset commits, alerts counted but not sent).
This is the ceiling for the same rules on the same broker: what Python can do when the
framework costs nothing.

The clock starts when the first batch of records arrives (so connecting, metadata and the
first fetch are not counted) and stops after the last expected event is processed::

    from fanpin.baselines.raw_aiokafka import run_sync
    result = run_sync("127.0.0.1:29092", "bench.household-events",
                      {2024: Decimal("7800")}, expected_events=140_000)
    print(result.rate)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.events import (
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    RosterMember,
    decode_event,
)
from streams.rules.config import RuleConfig
from streams.rules.engine import Policy, step
from streams.rules.state import HouseholdState

_HOUSEHOLD_EVENTS = (IncomeReport, MedicalSettlement, EmploymentEvent, RosterMember)


@dataclass(frozen=True)
class RawResult:
    events: int  # messages processed (including skipped ones)
    seconds: float  # from the first record received to the last processed
    alerts: int = 0
    skipped: int = 0  # undecodable or not household events
    households: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        # consumer.partitions_for_topic only knows subscribed topics, and topics() does not
        # keep the metadata it fetches: ask the client for the whole cluster's.
        cluster = await consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic)
        if parts:
            return set(parts)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no partitions after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def run(bootstrap: str, topic: str, lines: dict[int, Decimal], expected_events: int,
              *, config: RuleConfig | None = None, max_records: int = 10_000,
              poll_timeout_ms: int = 100, idle_timeout: float = 60.0,
              client_id: str = "fanpin-baseline-raw") -> RawResult:
    """Process ``expected_events`` messages of ``topic`` from the beginning. Raises
    ``TimeoutError`` when no record arrives for ``idle_timeout`` seconds before that."""
    policy = Policy(lines=dict(lines), config=config or RuleConfig.load())
    states: dict[bytes, HouseholdState] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id,
                                group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p)
               for p in sorted(await _partitions(consumer, topic, idle_timeout))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        events = alerts = skipped = 0
        first: float | None = None
        last = time.perf_counter()
        last_seen = time.monotonic()
        while events < expected_events:
            batches = await consumer.getmany(timeout_ms=poll_timeout_ms,
                                             max_records=max_records)
            if not batches:
                if time.monotonic() - last_seen > idle_timeout:
                    raise TimeoutError(f"only {events} of {expected_events} events on "
                                       f"{topic} after {idle_timeout:.0f}s without records")
                continue
            last_seen = time.monotonic()
            if first is None:
                first = time.perf_counter()
            for records in batches.values():
                for msg in records:
                    events += 1
                    try:
                        ev = decode_event(msg.value)  # type: ignore[arg-type]
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        skipped += 1
                        continue
                    if not isinstance(ev, _HOUSEHOLD_EVENTS):
                        skipped += 1
                        continue
                    key: bytes = msg.key  # type: ignore[assignment]
                    state = states.get(key)
                    if state is None:
                        state = HouseholdState()
                    state, raised = step(state, ev, policy)
                    states[key] = state
                    alerts += len(raised)
            last = time.perf_counter()
        return RawResult(events=events, seconds=last - (first or last), alerts=alerts,
                         skipped=skipped, households=len(states))
    finally:
        await consumer.stop()


def run_sync(bootstrap: str, topic: str, lines: dict[int, Decimal], expected_events: int,
             **kwargs: object) -> RawResult:
    """:func:`run` in its own event loop (plain asyncio, like the worker)."""
    return asyncio.run(run(bootstrap, topic, lines, expected_events, **kwargs))  # type: ignore[arg-type]

"""A consumer group's progress over time, read from its committed offsets.

A Faust worker commits an offset only once every agent is done with the message, so the
group's committed total on the input topic, polled every 100 ms, is a time series of
events processed. Its start (group join, table recovery, the first fetch) and its end (the
last commit interval) are not the worker's throughput, so the rate is taken between 10 %
and 90 % of the total (:func:`steady_rate`)::

    progress = poll_committed("127.0.0.1:29092", "fanpin-baseline-faust",
                              "bench.household-events")
    rate = steady_rate(progress.series, progress.total)  # or progress.rate()

Offsets count messages on Apache Kafka (no transactions here). On the tansu stand-in broker
end offsets are wrong (PERF-NOTES.md), so the total there must be the number of messages
published, passed as ``total``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

Series = list[tuple[float, int]]  # (seconds since polling started, committed total)


@dataclass
class Progress:
    """What :func:`poll_committed` saw."""

    total: int  # the end offsets' sum (or the total asked for)
    series: Series = field(default_factory=list)
    started: float = 0.0  # time.monotonic() at t = 0
    reached: bool = False  # whether the committed total reached ``total``

    def rate(self, low: float = 0.1, high: float = 0.9) -> float:
        return steady_rate(self.series, self.total, low=low, high=high)

    @property
    def seconds(self) -> float:
        """From the first commit to the total reached (or the last sample)."""
        start = next((t for t, n in self.series if n > 0), None)
        return self.series[-1][0] - start if start is not None else 0.0


def interpolate_time(series: Sequence[tuple[float, int]], target: float) -> float:
    """The time at which the committed total reached ``target``, interpolated linearly
    between the last sample below it and the first at or above it. Raises ``ValueError``
    when the series never gets there."""
    prev: tuple[float, int] | None = None
    for t, n in series:
        if n >= target:
            if prev is None or n == prev[1]:
                return t
            t0, n0 = prev
            return t0 + (target - n0) / (n - n0) * (t - t0)
        prev = (t, n)
    raise ValueError(f"the series never reaches {target:g} "
                     f"(last: {series[-1][1] if series else 'no samples'})")


def steady_rate(series: Sequence[tuple[float, int]], total: int, *, low: float = 0.1,
                high: float = 0.9) -> float:
    """Events per second between ``low`` and ``high`` fractions of ``total`` (the first
    10 % and the last 10 % hold the start-up, the rebalance and the final commit).

    Commits come in steps (every commit interval), so the crossing times are interpolated
    between samples. Raises ``ValueError`` if the series does not reach ``high * total``
    or if both crossings fall at the same instant (too few samples to tell a rate)."""
    if not 0 <= low < high <= 1:
        raise ValueError(f"need 0 <= low < high <= 1, got {low}, {high}")
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    lo_n, hi_n = low * total, high * total
    t_lo = interpolate_time(series, lo_n)
    t_hi = interpolate_time(series, hi_n)
    if t_hi <= t_lo:
        raise ValueError("both crossings at the same instant: too few samples for a rate")
    return (hi_n - lo_n) / (t_hi - t_lo)


class GroupProgress:
    """Committed and end offsets of one group on one topic (kafka-python clients)."""

    def __init__(self, bootstrap: str, group: str, topic: str, **client_options: object) -> None:
        self.group = group
        self.topic = topic
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap,
                                      client_id="fanpin-baseline-measure", **client_options)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                      client_id="fanpin-baseline-measure", **client_options)

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()

    def __enter__(self) -> GroupProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def partitions(self) -> list[TopicPartition]:
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        return [TopicPartition(self.topic, p) for p in sorted(parts)]

    def end_total(self) -> int:
        tps = self.partitions()
        return sum(self.consumer.end_offsets(tps).values()) if tps else 0

    def committed_total(self) -> int:
        admin: object = self.admin
        if hasattr(admin, "list_group_offsets"):  # kafka-python 3
            offsets = self.admin.list_group_offsets({self.group: None}).get(self.group, {})
        else:  # kafka-python 2
            offsets = self.admin.list_consumer_group_offsets(self.group)
        return sum(max(meta.offset, 0) for tp, meta in offsets.items()
                   if tp.topic == self.topic)


def poll_committed(bootstrap: str, group: str, topic: str, *, total: int | None = None,
                   timeout: float = 600.0, interval: float = 0.1,
                   alive: Callable[[], object] | None = None,
                   **client_options: object) -> Progress:
    """Poll ``group``'s committed total on ``topic`` every ``interval`` seconds until it
    reaches ``total`` (default: the topic's end offsets, read once at the start) or
    ``timeout`` passes. ``alive()`` is called at every poll and may raise (e.g. when the
    worker process died). A timeout is not an error: ``Progress.reached`` tells."""
    with GroupProgress(bootstrap, group, topic, **client_options) as gp:
        goal = gp.end_total() if total is None else total
        progress = Progress(total=goal, started=time.monotonic())
        deadline = progress.started + timeout
        while True:
            try:
                done: int | None = gp.committed_total()
            except KafkaError as exc:
                # A fresh broker has no __consumer_offsets yet: the coordinator lookup
                # fails (retriably) until the worker's first FindCoordinator creates it.
                if not exc.retriable:
                    raise
                done = None
            now = time.monotonic()
            if done is not None:
                progress.series.append((now - progress.started, done))
                if done >= goal:
                    progress.reached = True
                    return progress
            if alive is not None:
                alive()
            if now > deadline:
                return progress
            time.sleep(max(0.0, interval - (time.monotonic() - now)))

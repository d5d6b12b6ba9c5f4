"""The shared send loop: parse a department file, publish its events with kafka-python,
and collect its rejects. One producer, a progress bar for big files.

Person and household events are published in batches (``EventBatch``): one message per
partition per :data:`BATCH_EVENTS` events (or :data:`BATCH_BYTES`), because a message's
fixed cost in kafka-python and in the worker is far bigger than a row's. Their partition is
``partition_of(key, partitions)``, the contract the worker relies on, whether batched or
not. Reference events and file receipts stay single keyed messages. A file's remaining
batches are sent before its receipt, so a receipt never precedes its rows."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import importlib
import logging
import multiprocessing as mp
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from kafka import KafkaProducer
from tqdm import tqdm

from fanpin.kafka_check import check_kafka
from fanpin.settings import Settings
from producers.common import FileError, ParseContext, Reject
from schemas.events import (
    EmploymentEvent,
    FeedFile,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    Region,
    RosterMember,
    encode,
    encode_batch,
    partition_of,
)

log = logging.getLogger(__name__)

PROGRESS_MIN_BYTES = 2 * 1024 * 1024  # show a bar for files bigger than this

#: A batch message is sent when it holds this many events ...
BATCH_EVENTS = 1000
#: ... or this many bytes of encoded events, whichever comes first. An event is at most a
#: few tens of KB (a line is at most 8192 characters), so a batch message stays well under
#: the 1 MB default message size limits of the producer and the broker.
BATCH_BYTES = 512 * 1024
#: The topics whose events are placed by ``partition_of`` (and batched).
PARTITIONED = frozenset({"person-events", "household-events"})

# (topic, key attribute, partitions or 0 for keyed messages, batches, their sizes in bytes)
_Route = tuple[str, str, int, list[list[bytes]], list[int]]


@dataclass
class PublishResult:
    events: int = 0
    rejects: list[Reject] = field(default_factory=list)
    file_errors: list[tuple[str, str]] = field(default_factory=list)  # (file, message)
    by_topic: dict[str, int] = field(default_factory=dict)
    receipts: list[FeedFile] = field(default_factory=list)

    def merge(self, other: PublishResult) -> None:
        self.events += other.events
        self.rejects += other.rejects
        self.file_errors += other.file_errors
        self.receipts += other.receipts
        for k, v in other.by_topic.items():
            self.by_topic[k] = self.by_topic.get(k, 0) + v


#: Each event type's topic (a name for ``Settings.topic``) and the attribute that is its key.
ROUTES: dict[type, tuple[str, str]] = {
    RosterMember: ("person-events", "person"),
    MedicalSettlement: ("person-events", "person"),
    EmploymentEvent: ("person-events", "person"),
    IncomeReport: ("household-events", "household_id"),
    MonitoringLine: ("reference", "id"),
    Region: ("reference", "id"),
    FeedFile: ("files", "feed"),
}


def route(settings: Settings, event: object) -> tuple[str, bytes]:
    """Which topic an event goes to, and its key (the partitioning key that keeps a
    person's or a household's events together and in order)."""
    r = ROUTES.get(type(event))
    if r is None:
        raise TypeError(f"no topic for {type(event).__name__}")
    name, attr = r
    return settings.topic(name), getattr(event, attr).encode()


def make_producer(settings: Settings) -> KafkaProducer:
    check_kafka(settings)  # a clear error now, not a send that blocks for a minute
    return KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="fanpin-publish",
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_in_flight_requests_per_connection=5,
        enable_idempotence=True,  # retries keep order and never duplicate
        **settings.kafka_client_options(),
    )


class Publisher:
    """Publishes department files. ``batch_events=1`` sends one message per person or
    household event (the plain per-row loop, kept as the benchmark's baseline); either way
    each event goes to its ``partition_of`` partition."""

    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer | None = None,
        *,
        batch_events: int = BATCH_EVENTS,
        batch_bytes: int = BATCH_BYTES,
        jobs: int = 1,
    ) -> None:
        if batch_events < 1:
            raise ValueError("batch_events must be at least 1")
        self.jobs = max(1, jobs)
        self._executor: ProcessPoolExecutor | None = None
        self.settings = settings
        self.producer = producer or make_producer(settings)
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self._partitions: dict[str, int] = {}

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        self.producer.flush()
        self.producer.close()

    def flush(self) -> None:
        self.producer.flush()

    def partitions(self, topic: str) -> int:
        """The partition count of a topic (asked of the broker once per topic)."""
        n = self._partitions.get(topic)
        if n is None:
            parts = self.producer.partitions_for(topic)
            if not parts:
                raise RuntimeError(f"topic {topic} has no partitions; create the topics first")
            n = self._partitions[topic] = len(parts)
        return n

    def _route(
        self, kind: type, batches: dict[str, tuple[list[list[bytes]], list[int]]]
    ) -> _Route:
        if kind not in ROUTES:
            raise TypeError(f"no topic for {kind.__name__}")
        name, attr = ROUTES[kind]
        topic = self.settings.topic(name)
        if name not in PARTITIONED:
            return topic, attr, 0, [], []
        n = self.partitions(topic)
        if topic not in batches:
            batches[topic] = ([[] for _ in range(n)], [0] * n)
        bufs, sizes = batches[topic]
        return topic, attr, n, bufs, sizes

    def publish_file(
        self, module: ModuleType, path: Path, rel: str, ctx: ParseContext, *, progress: bool = True
    ) -> PublishResult:
        size = path.stat().st_size if path.exists() else 0
        if self.jobs > 1 and self.batch_events > 1 and size >= PARALLEL_MIN_BYTES and \
                isinstance(module, ModuleType):
            return self._publish_parallel(module, path, rel, ctx, progress=progress)
        result = PublishResult()
        show = progress and size >= PROGRESS_MIN_BYTES
        bar = tqdm(
            total=_count_rows(path) if show else 0,
            unit="行",
            desc=rel,
            leave=False,
            disable=not show,
        )
        send = self.producer.send
        batched = self.batch_events > 1
        limit, limit_bytes = self.batch_events, self.batch_bytes
        # Per event type, filled on first use (this loop runs once per row): its topic, key
        # attribute, and for a partitioned topic its partition count and the topic's
        # batches being filled, one per partition (encoded events and their total size).
        routes: dict[type, _Route] = {}
        batches: dict[str, tuple[list[list[bytes]], list[int]]] = {}
        by_topic: dict[str, int] = {}
        events = 0
        try:
            for item in module.parse_file(path, rel, ctx):
                if isinstance(item, Reject):
                    result.rejects.append(item)
                    continue
                r = routes.get(type(item))
                if r is None:
                    r = routes[type(item)] = self._route(type(item), batches)
                topic, attr, n, bufs, sizes = r
                key = getattr(item, attr).encode()
                value = encode(item)
                if not n:
                    send(topic, key=key, value=value)
                elif not batched:
                    send(topic, key=key, value=value, partition=partition_of(key, n))
                else:
                    p = partition_of(key, n)
                    buf = bufs[p]
                    buf.append(value)
                    sizes[p] += len(value)
                    if len(buf) >= limit or sizes[p] >= limit_bytes:
                        send(topic, key=None, value=encode_batch(buf), partition=p)
                        bufs[p] = []
                        sizes[p] = 0
                events += 1
                by_topic[topic] = by_topic.get(topic, 0) + 1
                if show and events % 5000 == 0:
                    bar.update(5000)
        except FileError as exc:
            result.file_errors.append((rel, str(exc)))
            log.error("file rejected: %s: %s", rel, exc)
        finally:
            bar.close()
            result.events = events
            result.by_topic = by_topic
        # The rest of the file's batches, before its receipt. (After an unexpected error
        # nothing more is sent and no receipt either: the file must be published again,
        # and event ids make that idempotent.)
        rest = {(topic, p): buf for topic, (bufs, _) in batches.items()
                for p, buf in enumerate(bufs)}
        return self._finish(module, path, rel, result, rest)

    def _finish(self, module: ModuleType, path: Path, rel: str, result: PublishResult,
                rest: dict[tuple[str, int], list[bytes]]) -> PublishResult:
        """Send a file's last, partly filled batches, then its receipt."""
        send = self.producer.send
        for (topic, partition), buf in rest.items():
            if buf:
                send(topic, key=None, value=encode_batch(buf), partition=partition)
        receipt = receipt_of(module, path, rel, result)
        topic, key = route(self.settings, receipt)
        send(topic, key=key, value=encode(receipt))
        result.receipts.append(receipt)
        return result


    def _publish_parallel(self, module: ModuleType, path: Path, rel: str, ctx: ParseContext,
                          *, progress: bool) -> PublishResult:
        """One big file parsed in ``jobs`` processes, each taking an equal share of its
        lines (``ParseContext.share``) and returning its events already encoded and
        grouped by partition. This process sends them in file order: share 0's events of a
        partition before share 1's, so every partition still sees the file's order."""
        result = PublishResult()
        topics = {name: self.settings.topic(name) for name in PARTITIONED}
        partitions = {t: self.partitions(t) for t in topics.values()}
        shared = dataclasses.replace(ctx, pseudonyms={}, share=None)
        jobs = [_ShareJob(module.__name__, path, rel, shared, topics, partitions, k, self.jobs)
                for k in range(self.jobs)]
        bar = tqdm(total=self.jobs, unit="份", desc=rel, leave=False, disable=not progress)
        send = self.producer.send
        limit, limit_bytes = self.batch_events, self.batch_bytes
        bufs: dict[tuple[str, int], list[bytes]] = {}
        sizes: dict[tuple[str, int], int] = {}
        try:
            for share in self._pool().map(_parse_share, jobs):
                if isinstance(share, FileError):
                    raise share
                result.rejects += share.rejects
                result.events += share.events
                for topic, n in share.by_topic.items():
                    result.by_topic[topic] = result.by_topic.get(topic, 0) + n
                for (topic, p), values in share.groups.items():
                    buf = bufs.setdefault((topic, p), [])
                    size = sizes.get((topic, p), 0)
                    for value in values:
                        buf.append(value)
                        size += len(value)
                        if len(buf) >= limit or size >= limit_bytes:
                            send(topic, key=None, value=encode_batch(buf), partition=p)
                            buf.clear()
                            size = 0
                    sizes[(topic, p)] = size
                bar.update(1)
        except FileError as exc:
            result.file_errors.append((rel, str(exc)))
            log.error("file rejected: %s: %s", rel, exc)
        finally:
            bar.close()
        return self._finish(module, path, rel, result, bufs)

    def _pool(self) -> ProcessPoolExecutor:
        # forkserver: children start from a clean single-threaded process, not from this
        # one with the Kafka producer's threads running.
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.jobs,
                                                 mp_context=mp.get_context("forkserver"))
        return self._executor


#: Files at least this big are parsed in ``Publisher.jobs`` processes.
PARALLEL_MIN_BYTES = 1024 * 1024


@dataclass
class _ShareJob:
    module: str
    path: Path
    rel: str
    ctx: ParseContext
    topics: dict[str, str]  # topic name -> topic
    partitions: dict[str, int]  # topic -> partition count
    k: int
    jobs: int


@dataclass
class _Share:
    groups: dict[tuple[str, int], list[bytes]]
    rejects: list[Reject]
    by_topic: dict[str, int]
    events: int


def _parse_share(job: _ShareJob) -> _Share | FileError:
    """In a parse process: share ``k`` of a file, its events encoded and grouped by
    (topic, partition) in file order."""
    module = importlib.import_module(job.module)
    ctx = dataclasses.replace(job.ctx, share=(job.k, job.jobs))
    out = _Share({}, [], {}, 0)
    routes: dict[type, tuple[str, str, int]] = {}
    try:
        for item in module.parse_file(job.path, job.rel, ctx):
            if isinstance(item, Reject):
                out.rejects.append(item)
                continue
            r = routes.get(type(item))
            if r is None:
                name, attr = ROUTES[type(item)]
                if name not in job.topics:
                    raise TypeError(f"{type(item).__name__} cannot be published in shares")
                topic = job.topics[name]
                r = routes[type(item)] = (topic, attr, job.partitions[topic])
            topic, attr, n = r
            group = (topic, partition_of(getattr(item, attr).encode(), n))
            values = out.groups.get(group)
            if values is None:
                values = out.groups[group] = []
            values.append(encode(item))
            out.events += 1
            out.by_topic[topic] = out.by_topic.get(topic, 0) + 1
    except FileError as exc:
        return exc
    return out


def receipt_of(module: ModuleType, path: Path, rel: str, result: PublishResult) -> FeedFile:
    """The receipt of one published file (rows in, rejects by reason code)."""
    from producers import feed_of

    feed = feed_of(module)
    digest = hashlib.sha256()
    if path.exists():
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    sha = digest.hexdigest()
    rejects: dict[str, int] = {}
    for r in result.rejects:
        rejects[r.code] = rejects.get(r.code, 0) + 1
    error = next((msg for f, msg in result.file_errors if f == rel), None)
    return FeedFile(
        id=hashlib.sha256(f"{feed}|{rel}|{sha}".encode()).hexdigest()[:32],
        feed=feed, dept=module.DEPARTMENT, file=rel, sha256=sha,
        rows_accepted=result.events, rejects=rejects,
        published_at=dt.datetime.now(dt.UTC), file_error=error[:500] if error else None)


def _count_rows(path: Path) -> int:
    with path.open("rb") as fh:
        return max(sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1, 0)


def write_rejects(
    path: Path, rejects: Iterable[Reject], file_errors: Iterable[tuple[str, str]] = ()
) -> int:
    """The reject report departments act on: 文件, 行号, 原因 (header is line 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["文件", "行号", "原因"])
        for file, message in file_errors:
            out.writerow([file, 0, f"file_error: {message}"])
            n += 1
        for r in sorted(rejects, key=lambda r: (r.file, r.line)):
            out.writerow([r.file, r.line, r.reason])
            n += 1
    return n



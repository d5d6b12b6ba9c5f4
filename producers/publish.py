"""The shared send loop: parse a department file, publish its events with kafka-python,
and collect its rejects. One producer, keyed messages, a progress bar for big files."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from kafka import KafkaProducer
from tqdm import tqdm

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
)

log = logging.getLogger(__name__)

PROGRESS_MIN_BYTES = 2 * 1024 * 1024  # show a bar for files bigger than this


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


def route(settings: Settings, event: object) -> tuple[str, bytes]:
    """Which topic an event goes to, and its key (the partitioning key that keeps a
    person's or a household's events together and in order)."""
    if isinstance(event, RosterMember | MedicalSettlement | EmploymentEvent):
        return settings.topic("person-events"), event.person.encode()
    if isinstance(event, IncomeReport):
        return settings.topic("household-events"), event.household_id.encode()
    if isinstance(event, MonitoringLine | Region):
        return settings.topic("reference"), event.id.encode()
    if isinstance(event, FeedFile):
        return settings.topic("files"), event.feed.encode()
    raise TypeError(f"no topic for {type(event).__name__}")


def make_producer(settings: Settings) -> KafkaProducer:
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
    def __init__(self, settings: Settings, producer: KafkaProducer | None = None) -> None:
        self.settings = settings
        self.producer = producer or make_producer(settings)

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()

    def flush(self) -> None:
        self.producer.flush()

    def publish_file(
        self, module: ModuleType, path: Path, rel: str, ctx: ParseContext, *, progress: bool = True
    ) -> PublishResult:
        result = PublishResult()
        size = path.stat().st_size if path.exists() else 0
        show = progress and size >= PROGRESS_MIN_BYTES
        bar = tqdm(
            total=_count_rows(path) if show else 0,
            unit="行",
            desc=rel,
            leave=False,
            disable=not show,
        )
        send = self.producer.send
        try:
            for item in module.parse_file(path, rel, ctx):
                if isinstance(item, Reject):
                    result.rejects.append(item)
                    continue
                topic, key = route(self.settings, item)
                send(topic, key=key, value=encode(item))
                result.events += 1
                result.by_topic[topic] = result.by_topic.get(topic, 0) + 1
                if show and result.events % 5000 == 0:
                    bar.update(5000)
        except FileError as exc:
            result.file_errors.append((rel, str(exc)))
            log.error("file rejected: %s: %s", rel, exc)
        finally:
            bar.close()
        receipt = receipt_of(module, path, rel, result)
        topic, key = route(self.settings, receipt)
        send(topic, key=key, value=encode(receipt))
        result.receipts.append(receipt)
        return result


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



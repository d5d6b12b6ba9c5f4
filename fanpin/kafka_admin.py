"""Topic creation and progress checks (committed offsets against end offsets)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from fanpin.kafka_check import check_kafka
from fanpin.settings import Settings

log = logging.getLogger(__name__)

WORKER_GROUP_SUFFIX = "-worker"
SINK_GROUP_SUFFIX = "-sink"


def worker_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}{WORKER_GROUP_SUFFIX}"


def sink_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}{SINK_GROUP_SUFFIX}"


def topic_layout(settings: Settings) -> dict[str, int]:
    p = settings.partitions
    return {
        settings.topic("reference"): 1,
        settings.topic("person-events"): p,
        settings.topic("household-events"): p,
        settings.topic("alerts"): p,
        settings.topic("dead-letters"): 1,
        settings.topic("files"): 1,
    }


#: The worker's state stores (streams.store); each keeps its state in
#: ``<worker group>-<store>-changelog``.
WORKER_STORES = ("roster", "roster-pending", "households")

#: Changelog topic settings: compacted, with segments small enough that the cleaner keeps
#: a store's changelog near one record per key (which is what recovery has to read).
CHANGELOG_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(64 * 1024 * 1024),
                    "min.cleanable.dirty.ratio": "0.2"}


def changelog_topic(settings: Settings, store: str) -> str:
    return f"{worker_group(settings)}-{store}-changelog"


def changelog_layout(settings: Settings) -> dict[str, int]:
    """The worker stores' changelog topics, partitioned like the topics they follow.

    Created up front, compacted, so two workers starting together never see one of them
    missing or half-created."""
    return {changelog_topic(settings, s): settings.partitions for s in WORKER_STORES}


def pipeline_groups(settings: Settings) -> dict[str, list[str]]:
    """Each consumer group of the pipeline and the topics it must keep up with."""
    return {
        worker_group(settings): [settings.topic("person-events"),
                                 settings.topic("household-events")],
        sink_group(settings): [settings.topic("alerts"), settings.topic("files")],
    }


class Admin:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Fails fast, saying why, when the brokers cannot be reached or refuse the
        # credentials (the clients below would retry for a minute and then say little).
        check_kafka(settings)
        opts = settings.kafka_client_options()
        self.admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                      client_id="fanpin-admin", **opts)
        self.consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                      client_id="fanpin-admin", enable_auto_commit=False, **opts)

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()

    def ensure_topics(self) -> None:
        existing = set(self.admin.list_topics())
        rf = self.settings.replication_factor
        wanted = [NewTopic(name, n, rf) for name, n in topic_layout(self.settings).items()
                  if name not in existing]
        wanted += [NewTopic(name, n, rf, topic_configs=dict(CHANGELOG_CONFIG))
                   for name, n in changelog_layout(self.settings).items()
                   if name not in existing]
        if wanted:
            try:
                self.admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(self.consumer.partitions_for_topic(t.name) for t in wanted):
                    break
                time.sleep(0.2)

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        parts = self.consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        return dict(self.consumer.end_offsets(tps)) if tps else {}

    def committed(self, group: str) -> dict[TopicPartition, int]:
        offsets = self.admin.list_group_offsets({group: None}).get(group, {})
        return {tp: meta.offset for tp, meta in offsets.items()}

    def partition_lag(self, group: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """Messages published to each partition of ``topics`` and not yet committed by
        ``group`` (the group's offsets are read once for all topics)."""
        done = self.committed(group)
        return {tp: max(0, end - max(done.get(tp, 0), 0))
                for topic in topics for tp, end in self.end_offsets(topic).items()}

    def group_members(self, group: str) -> int:
        try:
            desc = self.admin.describe_groups([group]).get(group) or {}
        except KafkaError:
            return 0
        return len(desc.get("members") or [])

    def wait_caught_up(self, group: str, topics: Iterable[str], *, timeout: float,
                       alive: callable | None = None) -> None:  # type: ignore[valid-type]
        """Block until ``group`` has committed everything published to ``topics`` so far."""
        topics = list(topics)
        deadline = time.monotonic() + timeout
        lag: int | str = "an unknown number of"
        while True:
            try:
                lag = sum(self.partition_lag(group, topics).values())
            except KafkaError as exc:
                # The broker is restarting or a partition has no leader for a moment: keep
                # waiting until the deadline rather than give up on the first error.
                log.info("waiting for the broker (%s)", type(exc).__name__)
                lag = "an unknown number of"
            else:
                if lag == 0:
                    return
            if alive is not None:
                alive()  # raises if a process we depend on died
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group} still has {lag} unprocessed messages on "
                                   f"{', '.join(topics)} after {timeout:.0f}s")
            time.sleep(0.1)

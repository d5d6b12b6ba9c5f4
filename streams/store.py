"""The worker's keyed state: plain dicts of bytes in memory, made durable by a compacted
changelog topic per store, rebuilt from it when the worker (re)gains a partition.

Why not Faust's ``Table``: every ``table[key] = value`` costs a full trip through Faust's
producer buffer, and Faust rebuilds a table by pushing every changelog record through its
stream machinery (about 3,000 households a second on this machine, so a province's
million households would take five minutes to recover). Here:

- values stay serialised (a household is a few hundred bytes), so a million households fit
  in memory and recovery is only "read the partition, put bytes in a dict";
- writes are gathered per batch of events and appended to the changelog as one record
  batch per partition, through the Faust app's own aiokafka producer. Faust flushes that
  producer before it commits any input offset, so a committed input offset always has its
  state (and its output) in Kafka: at-least-once, like a Table. Replaying the events after a
  crash is safe because folding an event into a household is idempotent;
- a partition is read back lazily, the first time an event needs it after an assignment,
  and forgotten when it is revoked (another worker may change it meanwhile).

A store partition is ``partition_of(key)``, the same function that places the key's events
on the input topic, so a store partition is always the input partition being processed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.events import partition_of

log = logging.getLogger(__name__)

class StateStore:
    """One named store: ``get``/``put`` by key, durable through ``topic``."""

    def __init__(self, name: str, topic: str, partitions: int, *, bootstrap: str,
                 client_options: Mapping[str, object],
                 producer: Callable[[], Any]) -> None:
        self.name = name
        self.topic = topic
        self.partitions = partitions
        self.bootstrap = bootstrap
        self.client_options = dict(client_options)
        self._producer = producer  # returns the started aiokafka producer
        self.data: dict[int, dict[bytes, bytes]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._dirty: dict[int, dict[bytes, bytes | None]] = {}
        self.recovered_records = 0
        self.recovery_seconds = 0.0

    # --- reading ----------------------------------------------------------------------

    def partition(self, key: bytes) -> int:
        return partition_of(key, self.partitions)

    async def ready(self, partition: int) -> dict[bytes, bytes]:
        """The partition's data, read back from the changelog first if this worker does not
        hold it (after a start, a crash or a rebalance)."""
        data = self.data.get(partition)
        if data is not None:
            return data
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            data = self.data.get(partition)
            if data is None:
                data = await self._recover(partition)
                self.data[partition] = data
        return data

    async def _recover(self, partition: int) -> dict[bytes, bytes]:
        started = time.perf_counter()
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
            auto_offset_reset="earliest", fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            **self.client_options)  # type: ignore[arg-type]
        data: dict[bytes, bytes] = {}
        records = 0
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                got = await consumer.getmany(tp, timeout_ms=1000, max_records=100_000)
                for batch in got.values():
                    records += len(batch)
                    for rec in batch:
                        if rec.value is None:
                            data.pop(rec.key, None)
                        else:
                            data[rec.key] = rec.value
        finally:
            await consumer.stop()
        took = time.perf_counter() - started
        self.recovered_records += records
        self.recovery_seconds += took
        log.info("store %s[%d]: read %d changelog records, %d keys, in %.2fs", self.name,
                 partition, records, len(data), took)
        return data

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop partitions this worker no longer owns; they are read back if it gets them
        again, because their owner in between may have changed them."""
        for p in partitions:
            self.data.pop(p, None)
            self._dirty.pop(p, None)

    # --- writing ----------------------------------------------------------------------

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Set (or, with None, delete) a key of a partition already made ``ready``. Later
        reads see it at once; ``flush`` appends it to the changelog."""
        data = self.data[partition]
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
        self._dirty.setdefault(partition, {})[key] = value

    async def flush(self) -> None:
        """Append every change since the last flush to the changelog, one record batch per
        partition. The records are handed to the producer, not awaited: Faust flushes the
        producer before it commits the input offsets these changes came from."""
        dirty, self._dirty = self._dirty, {}
        if not dirty:
            return
        producer = self._producer()
        for partition, changes in dirty.items():
            batch = producer.create_batch()
            for key, value in changes.items():
                if batch.append(key=key, value=value, timestamp=None) is None:  # batch full
                    await self._send(producer, batch, partition)
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a {self.name} record of {len(value or b'')} "
                                         "bytes is bigger than a producer batch")
            if batch.record_count():
                await self._send(producer, batch, partition)

    async def _send(self, producer: Any, batch: Any, partition: int) -> None:
        batch.close()
        await producer.send_batch(batch, self.topic, partition=partition)

    # --- figures ----------------------------------------------------------------------

    def keys(self) -> int:
        return sum(len(d) for d in self.data.values())

    def bytes_held(self) -> int:
        """Serialised bytes of keys and values held (what the changelog holds once
        compacted), without Python's per-object overhead."""
        return sum(len(k) + len(v) for d in self.data.values() for k, v in d.items())

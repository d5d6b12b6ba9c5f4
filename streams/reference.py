"""Reference data every worker needs whole: the monitoring lines (and region names).

The reference topic has one partition and is read in full by every worker, outside any
consumer group (like a Faust GlobalTable, but with an explicit "caught up" check): before a
household is judged for a year whose line is not known yet, the reader reads up to the
topic's current end, so a line published before the month's data is always seen.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.events import MonitoringLine, Region, decode_event

log = logging.getLogger(__name__)


class ReferenceData:
    def __init__(self) -> None:
        self.lines: dict[int, Decimal] = {}
        self.regions: dict[str, str] = {}

    def apply(self, raw: bytes) -> None:
        try:
            event = decode_event(raw)
        except Exception:  # noqa: BLE001 - a bad reference record must not stop the worker
            log.warning("skipping an undecodable reference record")
            return
        if isinstance(event, MonitoringLine):
            self.lines[event.year] = event.line
        elif isinstance(event, Region):
            self.regions[event.code] = event.name


class ReferenceReader:
    def __init__(self, *, topic: str, bootstrap: str, client_options: dict[str, object],
                 data: ReferenceData) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.client_options = client_options
        self.data = data
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
            auto_offset_reset="earliest", **self.client_options)  # type: ignore[arg-type]
        await self._consumer.start()
        self._consumer.assign([TopicPartition(self.topic, 0)])
        await self._consumer.seek_to_beginning(TopicPartition(self.topic, 0))
        await self.catch_up()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def catch_up(self) -> None:
        """Read everything published to the reference topic so far."""
        assert self._consumer is not None
        async with self._lock:
            tp = TopicPartition(self.topic, 0)
            end = (await self._consumer.end_offsets([tp]))[tp]
            while await self._consumer.position(tp) < end:
                batch = await self._consumer.getmany(tp, timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        if record.value is not None:
                            self.data.apply(record.value)

    async def follow(self) -> None:
        while True:
            await self.catch_up()
            await asyncio.sleep(1.0)

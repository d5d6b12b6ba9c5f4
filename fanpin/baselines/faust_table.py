"""Baseline: a plain Faust agent with a per-household ``Table`` running the detection rules.

One message per event, the textbook way: for each event, ``decode_event``, look the
household up in the table, ``step``, write the new state back (one changelog record), and
send each alert. Faust settings that matter for throughput are those of
``streams.app.create_app`` (memory store, raw serializers, 0.5 s commit interval, 5 ms
linger, 10 s session timeout, ``stream_wait_empty=False``, plain asyncio: the worker does not
use uvloop), so the worker's figure can be read as a ratio to this one.

Run it as its own process (``--without-web``: ``web_enabled=False`` alone still starts the
web server, and two workers on one machine would clash on port 6066)::

    FANPIN_BASELINE_BOOTSTRAP=127.0.0.1:29092 FANPIN_BASELINE_INPUT=bench.household-events \\
    FANPIN_BASELINE_LINES='{"2023": "7500", "2024": "7800"}' \\
        python -m fanpin.baselines.faust_table worker -l warn --without-web

Its progress is the consumer group's committed offsets on the input topic (the group is the
app id); see :mod:`fanpin.baselines.measure`.

Environment (read at import; nothing else here reads the environment):

``FANPIN_BASELINE_BOOTSTRAP``
    Kafka bootstrap servers, ``host:port[,host:port]`` (default ``127.0.0.1:19092``).
``FANPIN_BASELINE_INPUT``
    Input topic of household events, one JSON event per message keyed by household number
    (default ``baseline.household-events``).
``FANPIN_BASELINE_ALERTS``
    Output topic for the alerts (default ``baseline.alerts``).
``FANPIN_BASELINE_APP_ID``
    Faust app id, which is also the consumer group and the changelog topic's prefix
    (``<app id>-household-state-changelog``) (default ``fanpin-baseline-faust``).
``FANPIN_BASELINE_PARTITIONS``
    Partitions of the input topic, hence of the table's changelog (default ``6``).
``FANPIN_BASELINE_REPLICATION``
    Replication factor of the topics Faust creates (default ``1``).
``FANPIN_BASELINE_LINES``
    The monitoring lines as JSON, year to line in yuan per head and year, e.g.
    ``{"2023": "7500", "2024": "7800"}`` (default ``{}``: no month is judged, which
    measures folding only).
``FANPIN_BASELINE_RULES_FILE``
    A thresholds TOML file (default: the bundled ``streams/rules/rules.toml``).
``FANPIN_BASELINE_DATADIR``
    Faust's data folder (default ``<temp dir>/fanpin-baseline/<app id>``).
``FANPIN_BASELINE_SESSION_TIMEOUT``
    Consumer session timeout in seconds (default ``10``, as the worker). Group joins take
    about half of it; the steady-state rate excludes them anyway.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import faust
import msgspec

from schemas.events import (
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    RosterMember,
    decode_event,
    encode,
)
from streams.rules.config import RuleConfig
from streams.rules.engine import Policy, step
from streams.rules.state import dump_state, load_state

log = logging.getLogger("fanpin.baselines.faust_table")

ENV = "FANPIN_BASELINE_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV + name, "") or default


def parse_lines(raw: str) -> dict[int, Decimal]:
    """``{"2024": "7800"}`` -> ``{2024: Decimal("7800")}``."""
    data = json.loads(raw or "{}")
    if not isinstance(data, dict):
        raise ValueError(f"{ENV}LINES must be a JSON object of year to line, not {raw!r}")
    return {int(year): Decimal(str(line)) for year, line in data.items()}


BOOTSTRAP = _env("BOOTSTRAP", "127.0.0.1:19092")
INPUT_TOPIC = _env("INPUT", "baseline.household-events")
ALERTS_TOPIC = _env("ALERTS", "baseline.alerts")
APP_ID = _env("APP_ID", "fanpin-baseline-faust")
PARTITIONS = int(_env("PARTITIONS", "6"))
REPLICATION = int(_env("REPLICATION", "1"))
LINES = parse_lines(_env("LINES", "{}"))
RULES_FILE = _env("RULES_FILE", "")
DATADIR = _env("DATADIR", str(Path(tempfile.gettempdir()) / "fanpin-baseline" / APP_ID))
SESSION_TIMEOUT = float(_env("SESSION_TIMEOUT", "10"))

policy = Policy(lines=LINES, config=RuleConfig.load(Path(RULES_FILE) if RULES_FILE else None))

app = faust.App(
    APP_ID,
    broker=f"kafka://{BOOTSTRAP}",
    store="memory://",
    datadir=DATADIR,
    topic_partitions=PARTITIONS,
    topic_replication_factor=REPLICATION,
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
    broker_commit_interval=0.5,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=SESSION_TIMEOUT,
    broker_heartbeat_interval=1.0,
    producer_linger_ms=5,
    stream_wait_empty=False,
    table_cleanup_interval=3600.0,
    autodiscover=False,
)

input_topic = app.topic(INPUT_TOPIC, partitions=PARTITIONS)
alerts_topic = app.topic(ALERTS_TOPIC, partitions=PARTITIONS)
# household number -> HouseholdState (msgpack), like the worker's household-state table
household_table = app.Table("household-state", default=None, partitions=PARTITIONS,
                            key_type=bytes, value_type=bytes)

_HOUSEHOLD_EVENTS = (IncomeReport, MedicalSettlement, EmploymentEvent, RosterMember)


@app.agent(input_topic, name="baseline-detector")
async def detector(stream: Any) -> None:
    """One event at a time: decode, table lookup, step, table write, send the alerts."""
    async for event in stream.events():
        try:
            ev = decode_event(event.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("skipped an undecodable message: %s", exc)
            continue
        if not isinstance(ev, _HOUSEHOLD_EVENTS):
            log.warning("skipped a %s: not a household event", type(ev).__name__)
            continue
        state = load_state(household_table.get(event.key))
        state, alerts = step(state, ev, policy)
        household_table[event.key] = dump_state(state)
        for alert in alerts:
            await alerts_topic.send(key=alert.household_id.encode(), value=encode(alert),
                                    timestamp=event.message.timestamp)


if __name__ == "__main__":
    app.main()

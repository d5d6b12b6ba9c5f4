"""The Faust application: one app, built once from the settings.

Topics (all keyed so one household's or one person's events stay in order):
- ``<prefix>.reference``        monitoring lines and regions, one partition, read whole
- ``<prefix>.person-events``    roster, medical and employment rows, keyed by person pseudonym
- ``<prefix>.household-events`` income rows, and person rows after the roster join, keyed by
                                household number
- ``<prefix>.alerts``           early warnings, keyed by household number
- ``<prefix>.dead-letters``     messages no agent could handle, with the reason

Person and household events travel in batches (``schemas.events.EventBatch``), placed by
``partition_of``. The worker's state lives in ``streams.store.StateStore``s, each with a
compacted changelog topic ``<prefix>-worker-<store>-changelog``.
"""

from __future__ import annotations

import faust

from fanpin.kafka_admin import changelog_topic
from fanpin.settings import Settings, get_settings
from streams.credentials import broker_credentials
from streams.store import StateStore

WORKER_GROUP = "fanpin-worker"


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or get_settings()
    return faust.App(
        f"{settings.topic_prefix}-worker",
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=str(settings.var_dir / "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,
        # A message is a batch of up to ~1,000 events: a few in hand per agent is plenty.
        stream_buffer_maxsize=32,
        stream_wait_empty=False,
        table_cleanup_interval=3600.0,
        autodiscover=False,
    )


settings = get_settings()
app = create_app(settings)

reference_topic = app.topic(settings.topic("reference"), partitions=1)
person_topic = app.topic(settings.topic("person-events"))
household_topic = app.topic(settings.topic("household-events"))
alerts_topic = app.topic(settings.topic("alerts"))
dead_letter_topic = app.topic(settings.topic("dead-letters"), partitions=1)



def _store(name: str) -> StateStore:
    return StateStore(name, changelog_topic(settings, name), settings.partitions,
                      bootstrap=settings.bootstrap_servers,
                      client_options=settings.aiokafka_client_options(),
                      producer=app.producer._ensure_producer)  # type: ignore[attr-defined]


# person pseudonym -> the household it belongs to (a msgpack'd RosterLink)
roster_store = _store("roster")
# person pseudonym -> events that arrived before the person's roster row
pending_store = _store("roster-pending")
# household number -> HouseholdState (streams.rules.state.dump_state)
household_store = _store("households")

# Registers the agents and tasks on the app.
from streams import agents  # noqa: E402,F401

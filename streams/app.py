"""The Faust application: one app, built once from the settings.

Topics (all keyed so one household's or one person's events stay in order):
- ``<prefix>.reference``        monitoring lines and regions, one partition, read whole
- ``<prefix>.person-events``    roster, medical and employment rows, keyed by person pseudonym
- ``<prefix>.household-events`` income rows, and person rows after the roster join, keyed by
                                household number
- ``<prefix>.alerts``           early warnings, keyed by household number
- ``<prefix>.dead-letters``     messages no agent could handle, with the reason
"""

from __future__ import annotations

import ssl

import faust

from fanpin.settings import Settings, get_settings

WORKER_GROUP = "fanpin-worker"


def _credentials(settings: Settings):  # type: ignore[no-untyped-def]
    if settings.kafka_sasl_mechanism:
        password = settings.kafka_sasl_password.get_secret_value() if (
            settings.kafka_sasl_password) else ""
        ctx = None
        if settings.kafka_security_protocol.endswith("SSL"):
            ctx = ssl.create_default_context(
                cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "", password=password,
            mechanism=settings.kafka_sasl_mechanism, ssl_context=ctx)
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None))
    return None


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or get_settings()
    return faust.App(
        f"{settings.topic_prefix}-worker",
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=_credentials(settings),
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

# person pseudonym -> the household it belongs to (a msgpack'd RosterLink)
roster_table = app.Table("roster", default=None, partitions=settings.partitions,
                                key_type=bytes, value_type=bytes)
# person pseudonym -> events that arrived before the person's roster row
pending_table = app.Table("roster-pending", default=None, partitions=settings.partitions,
                                        key_type=bytes, value_type=bytes)
# household number -> HouseholdState (msgpack)
household_table = app.Table("household-state", default=None, partitions=settings.partitions,
                                         key_type=bytes, value_type=bytes)

# Registers the agents and tasks on the app.
from streams import agents  # noqa: E402,F401

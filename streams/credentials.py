"""The Kafka security settings in the form Faust takes them (``broker_credentials``)."""

from __future__ import annotations

import faust
import faust.types.auth

from fanpin.settings import Settings


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the Kafka security settings (the same TLS context and SASL user as
    every other client of Fanpin's): SASL over TLS or not, TLS alone, or nothing."""
    protocol = settings.kafka_protocol
    ctx = settings.kafka_ssl_context()
    if protocol.startswith("SASL_"):
        # With a context Faust speaks SASL_SSL, without one SASL_PLAINTEXT.
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_secret(),
            mechanism=settings.kafka_sasl_mechanism, ssl_context=ctx)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None

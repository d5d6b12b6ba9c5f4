"""Connecting to Kafka once, with a deadline, and saying why it failed.

Every command that talks to Kafka calls :func:`check_kafka` before it builds its clients.
Without it a wrong password or a missing CA file shows up as a client retrying for a
minute and then "unable to bootstrap" (kafka-python even drops the broker's "authentication
failed" answer), or as a Faust worker that waits forever. The check opens one connection to
a bootstrap server with the configured security settings (TLS handshake, SASL
authentication, a metadata request) and turns each failure into a
:class:`KafkaSetupError` that names the cause and the settings to look at. Passwords are
never part of a message.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fanpin.settings import Settings


class KafkaSetupError(RuntimeError):
    """Fanpin cannot connect to, or authenticate with, the Kafka brokers."""


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise KafkaSetupError(f"FANPIN_KAFKA_BOOTSTRAP_SERVERS: {server.strip()!r} is not "
                                  "host:port")
        out.append((host.strip("[]"), int(port)))
    return out


def _who(settings: Settings) -> str:
    protocol = settings.kafka_protocol
    if protocol.startswith("SASL_"):
        return (f"{protocol} as user {settings.kafka_sasl_username!r} with "
                f"{settings.kafka_sasl_mechanism}")
    return protocol


def describe_failure(settings: Settings, server: str, exc: BaseException,
                     timeout: float) -> str:
    """An operator's sentence for one failed attempt: what happened, what to check."""
    protocol = settings.kafka_protocol
    tls = settings.kafka_uses_tls
    sasl = protocol.startswith("SASL_")
    head = f"Kafka {server} ({_who(settings)}): "
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, KafkaSetupError):
        return head + text
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        hint = ("is this a TLS listener? Without TLS set FANPIN_KAFKA_SECURITY_PROTOCOL to "
                "PLAINTEXT or SASL_PLAINTEXT" if tls else
                "if the listener expects TLS, set FANPIN_KAFKA_SSL_CAFILE (SSL or SASL_SSL)")
        return head + f"no answer within {timeout:.0f}s; {hint}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or text
        if settings.kafka_ssl_cafile:
            hint = (f"check that {settings.kafka_ssl_cafile} (FANPIN_KAFKA_SSL_CAFILE) holds "
                    "the CA that signed the broker's certificate, and that the certificate "
                    "names this host")
        else:
            hint = ("set FANPIN_KAFKA_SSL_CAFILE to the CA bundle (PEM) that signed the "
                    "broker's certificate")
        return head + f"TLS: the broker's certificate is not trusted ({why}); {hint}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or text).upper()
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER_FAILURE" in reason:
            hint = ("this listener does not speak TLS; use PLAINTEXT or SASL_PLAINTEXT "
                    "(FANPIN_KAFKA_SECURITY_PROTOCOL)")
        elif "CERTIFICATE" in reason or "HANDSHAKE_FAILURE" in reason:
            hint = ("the broker did not accept this client's certificate (or wants one): set "
                    "FANPIN_KAFKA_SSL_CERTFILE and FANPIN_KAFKA_SSL_KEYFILE to a certificate "
                    "the broker trusts")
        else:
            hint = "check the TLS settings (FANPIN_KAFKA_SSL_*)"
        return head + f"TLS handshake failed ({exc.reason or text}); {hint}"
    if name == "SaslAuthenticationFailed":
        return head + (
            f"authentication failed ({text}). Check FANPIN_KAFKA_SASL_USERNAME and "
            "FANPIN_KAFKA_SASL_PASSWORD (or FANPIN_KAFKA_SASL_PASSWORD_FILE), and that the "
            f"brokers hold a {settings.kafka_sasl_mechanism} credential for this user")
    if name in ("UnsupportedSaslMechanismError", "UnsupportedSaslMechanism"):
        offers = text.partition("Enabled mechanisms are:")[2].strip()
        return head + (f"the broker does not enable {settings.kafka_sasl_mechanism}"
                       + (f" (it offers {offers})" if offers else "")
                       + "; set FANPIN_KAFKA_SASL_MECHANISM to one it offers")
    if name == "IllegalSaslStateError" or (sasl and "IllegalSaslState" in text):
        return head + ("the listener does not expect SASL; use PLAINTEXT or SSL "
                       "(FANPIN_KAFKA_SECURITY_PROTOCOL)")
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return head + f"cannot connect ({exc.strerror or text}); is the broker running there?"
    if isinstance(exc, ConnectionError | asyncio.IncompleteReadError) or \
            name == "KafkaConnectionError" or "closed" in text.lower():
        if tls and not sasl:
            hint = ("if the broker requires SASL authentication set FANPIN_KAFKA_SASL_MECHANISM,"
                    " _USERNAME and _PASSWORD; if it requires a client certificate set "
                    "FANPIN_KAFKA_SSL_CERTFILE and _KEYFILE")
        elif not sasl:
            hint = ("the listener probably requires authentication (SASL) or TLS: set "
                    "FANPIN_KAFKA_SASL_MECHANISM, FANPIN_KAFKA_SASL_USERNAME and "
                    "FANPIN_KAFKA_SASL_PASSWORD, and FANPIN_KAFKA_SSL_CAFILE for TLS")
        elif tls:
            hint = ("is this a TLS listener? Without TLS use SASL_PLAINTEXT "
                    "(FANPIN_KAFKA_SECURITY_PROTOCOL)")
        else:
            hint = ("if the listener uses TLS, set FANPIN_KAFKA_SSL_CAFILE (SASL_SSL); else "
                    "check the SASL settings")
        return head + f"the broker closed the connection; {hint}"
    return head + f"{name}: {text}"


async def _probe(settings: Settings, host: str, port: int, timeout: float) -> None:
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    options: dict[str, Any] = settings.aiokafka_client_options()
    conn = await asyncio.wait_for(
        create_conn(host, port, client_id="fanpin-check",
                    request_timeout_ms=int(timeout * 1000), **options),
        timeout)
    try:
        # A listener that wants SASL answers ApiVersions to anyone but closes on the first
        # real request, so ask for something.
        await asyncio.wait_for(conn.send(MetadataRequest([])), timeout)
    finally:
        conn.close()


async def _check(settings: Settings, timeout: float) -> None:
    failures: list[str] = []
    for host, port in _servers(settings.bootstrap_servers):
        try:
            await _probe(settings, host, port, timeout)
            return
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            failures.append(describe_failure(settings, f"{host}:{port}", exc, timeout))
    raise KafkaSetupError("cannot use Kafka: " + "; ".join(failures))


def check_kafka(settings: Settings, timeout: float | None = None) -> None:
    """Connect once to the first bootstrap server that answers, with TLS and SASL as
    configured, within ``timeout`` seconds per server; raise :class:`KafkaSetupError`
    saying why when none does."""
    timeout = timeout or settings.kafka_connect_timeout_seconds
    try:
        settings.aiokafka_client_options()  # reads the password file and the TLS files
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise KafkaSetupError(f"cannot use Kafka: the security settings cannot be loaded: "
                              f"{exc}") from None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_check(settings, timeout))
        return
    # Called from inside an event loop: check from a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _check(settings, timeout)).result()

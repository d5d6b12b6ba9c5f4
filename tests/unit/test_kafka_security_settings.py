"""Kafka security settings: the protocol they imply, what contradicts, what each client
library is given, and the reasons `check_kafka` gives (no broker needed here; the real
SCRAM/TLS broker is in tests/integration/test_kafka_security.py)."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import certifi
import faust
import pytest

from fanpin.kafka_check import KafkaSetupError, check_kafka, describe_failure
from fanpin.settings import Settings, SettingsError
from streams.credentials import broker_credentials

SECRET = "not-to-be-printed-7f3a"
CA = Path(certifi.where())  # any real PEM bundle serves as a CA file here


@pytest.fixture(autouse=True)
def _no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FANPIN_KAFKA"):
            monkeypatch.delenv(key)


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


SASL = {"kafka_sasl_mechanism": "SCRAM-SHA-256", "kafka_sasl_username": "fanpin",
        "kafka_sasl_password": SECRET}


@pytest.mark.parametrize(("kw", "protocol"), [
    ({}, "PLAINTEXT"),
    (SASL, "SASL_PLAINTEXT"),
    ({**SASL, "kafka_ssl_cafile": CA}, "SASL_SSL"),
    ({"kafka_ssl_cafile": CA}, "SSL"),
    ({"kafka_security_protocol": "ssl"}, "SSL"),  # set explicitly (any case): system CAs
    ({**SASL, "kafka_security_protocol": "SASL_SSL"}, "SASL_SSL"),
])
def test_the_protocol_follows_from_the_settings(kw: dict[str, object], protocol: str) -> None:
    assert make(**kw).kafka_protocol == protocol


@pytest.mark.parametrize(("kw", "says"), [
    ({"kafka_sasl_username": "fanpin", "kafka_sasl_password": SECRET},
     "FANPIN_KAFKA_SASL_MECHANISM is not"),
    ({**SASL, "kafka_security_protocol": "SSL"}, "use SASL_PLAINTEXT or SASL_SSL"),
    ({"kafka_security_protocol": "SASL_SSL"}, "needs FANPIN_KAFKA_SASL_MECHANISM"),
    ({"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_password": SECRET},
     "FANPIN_KAFKA_SASL_USERNAME is required"),
    ({"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "u"},
     "FANPIN_KAFKA_SASL_PASSWORD_FILE"),
    ({**SASL, "kafka_sasl_password_file": "/run/secrets/kafka"}, "not both"),
    ({**SASL, "kafka_ssl_cafile": CA, "kafka_security_protocol": "SASL_PLAINTEXT"},
     "use SSL or SASL_SSL"),
    ({"kafka_ssl_keyfile": "/k.pem"}, "needs FANPIN_KAFKA_SSL_CERTFILE"),
])
def test_contradictions_are_refused_without_echoing_the_password(
        kw: dict[str, object], says: str) -> None:
    with pytest.raises(SettingsError) as err:
        make(**kw)
    assert says in str(err.value)
    assert SECRET not in str(err.value)


def test_mechanism_names_are_normalised() -> None:
    s = make(**{**SASL, "kafka_sasl_mechanism": "scram_sha_512"})
    assert s.kafka_sasl_mechanism == "SCRAM-SHA-512"


def test_the_password_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    s = make(kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="fanpin",
             kafka_sasl_password_file=path)
    assert s.kafka_sasl_secret() == SECRET
    assert s.kafka_client_options()["sasl_plain_password"] == SECRET
    # A child process is given the file's name, not its content.
    env = s.as_env()
    assert env["FANPIN_KAFKA_SASL_PASSWORD_FILE"] == str(path)
    assert SECRET not in "".join(env.values())
    assert "FANPIN_KAFKA_SECURITY_PROTOCOL" not in env  # derived again from the same inputs

    path.unlink()
    with pytest.raises(FileNotFoundError, match="FANPIN_KAFKA_SASL_PASSWORD_FILE"):
        s.kafka_sasl_secret()
    with pytest.raises(KafkaSetupError, match="FANPIN_KAFKA_SASL_PASSWORD_FILE"):
        check_kafka(s, timeout=1)


def test_each_library_gets_the_same_security_in_its_own_form() -> None:
    s = make(**SASL, kafka_ssl_cafile=CA, kafka_ssl_check_hostname=False)
    kp = s.kafka_client_options()  # kafka-python: file names
    assert kp == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                  "sasl_plain_username": "fanpin", "sasl_plain_password": SECRET,
                  "ssl_check_hostname": False, "ssl_cafile": str(CA)}
    ak = s.aiokafka_client_options()  # aiokafka: a context, never ssl_cafile
    assert set(ak) == {"security_protocol", "sasl_mechanism", "sasl_plain_username",
                       "sasl_plain_password", "ssl_context"}
    ctx = ak["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2

    creds = broker_credentials(s)  # Faust
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-256"
    assert creds.username == "fanpin" and creds.password == SECRET
    assert SECRET not in repr(creds)


def test_faust_credentials_for_each_protocol() -> None:
    assert broker_credentials(make()) is None
    plain = broker_credentials(make(**SASL))
    assert isinstance(plain, faust.SASLCredentials)
    assert plain.protocol.value == "SASL_PLAINTEXT" and plain.ssl_context is None
    tls = broker_credentials(make(kafka_ssl_cafile=CA))
    assert isinstance(tls, faust.SSLCredentials)


def test_plaintext_gives_no_tls_or_sasl_options() -> None:
    s = make()
    assert s.kafka_client_options() == {"security_protocol": "PLAINTEXT"}
    assert s.aiokafka_client_options() == {"security_protocol": "PLAINTEXT"}
    assert s.kafka_ssl_context() is None


def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    s = make(kafka_ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(KafkaSetupError, match="FANPIN_KAFKA_SSL_CAFILE .*nope.pem"):
        check_kafka(s, timeout=1)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()


def test_a_broker_that_never_answers_is_given_up_on(silent_server: int) -> None:
    s = make(kafka_bootstrap_servers=f"127.0.0.1:{silent_server}")
    with pytest.raises(KafkaSetupError, match="no answer within 1s"):
        check_kafka(s, timeout=1)


def test_nothing_listening_is_reported_per_server() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the check
    s = make(kafka_bootstrap_servers=f"127.0.0.1:{port}")
    with pytest.raises(KafkaSetupError, match="cannot connect") as err:
        check_kafka(s, timeout=2)
    assert f"127.0.0.1:{port}" in str(err.value)


def test_reasons_name_the_settings_to_check() -> None:
    s = make(**SASL, kafka_ssl_cafile=CA)
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "unable to get local issuer certificate"
    assert "FANPIN_KAFKA_SSL_CAFILE" in describe_failure(s, "k:9093", cert, 5)

    class SaslAuthenticationFailed(Exception):
        pass

    text = describe_failure(s, "k:9093", SaslAuthenticationFailed("invalid credentials"), 5)
    assert "authentication failed" in text and "FANPIN_KAFKA_SASL_PASSWORD" in text
    assert "as user 'fanpin' with SCRAM-SHA-256" in text
    assert SECRET not in text
    closed = describe_failure(make(), "k:9092", ConnectionResetError("reset"), 5)
    assert "requires authentication (SASL) or TLS" in closed

"""Fanpin against a Kafka broker that demands SCRAM authentication and TLS.

A broker of its own (tests/fixtures/secure_kafka.py) with SASL_PLAINTEXT and SASL_SSL
listeners taking SCRAM-SHA-256 and SCRAM-SHA-512, and an SSL listener that requires client
certificates. Fanpin is configured only through FANPIN_* variables, as an operator would:

- with the right credentials the whole pipeline runs over SCRAM and TLS (topic creation,
  the producer, the Faust worker with its own changelog consumers, the sink, the lag
  check), over SCRAM without TLS (password from a file), and over mutual TLS;
- without credentials, with a wrong password or user, without the CA and without a client
  certificate, every command stops within its deadline with a reason an operator can act
  on, and no password is ever printed or logged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.sink import AlertSink
from fanpin.broker import REPO_ROOT
from fanpin.kafka_admin import Admin, sink_group, topic_layout, worker_group
from fanpin.kafka_check import KafkaSetupError
from fanpin.privacy import Pseudonymiser
from fanpin.settings import Settings
from fanpin.status import gather
from producers import FORMATS
from producers.common import ParseContext
from producers.publish import Publisher
from tests.fixtures.kafka import free_port
from tests.fixtures.secure_kafka import SecureBroker
from tests.helpers import SAMPLE, read_csv

pytestmark = pytest.mark.integration

PASSWORD = "pw-" + uuid.uuid4().hex  # the SCRAM user's, made up per run
WRONG = "wrong-" + uuid.uuid4().hex
USER = "fanpin"


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[SecureBroker]:
    missing = [tool for tool in ("java", "openssl") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{' and '.join(missing)} required in CI for the secured broker")
        pytest.skip(f"no {' or '.join(missing)}: cannot run the secured broker")
    home = Path(tempfile.mkdtemp(prefix="fanpin-kafka-secure-"))
    broker = SecureBroker(home=home, port=free_port(), controller_port=free_port(),
                          sasl_port=free_port(), sasl_ssl_port=free_port(),
                          ssl_port=free_port(), libs=REPO_ROOT / "var" / "kafka" / "libs",
                          users={USER: PASSWORD})
    try:
        broker.start()
        yield broker
    finally:
        broker.remove()  # stops the process it started (by its PID file), removes the folder


def security(broker: SecureBroker, listener: str, *, mechanism: str | None = None,
             user: str | None = USER, password: str | None = PASSWORD, ca: bool = True,
             client_cert: bool = False, protocol: str | None = None) -> dict[str, str]:
    """FANPIN_* variables for one listener; the protocol itself is left to be derived
    unless ``protocol`` is given."""
    env = {"FANPIN_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap(listener)}
    if protocol:
        env["FANPIN_KAFKA_SECURITY_PROTOCOL"] = protocol
    if mechanism:
        env["FANPIN_KAFKA_SASL_MECHANISM"] = mechanism
        if user:
            env["FANPIN_KAFKA_SASL_USERNAME"] = user
        if password:
            env["FANPIN_KAFKA_SASL_PASSWORD"] = password
    if ca and listener in ("SASL_SSL", "SSL"):
        env["FANPIN_KAFKA_SSL_CAFILE"] = str(broker.tls.ca)
    if client_cert:
        env["FANPIN_KAFKA_SSL_CERTFILE"] = str(broker.tls.client_cert)
        env["FANPIN_KAFKA_SSL_KEYFILE"] = str(broker.tls.client_key)
    return env


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "FANPIN_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:10]}",
        "FANPIN_VAR_DIR": str(tmp_path / "var"),
        "FANPIN_PSEUDONYM_KEY": "test-key-" + uuid.uuid4().hex,
        "FANPIN_PARTITIONS": "2",
        "FANPIN_WORKER_METRICS_PORT": "0",
        "FANPIN_SINK_METRICS_PORT": "0",
        "FANPIN_KAFKA_CONNECT_TIMEOUT_SECONDS": "20",
    }


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """``fanpin ARGS`` with only these FANPIN_* variables (none from the caller's shell)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FANPIN_")}
    proc = subprocess.run([sys.executable, "-m", "fanpin", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    return proc.returncode, proc.stdout + proc.stderr


def settings_of(env: dict[str, str]) -> Settings:
    kw = {k.removeprefix("FANPIN_").lower(): v for k, v in env.items()}
    return Settings(**kw)


def assert_no_password(text: str) -> None:
    assert PASSWORD not in text
    assert WRONG not in text


def small_scenario(root: Path) -> Path:
    """Reference data, the roster and two months of every feed: enough for alerts."""
    for name in ("regions.csv", "thresholds.csv", "roster.csv"):
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / name, root / name)
    for folder in ("medical", "employment", "income"):
        (root / folder).mkdir()
        for month in ("2024-11", "2024-12"):
            shutil.copy(SAMPLE / folder / f"{month}.csv", root / folder / f"{month}.csv")
    return root


# --- the right credentials ------------------------------------------------------------------

def test_the_pipeline_runs_over_scram_and_tls(secure_kafka: SecureBroker,
                                              tmp_path: Path) -> None:
    """SASL_SSL with SCRAM-SHA-256 (derived from mechanism + CA file): `fanpin replay`
    creates the topics, starts a Faust worker and a sink with the same settings, waits for
    each to join its group, publishes and waits until both have committed everything."""
    env = {**base_env(tmp_path), **security(secure_kafka, "SASL_SSL", mechanism="SCRAM-SHA-256")}
    scenario = small_scenario(tmp_path / "scenario")
    code, out = run(["replay", str(scenario), "--timeout", "150",
                     "--export", str(tmp_path / "watchlist.csv")], env, timeout=300)
    assert code == 0, out
    assert "alerts:" in out
    assert read_csv(tmp_path / "watchlist.csv"), "the worker raised no alert over SASL_SSL"

    settings = settings_of(env)
    assert settings.kafka_protocol == "SASL_SSL"
    admin = Admin(settings)
    try:
        names = set(admin.admin.list_topics())
        assert set(topic_layout(settings)) <= names
        # The worker's changelogs were written (and, on assignment, read back) over TLS.
        assert any(n.startswith(f"{worker_group(settings)}-") and n.endswith("-changelog")
                   for n in names)
        assert admin.committed(worker_group(settings))
        assert admin.committed(sink_group(settings))
    finally:
        admin.close()

    # `fanpin status` reads the lag over the same connection settings.
    code, out = run(["status", "--json"], env)
    status = json.loads(out[out.index("{"):])
    assert status["broker_up"], status
    assert all(sum(g["lag"].values()) == 0 for g in status["groups"]), status["groups"]
    assert_no_password(out)
    for log in (tmp_path / "var" / "logs").glob("*.log"):
        assert_no_password(log.read_text(errors="replace"))


def test_scram_sha_512_without_tls_with_the_password_in_a_file(
        secure_kafka: SecureBroker, tmp_path: Path) -> None:
    """SASL_PLAINTEXT with SCRAM-SHA-512: `fanpin publish` sends a file, and the sink's
    kafka-python consumer reads it back and commits."""
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    sec = security(secure_kafka, "SASL_PLAINTEXT", mechanism="SCRAM-SHA-512", password=None)
    env = {**base_env(tmp_path), **sec, "FANPIN_KAFKA_SASL_PASSWORD_FILE": str(secret)}
    code, out = run(["publish", "regions", str(SAMPLE / "regions.csv")], env)
    assert code == 0, out
    assert "published" in out
    assert_no_password(out)

    settings = settings_of(env)
    assert settings.kafka_protocol == "SASL_PLAINTEXT"
    sink = AlertSink(settings)
    worker = threading.Thread(target=sink.run, daemon=True)
    worker.start()
    admin = Admin(settings)
    try:
        admin.wait_caught_up(sink_group(settings), [settings.topic("files"),
                                                    settings.topic("reference")], timeout=90)
    finally:
        sink.stop.set()
        worker.join(30)
        sink.close()
        admin.close()
    feeds = {f.feed: f for f in gather(settings).feeds}
    assert feeds["regions"].rows_accepted > 0


def test_mutual_tls_with_a_client_certificate(secure_kafka: SecureBroker,
                                              tmp_path: Path) -> None:
    env = {**base_env(tmp_path), **security(secure_kafka, "SSL", client_cert=True)}
    settings = settings_of(env)
    assert settings.kafka_protocol == "SSL"
    admin = Admin(settings)
    try:
        admin.ensure_topics()
        publisher = Publisher(settings)
        try:
            ctx = ParseContext(Pseudonymiser(b"0123456789abcdef-test"), None)
            result = publisher.publish_file(FORMATS["regions"], SAMPLE / "regions.csv",
                                            "regions.csv", ctx, progress=False)
        finally:
            publisher.close()
        assert result.events > 0
        assert sum(admin.end_offsets(settings.topic("reference")).values()) == result.events
    finally:
        admin.close()


# --- refused, with a reason -----------------------------------------------------------------

REFUSALS = {
    # name: (listener, security() arguments, what the message must say)
    "no credentials": ("SASL_PLAINTEXT", {}, "requires authentication (SASL)"),
    "wrong password": ("SASL_PLAINTEXT", {"mechanism": "SCRAM-SHA-256", "password": WRONG},
                       "authentication failed"),
    "unknown user": ("SASL_PLAINTEXT", {"mechanism": "SCRAM-SHA-512", "user": "nobody"},
                     "authentication failed"),
    "TLS without the CA": ("SASL_SSL", {"mechanism": "SCRAM-SHA-256", "ca": False,
                                        "protocol": "SASL_SSL"}, "not trusted"),
    "TLS listener, TLS not set": ("SASL_SSL", {"mechanism": "SCRAM-SHA-256", "ca": False},
                                  "FANPIN_KAFKA_SSL_CAFILE"),
    "no client certificate": ("SSL", {}, "client certificate"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_publish_is_refused_with_a_reason(secure_kafka: SecureBroker, tmp_path: Path,
                                          case: str) -> None:
    listener, kw, reason = REFUSALS[case]
    env = {**base_env(tmp_path), **security(secure_kafka, listener, **kw)}
    code, out = run(["publish", "regions", str(SAMPLE / "regions.csv")], env)
    assert code == 1, out
    assert "Error: cannot use Kafka" in out and reason in out, out
    assert "Traceback" not in out, out
    assert_no_password(out)


def test_worker_status_and_library_refuse_a_wrong_password(secure_kafka: SecureBroker,
                                                           tmp_path: Path) -> None:
    """The Faust worker stops at once (it would otherwise retry forever), `fanpin status`
    reports the broker DOWN with the reason, and the Python API raises the same error."""
    env = {**base_env(tmp_path),
           **security(secure_kafka, "SASL_SSL", mechanism="SCRAM-SHA-256", password=WRONG)}
    code, out = run(["worker"], env)
    assert code == 1, out
    assert "authentication failed" in out and "FANPIN_KAFKA_SASL_PASSWORD" in out, out
    assert_no_password(out)

    code, out = run(["status"], env)
    assert code == 1, out
    assert "DOWN" in out and "authentication failed" in out, out
    assert_no_password(out)

    with pytest.raises(KafkaSetupError, match="authentication failed") as err:
        Publisher(settings_of(env))
    assert_no_password(str(err.value))

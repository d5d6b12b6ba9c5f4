"""The local single-node Apache Kafka broker (KRaft mode), run from its jars.

Used when no bootstrap servers are configured: ``fanpin`` fetches the jars with Maven
(scripts/fetch-kafka.sh), formats the storage once with ``kafka.tools.StorageTool`` and
starts ``kafka.Kafka`` in the background. Its data and PID file live under
``var/kafka/``. A broker that is already running there is reused, not restarted.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-kafka.sh"
LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j.properties"


class BrokerError(RuntimeError):
    pass


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class LocalBroker:
    home: Path  # var/kafka
    port: int = 19092
    controller_port: int = 19093
    libs: Path | None = None
    heap: str = "768m"
    extra_config: dict[str, str] | None = None
    extra_jvm_args: tuple[str, ...] = ()

    @property
    def libs_dir(self) -> Path:
        return self.libs or self.home / "libs"

    @property
    def data_dir(self) -> Path:
        return self.home / f"data-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / f"broker-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"broker-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fetch_jars(self) -> None:
        if any(self.libs_dir.glob("kafka_2.13-*.jar")):
            return
        log.info("fetching the Apache Kafka jars from Maven Central")
        subprocess.run(["bash", str(FETCH_SCRIPT), str(self.libs_dir)], check=True)

    def _classpath(self) -> str:
        return str(self.libs_dir / "*")

    def config(self) -> dict[str, str]:
        cfg = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir.resolve()),
            "num.partitions": "4",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "-1",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        cfg.update(self.extra_config or {})
        return cfg

    def _write_config(self) -> Path:
        path = self.home / f"server-{self.port}.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.config().items()))
        return path

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.read_pid()
        return pid is not None and pid_alive(pid) and port_open(self.port)

    def ensure_started(self, timeout: float = 90.0) -> bool:
        """Start the broker unless one already answers on the port. Returns True when this
        call started it."""
        if port_open(self.port):
            log.info("reusing the Kafka broker already listening on %s", self.bootstrap)
            return False
        self.home.mkdir(parents=True, exist_ok=True)
        self.fetch_jars()
        config = self._write_config()
        java = os.environ.get("JAVA_HOME")
        java_bin = str(Path(java) / "bin" / "java") if java else "java"
        if not (self.data_dir / "meta.properties").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cid = new_cluster_id()
            subprocess.run(
                [java_bin, f"-Dlog4j.configuration=file:{LOG4J}", "-cp", self._classpath(),
                 "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(config)],
                check=True, stdout=subprocess.DEVNULL,
            )
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                [java_bin, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
                 f"-Dlog4j.configuration=file:{LOG4J}", *self.extra_jvm_args,
                 "-cp", self._classpath(), "kafka.Kafka", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(
                    f"the Kafka broker exited with code {proc.returncode}; see {self.log_file}")
            if port_open(self.port) and self._answers():
                log.info("started the local Kafka broker on %s (pid %d)", self.bootstrap, proc.pid)
                return True
            time.sleep(0.3)
        self.stop()
        raise BrokerError(
            f"the Kafka broker did not come up in {timeout:.0f}s; see {self.log_file}")

    def _answers(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            try:
                admin.list_topics()
            finally:
                admin.close()
            return True
        except KafkaError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker this folder's PID file names (never anything else)."""
        pid = self.read_pid()
        if pid is None or not pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """kill -9, for fault tests."""
        pid = self.read_pid()
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)

    def restart(self, *, kill: bool = False, timeout: float = 120.0) -> None:
        """Stop the broker (SIGTERM, or SIGKILL with ``kill``) and start it again on the same
        ports and data folder, for fault tests. Returns once it answers again."""
        if kill:
            self.kill()
            self.pid_file.unlink(missing_ok=True)
        else:
            self.stop()
        deadline = time.monotonic() + 30
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.2)  # the old process's listener is gone once the port refuses
        if not self.ensure_started(timeout=timeout):
            raise BrokerError(f"port {self.port} still answers after the broker was stopped")


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, never starting with "-".

    kafka-storage reads ``-t -Abc...`` as an unknown option (1 start in 64 failed before
    this); Kafka's own ``Uuid.randomUuid`` skips such ids for the same reason."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def local_broker_for(settings) -> LocalBroker:  # type: ignore[no-untyped-def]
    return LocalBroker(
        home=settings.var_dir / "kafka",
        port=settings.kafka_local_port,
        controller_port=settings.kafka_local_controller_port,
    )

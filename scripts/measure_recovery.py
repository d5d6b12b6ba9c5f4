"""How long a worker takes to recover per-household state after a crash or a move.

For each size N it fills the household-state changelog of a fresh topic prefix with N
households' state (real states: the sample's households after 24 months, re-keyed), starts
``fanpin worker``, and times how long until Faust reports the worker ready, and how long
it spent reading the changelogs (from Faust's own log lines). An empty changelog is
measured first, in the same run, as the baseline of start-up and group join.

    .venv/bin/python scripts/measure_recovery.py 10000 50000

It uses the local broker (started if needed) and stops only the workers it started.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kafka import KafkaProducer  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from fanpin.broker import local_broker_for  # noqa: E402
from fanpin.kafka_admin import Admin  # noqa: E402
from fanpin.privacy import Pseudonymiser  # noqa: E402
from fanpin.settings import Settings  # noqa: E402
from producers.common import Reject  # noqa: E402
from producers.scenario import parse_scenario  # noqa: E402
from schemas.events import MonitoringLine, encode  # noqa: E402
from streams.offline import OfflinePipeline  # noqa: E402

SAMPLE = REPO / "data" / "sample"


def sample_states(key: bytes) -> tuple[list[bytes], list[MonitoringLine]]:
    events = [e for e in parse_scenario(SAMPLE, Pseudonymiser(key)) if not isinstance(e, Reject)]
    pipeline = OfflinePipeline().feed(events)
    lines = [e for e in events if isinstance(e, MonitoringLine)]
    return list(pipeline.states.values()), lines


STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def _at(log: Path, marker: str) -> dt.datetime | None:
    for line in log.read_text(errors="replace").splitlines():
        if marker in line and (m := STAMP.match(line)):
            # Faust logs local time; only differences are used
            return dt.datetime.strptime(m.group(1) + "+0000", "%Y-%m-%d %H:%M:%S,%f%z")
    return None


def measure(n: int, states: list[bytes], lines: list[MonitoringLine]) -> tuple[float, float, int]:
    """(seconds from start to ready, seconds reading the changelogs, changelog bytes)."""
    prefix = f"rec{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FANPIN_TOPIC_PREFIX": prefix, "FANPIN_LOG_LEVEL": "INFO",
           "FANPIN_PSEUDONYM_KEY": "recovery-measurement-key-0123456789"}
    settings = Settings(topic_prefix=prefix)
    admin = Admin(settings)
    admin.ensure_topics()
    changelog = f"{prefix}-worker-household-state-changelog"
    admin.admin.create_topics([NewTopic(changelog, settings.partitions, 1,
                                        topic_configs={"cleanup.policy": "compact"})])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                             linger_ms=20, batch_size=1 << 20)
    rng = random.Random(n)
    size = 0
    for i in range(n):
        value = rng.choice(states)
        size += len(value)
        producer.send(changelog, key=f"99{i:014d}".encode(), value=value)
    for line in lines:
        producer.send(settings.topic("reference"), key=line.id.encode(), value=encode(line))
    producer.flush()
    producer.close()
    log = REPO / "var" / "logs" / f"recovery-{prefix}.log"
    started = time.monotonic()
    with log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "fanpin", "worker",
                                   "--metrics-port", "0"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        while _at(log, "[^Worker]: Ready") is None:
            if worker.poll() is not None or time.monotonic() - started > 900:
                raise RuntimeError(f"the worker did not get ready; see {log}")
            time.sleep(0.2)
        ready = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(30)
    began = _at(log, "Restoring state from changelog")
    done = _at(log, "Done reading from changelog")
    reading = (done - began).total_seconds() if began and done else float("nan")
    return ready, reading, size


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [10_000, 50_000]
    settings = Settings()
    (REPO / "var" / "logs").mkdir(parents=True, exist_ok=True)
    if settings.uses_local_broker:
        local_broker_for(settings).ensure_started()
    states, lines = sample_states(b"recovery-measurement-key-0123456789")
    print(f"{'households':>10} {'changelog MB':>12} {'start→ready s':>14} "
          f"{'reading changelog s':>20} {'households/s':>13}")
    for n in [0, *sizes]:
        ready, reading, size = measure(n, states, lines)
        rate = f"{n / reading:>13,.0f}" if n and reading > 0 else f"{'':>13}"
        print(f"{n:>10} {size / 1e6:>12.1f} {ready:>14.1f} {reading:>20.1f} {rate}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

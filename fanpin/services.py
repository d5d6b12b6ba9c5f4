"""Starting what a command needs: the local broker, the topics, a worker and a sink.

Anything already running is reused. Processes started here are tracked by PID and only
those are stopped afterwards.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fanpin.broker import local_broker_for, pid_alive
from fanpin.kafka_admin import Admin, sink_group, worker_group
from fanpin.settings import Settings

log = logging.getLogger(__name__)


class ProcessDied(RuntimeError):
    pass


class Services:
    """Context manager: ``with Services(settings, need=("worker", "sink")) as s: ...``"""

    def __init__(self, settings: Settings, *, need: tuple[str, ...] = ("worker", "sink"),
                 log_dir: Path | None = None) -> None:
        self.settings = settings
        self.need = need
        self.log_dir = log_dir or settings.var_dir / "logs"
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.admin: Admin | None = None
        self.started_broker = False

    def __enter__(self) -> Services:
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> Services:
        if self.settings.uses_local_broker:
            self.started_broker = local_broker_for(self.settings).ensure_started()
        self.admin = Admin(self.settings)
        self.admin.ensure_topics()
        groups = {"worker": worker_group(self.settings), "sink": sink_group(self.settings)}
        for name in self.need:
            if name in groups and self.admin.group_members(groups[name]) > 0:
                log.info("reusing the running %s", name)
                continue
            self.spawn(name)
        for name in list(self.children):
            if name in groups:
                self._wait_member(name, groups[name])
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_children()
        if self.admin is not None:
            self.admin.close()
        if self.started_broker:
            # Stop the broker only if this block started it (by the PID file it wrote).
            local_broker_for(self.settings).stop()
            self.started_broker = False

    def spawn(self, name: str, *args: str, label: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``fanpin <name> <args>``; ``label`` names it (and its log) when several of
        the same kind run, e.g. two workers."""
        label = label or name
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{label}.log", "ab")  # noqa: SIM115 - kept for the child's life
        proc = subprocess.Popen([sys.executable, "-m", "fanpin", name, *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **self.settings.as_env()})
        self.children[label] = proc
        log.info("started %s (pid %d), log in %s", label, proc.pid, out.name)
        return proc

    def _wait_member(self, name: str, group: str, timeout: float = 90.0) -> None:
        assert self.admin is not None
        deadline = time.monotonic() + timeout
        while self.admin.group_members(group) == 0:
            self.check_alive()
            if time.monotonic() > deadline:
                raise ProcessDied(f"the {name} did not join its consumer group in {timeout:.0f}s;"
                                  f" see {self.log_dir / (name + '.log')}")
            time.sleep(0.2)

    def check_alive(self) -> None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                raise ProcessDied(f"the {name} exited with code {proc.returncode}; "
                                  f"see {self.log_dir / (name + '.log')}")

    def stop_children(self, timeout: float = 20.0) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.children.values():
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(proc.pid) and proc.poll() is None:
                proc.kill()
                proc.wait()
        self.children.clear()

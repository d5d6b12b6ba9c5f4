"""Operating the pipeline on real parts: a real Prometheus server (and Pushgateway) scraping
a running worker, sink and web while the sample is replayed; ``fanpin status``; and two
workers sharing the partitions, one of them killed mid-replay.

Both compare against the watch list the same rules give offline (``OfflinePipeline`` over
the same files), so a lost or duplicated event shows up as a different export.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from consumers.watchlist.export import export_csv
from consumers.watchlist.models import create_engine_for, init_db
from consumers.watchlist.service import record_alerts
from fanpin.broker import REPO_ROOT
from fanpin.kafka_admin import Admin, worker_group
from fanpin.privacy import Pseudonymiser
from fanpin.services import Services
from fanpin.settings import Settings
from producers.common import Reject
from producers.scenario import parse_scenario
from schemas.events import IncomeReport, MonitoringLine, Region
from streams.offline import OfflinePipeline
from tests.fixtures.kafka import free_port
from tests.helpers import SAMPLE, cli_env, read_csv

pytestmark = pytest.mark.integration


# --- helpers ------------------------------------------------------------------------------

def offline_export(key: str, out: Path) -> tuple[list[dict[str, str]], OfflinePipeline]:
    """The watch list the rules give for the sample when every event is seen exactly once."""
    events = [e for e in parse_scenario(SAMPLE, Pseudonymiser(key.encode()))
              if not isinstance(e, Reject)]
    pipeline = OfflinePipeline().feed(events)
    engine = create_engine_for(f"sqlite:///{out.with_suffix('.db')}")
    init_db(engine)
    with Session(engine) as session:
        record_alerts(session=session, alerts=pipeline.alerts)
        export_csv(session=session, out=out, health=True)
    engine.dispose()
    return read_csv(out), pipeline


def replay_cmd(env: dict[str, str], export: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fanpin", "replay", str(SAMPLE), "--export",
                             str(export)], env=cli_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"replay did not finish in {timeout:.0f}s:\n{out[-3000:]}") from None
    assert proc.returncode == 0, out[-3000:]
    return out


def eventually(check: Callable[[], object], timeout: float = 60, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (AssertionError, OSError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or 'condition'} not met in {timeout:.0f}s: {exc}"
                                     ) from exc
            time.sleep(0.5)
            continue
        return result


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        return r.read().decode()


def sample_value(text: str, name: str) -> float:
    """Sum of a metric's samples in an exposition (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- real Prometheus ----------------------------------------------------------------------

class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, promql: str) -> list[dict[str, object]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback only
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str) -> float:
        result = self.query(promql)
        assert result, f"no data for {promql}"
        assert len(result) == 1, f"{promql} has {len(result)} series"
        return float(result[0]["value"][1])  # type: ignore[index]

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1])  # type: ignore[index, union-attr]
                for r in self.query(promql)}


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def monitoring(pipeline_env: dict[str, str]) -> Iterator[tuple[Prometheus, str]]:
    """A Prometheus server scraping this test's worker, sink, web and a Pushgateway every
    second, with Fanpin's alerting rules loaded. Both are stopped by PID afterwards."""
    for tool in ("prometheus", "prometheus-pushgateway"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/install.sh --test"
    home = Path(tempfile.mkdtemp(prefix="fanpin-prom-"))
    prom_port, gw_port = free_port(), free_port()
    targets = {"fanpin-worker": pipeline_env["FANPIN_WORKER_METRICS_PORT"],
               "fanpin-sink": pipeline_env["FANPIN_SINK_METRICS_PORT"],
               "fanpin-web": pipeline_env["FANPIN_WEB_PORT"]}
    jobs = [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()]
    jobs.append({"job_name": "pushgateway", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{gw_port}"]}]})
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(REPO_ROOT / "deploy" / "prometheus" / "rules" / "*.yml")],
              "scrape_configs": jobs}
    (home / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    gateway = _start(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{gw_port}"],
                     home / "pushgateway.log")
    server = _start(["prometheus", f"--config.file={home / 'prometheus.yml'}",
                     f"--storage.tsdb.path={home / 'data'}",
                     f"--web.listen-address=127.0.0.1:{prom_port}"], home / "prometheus.log")
    prom = Prometheus(prom_port)
    try:
        eventually(lambda: prom.query("up"), 60, "Prometheus answering")
        yield prom, f"http://127.0.0.1:{gw_port}"
    finally:
        _stop(server)
        _stop(gateway)
        shutil.rmtree(home, ignore_errors=True)


def test_prometheus_sees_what_the_pipeline_did(
    pipeline_env: dict[str, str], pg_database_url: str, monitoring: tuple[Prometheus, str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    prom, gateway = monitoring
    monkeypatch.setenv("FANPIN_DATABASE_URL", pg_database_url)
    monkeypatch.setenv("FANPIN_PUSHGATEWAY_URL", gateway)
    env = {**pipeline_env, "FANPIN_DATABASE_URL": pg_database_url,
           "FANPIN_PUSHGATEWAY_URL": gateway}
    settings = Settings()
    expected, pipeline = offline_export(env["FANPIN_PSEUDONYM_KEY"], tmp_path / "offline.csv")
    published = [e for e in parse_scenario(SAMPLE, Pseudonymiser(
        env["FANPIN_PSEUDONYM_KEY"].encode())) if not isinstance(e, Reject)]
    events = [e for e in published if not isinstance(e, Region | MonitoringLine)]
    bad_rows = read_csv(SAMPLE / "bad_rows.csv")

    with Services(settings, need=("worker", "sink")) as services:
        services.spawn("web")
        eventually(lambda: scrape(int(env["FANPIN_WEB_PORT"])), 60, "web up")
        out = finish(replay_cmd(env, tmp_path / "kafka.csv"))
        assert read_csv(tmp_path / "kafka.csv") == expected, out[-2000:]

        admin = Admin(settings)
        alerts = sum(admin.end_offsets(settings.topic("alerts")).values())
        household_events = sum(admin.end_offsets(settings.topic("household-events")).values())
        admin.close()
        assert alerts == len(pipeline.alerts)

        # fanpin status, as an operator runs it, while everything is up
        status = subprocess.run([sys.executable, "-m", "fanpin", "status", "--json"],
                                env=cli_env(env), capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        st = json.loads(status.stdout)
        assert st["healthy"] and st["broker_up"] and st["dead_letters"] == 0
        assert {g["group"]: g["members"] for g in st["groups"]} == {
            f"{settings.topic_prefix}-worker": 1, f"{settings.topic_prefix}-sink": 1}
        assert all(n == 0 for g in st["groups"] for n in g["lag"].values())
        feeds = {f["feed"]: f for f in st["feeds"]}
        assert set(feeds) == {"regions", "thresholds", "roster", "income", "medical",
                              "employment"}
        assert feeds["income"]["last_file"] == "income/2026-10.csv"
        assert feeds["income"]["files"] == 24
        assert feeds["medical"]["rows_rejected"] == sum(
            1 for r in bad_rows if r["文件"] == feeds["medical"]["last_file"])
        assert sum(st["entries_by_state"].values()) == len(expected)
        assert st["entries_by_state"]["新预警"] == len(expected)

        # Prometheus scraped all of it. Every entry can exist months before the last file
        # (the rules judge from the first month), so wait for the last receipts too.
        def settled() -> None:
            assert prom.value("sum(fanpin_rows_rejected_total)") == len(bad_rows)
            assert prom.value('sum(fanpin_watchlist_entries)') == len(expected)
            assert prom.value("sum(fanpin_consumer_lag_messages)") == 0
            assert prom.value("sum(fanpin_alerts_raised_total)") == alerts
        eventually(settled, 60, "Prometheus to scrape the final figures")

        assert prom.by('up{job=~"fanpin-.*|pushgateway"}', "job") == {
            "fanpin-worker": 1, "fanpin-sink": 1, "fanpin-web": 1, "pushgateway": 1}
        want_in = Counter((e.origin.dept, type(e).__struct_config__.tag.split(".")[0])  # type: ignore[union-attr]
                          for e in events)
        got_in = {(r["metric"]["dept"], r["metric"]["kind"]): float(r["value"][1])  # type: ignore[index]
                  for r in prom.query("fanpin_events_in_total")}
        assert got_in == {k: float(v) for k, v in want_in.items()}
        assert sum(1 for e in events if isinstance(e, IncomeReport)) == want_in[("rural", "income")]
        want_rules = Counter((a.reasons[0].rule, a.risk_type) for a in pipeline.alerts)
        got_rules = {(r["metric"]["rule"], r["metric"]["risk_type"]): float(r["value"][1])  # type: ignore[index]
                     for r in prom.query("fanpin_alerts_raised_total")}
        assert got_rules == {k: float(v) for k, v in want_rules.items()}
        assert prom.value('sum(fanpin_watchlist_alerts_total{result="new"})') == len(expected)
        assert prom.value("sum(fanpin_watchlist_alerts_total)") == alerts
        assert prom.value("sum(fanpin_event_to_alert_lag_seconds_count)") == alerts
        # one observation per household-events message (a batch: its mean per event)
        assert prom.value("sum(fanpin_rule_evaluation_seconds_count)") == household_events
        assert prom.value('fanpin_watchlist_entries{state="新预警"}') == len(expected)
        assert prom.value("fanpin_watchlist_overdue_entries") == 0
        assert prom.query("fanpin_dead_letters_total") == []  # none, so no series yet

        rejected = prom.by("sum by (feed) (fanpin_rows_rejected_total)", "feed")
        want_rejected = Counter(r["文件"].split("/")[0].removesuffix(".csv") for r in bad_rows)
        assert rejected == {k: float(v) for k, v in want_rejected.items()}
        last = prom.by("fanpin_department_last_file_timestamp_seconds", "feed")
        assert set(last) == {"regions", "thresholds", "roster", "income", "medical",
                             "employment"}
        assert all(time.time() - 900 < t <= time.time() for t in last.values())
        income_rows = prom.by('fanpin_department_last_file_rows{feed="income"}', "outcome")
        assert income_rows["accepted"] == sum(
            1 for e in events if isinstance(e, IncomeReport) and e.origin.file ==
            "income/2026-10.csv")

        # the replay's own figures went through the Pushgateway
        pushed = prom.by('sum by (outcome) (fanpin_publish_rows{job="fanpin_replay"})', "outcome")
        assert pushed == {"accepted": len(published), "rejected": len(bad_rows)}

        # the alerting rules are loaded and healthy, and none fires on a healthy pipeline
        with urllib.request.urlopen(prom.base + "/api/v1/rules", timeout=10) as r:  # noqa: S310
            groups = json.load(r)["data"]["groups"]
        rules = [rule for g in groups for rule in g["rules"]]
        assert len(rules) >= 8 and all(rule["health"] == "ok" for rule in rules), rules
        firing = [rule["name"] for rule in rules if rule.get("state") == "firing"]
        assert firing == []


def test_two_workers_share_partitions_and_one_takes_over_when_the_other_is_killed(
    pipeline_env: dict[str, str], pg_database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FANPIN_DATABASE_URL", pg_database_url)
    env = {**pipeline_env, "FANPIN_DATABASE_URL": pg_database_url}
    settings = Settings()
    expected, _ = offline_export(env["FANPIN_PSEUDONYM_KEY"], tmp_path / "offline.csv")
    ports = free_port(), free_port()
    with Services(settings, need=("sink",)) as services:
        workers = [services.spawn("worker", "--metrics-port", str(port), label=f"worker-{i}")
                   for i, port in enumerate(ports)]
        admin = Admin(settings)

        def both_joined() -> None:
            services.check_alive()
            assert admin.group_members(worker_group(settings)) == 2
        eventually(both_joined, 120, "both workers in the group")

        replay = replay_cmd(env, tmp_path / "kafka.csv")

        def both_busy() -> None:
            assert replay.poll() is None, "the replay ended before the kill"
            taken = [sample_value(scrape(p), "fanpin_events_in_total") for p in ports]
            assert all(n > 500 for n in taken), taken
        eventually(both_busy, 300, "both workers taking events")
        os.kill(workers[0].pid, signal.SIGKILL)  # a worker we started, by its PID
        workers[0].wait()
        survivor_before = sample_value(scrape(ports[1]), "fanpin_events_in_total")

        out = finish(replay)
        admin.close()
        assert read_csv(tmp_path / "kafka.csv") == expected, out[-2000:]
        # the survivor took over the killed worker's partitions
        assert sample_value(scrape(ports[1]), "fanpin_events_in_total") > survivor_before
        assert workers[1].poll() is None

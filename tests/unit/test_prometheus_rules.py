"""deploy/prometheus: the config, the alerting rules and their promtool unit tests.

promtool comes with Debian's ``prometheus`` package (``scripts/install.sh --test``); these
tests fail rather than skip without it, so CI cannot pass them by accident.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
CONFIG = PROM / "prometheus.yml"
RULES = PROM / "rules" / "fanpin.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*_test.yml"))

# Every metric Fanpin exports, by the process that exports it. Rename one in the code and
# here, and the rules using the old name fail test_rules_use_only_exported_metrics.
WORKER = {
    "fanpin_events_in_total", "fanpin_alerts_raised_total", "fanpin_dead_letters_total",
    "fanpin_build_info",
}
SINK = {
    "fanpin_watchlist_alerts_total", "fanpin_sink_db_retries_total",
    "fanpin_consumer_lag_messages", "fanpin_dead_letters_total",
}
WEB = {
    "fanpin_watchlist_entries", "fanpin_watchlist_overdue_entries",
    "fanpin_department_last_file_timestamp_seconds", "fanpin_department_last_file_rows",
    "fanpin_rows_rejected_total", "fanpin_notifications_sent_total",
    "fanpin_notification_failures_total",
}
BATCH = {
    "fanpin_publish_rows", "fanpin_publish_rejected_rows",
    "fanpin_publish_last_success_timestamp_seconds", "fanpin_publish_duration_seconds",
}
HISTOGRAMS = {"fanpin_rule_evaluation_seconds", "fanpin_event_to_alert_lag_seconds"}
METRICS = WORKER | SINK | WEB | BATCH | HISTOGRAMS
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

JOBS = {"fanpin-worker", "fanpin-sink", "fanpin-web", "pushgateway"}
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK = re.compile(r"^docs/operations\.md#[a-z0-9-]+$")
METRIC_NAME = re.compile(r"(?<![\w:])fanpin_[a-z0-9_]+(?![\w:])")
RECORDED_NAME = re.compile(r"(?<![\w:])fanpin:[a-z0-9_:]+(?![\w:])")


def _yaml():
    try:
        import yaml
    except ImportError:  # pragma: no cover - the dev environment has it
        pytest.fail("PyYAML is missing: run scripts/install.sh (pip install -e .[dev])")
    return yaml


def _load(path: Path) -> dict:
    return _yaml().safe_load(path.read_text(encoding="utf-8"))


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run scripts/install.sh --test "
                    "(Debian's prometheus package)")
    return path


def _run(*args: str, cwd: Path) -> None:
    proc = subprocess.run([_promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (
        f"promtool {' '.join(args)} (in {cwd}) exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")


def _rules() -> list[dict]:
    return [rule for group in _load(RULES)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


# --- promtool -----------------------------------------------------------------------------

def test_promtool_check_config():
    # rule_files are relative to the config's directory; check config checks them too
    _run("check", "config", CONFIG.name, cwd=PROM)


def test_promtool_check_rules():
    _run("check", "rules", str(RULES.relative_to(ROOT)), cwd=ROOT)


def test_promtool_test_rules():
    assert RULE_TESTS, "no deploy/prometheus/tests/*_test.yml"
    _run("test", "rules", *(str(p.relative_to(ROOT)) for p in RULE_TESTS), cwd=ROOT)


# --- the config ---------------------------------------------------------------------------

def test_config_scrapes_every_fanpin_process():
    config = _load(CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["rules/*.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == JOBS
    # the worker is scaled with `docker compose --scale worker=N`: one target per replica
    assert jobs["fanpin-worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 18091, "refresh_interval": "30s"}]
    assert jobs["fanpin-sink"]["static_configs"] == [{"targets": ["sink:18092"]}]
    assert jobs["fanpin-web"]["static_configs"] == [{"targets": ["web:8080"]}]
    assert jobs["fanpin-web"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["pushgateway"]["static_configs"] == [{"targets": ["pushgateway:9091"]}]
    assert jobs["pushgateway"]["honor_labels"] is True


# --- the rules ----------------------------------------------------------------------------

def _exported(metric: str) -> bool:
    """A series name Fanpin exports: a counter, gauge or info, or a histogram's
    _bucket/_sum/_count (a histogram's bare name is no series)."""
    if metric in METRICS - HISTOGRAMS:
        return True
    return any(metric.endswith(suffix) and metric[: -len(suffix)] in HISTOGRAMS
               for suffix in HISTOGRAM_SUFFIXES)


def test_exported_names():
    assert _exported("fanpin_dead_letters_total")
    assert _exported("fanpin_event_to_alert_lag_seconds_bucket")
    assert not _exported("fanpin_event_to_alert_lag_seconds")
    assert not _exported("fanpin_dead_letters")
    assert not _exported("fanpin_rows_rejected_total_count")
    assert METRIC_NAME.findall('sum by (group) (fanpin:lag:sum) + up{job="fanpin-web"}') == []


def test_rules_use_only_exported_metrics():
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    unknown: dict[str, set[str]] = {}
    for rule in _rules():
        name = rule.get("alert") or rule["record"]
        for metric in METRIC_NAME.findall(rule["expr"]):
            if not _exported(metric):
                unknown.setdefault(name, set()).add(metric)
        for series in RECORDED_NAME.findall(rule["expr"]):
            if series not in recorded:
                unknown.setdefault(name, set()).add(series)
    assert not unknown, f"rules use metrics Fanpin does not export: {unknown}"


def test_recording_rules_are_named_level_metric_operations():
    for rule in _rules():
        if "record" in rule:
            assert re.fullmatch(r"fanpin:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_alerts_have_severity_summary_and_runbook():
    groups = {group["name"] for group in _load(RULES)["groups"]}
    assert "fanpin" in groups
    alerts = _alerts()
    assert len({a["alert"] for a in alerts}) == len(alerts), "duplicate alert names"
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = alert.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{name}: no {key} annotation"
        assert RUNBOOK.match(annotations["runbook"]), f"{name}: {annotations['runbook']}"
        assert annotations["runbook"].endswith("#" + name.lower()), (
            f"{name}: the runbook anchor is the alert's name in lower case")
        # Chinese and English: some CJK and some Latin words in each
        for key in ("summary", "description"):
            text = annotations[key]
            assert re.search(r"[\u4e00-\u9fff]", text), f"{name}: {key} has no Chinese"
            assert re.search(r"[A-Za-z]{3,}", text), f"{name}: {key} has no English"


def test_every_alert_is_tested_firing_and_quiet():
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for test in _load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown not firing"


def test_expected_alerts_in_use():
    names = {a["alert"] for a in _alerts()}
    assert {
        "FanpinWorkerDown", "FanpinSinkDown", "FanpinWebDown", "FanpinConsumerLagGrowing",
        "FanpinFeedSilent", "FanpinRejectSpike", "FanpinDeadLetters", "FanpinOverdueGrowing",
        "FanpinNotificationsFailing",
    } <= names


def test_every_runbook_anchor_exists_in_operations_doc():
    """Each alert's runbook link lands on a heading of docs/operations.md, by the anchor
    GitHub gives it: lower case, punctuation dropped, spaces as hyphens, repeats numbered.
    Lines inside fenced code blocks are not headings."""
    doc = ROOT / "docs" / "operations.md"
    assert doc.is_file(), "docs/operations.md is missing"
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fence = ""
    for line in doc.read_text(encoding="utf-8").splitlines():
        marker = re.match(r" {0,3}(`{3,}|~{3,})", line)
        if marker:
            if not fence:
                fence = marker.group(1)
            elif marker.group(1).startswith(fence):
                fence = ""
            continue
        heading = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fence or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    missing = {}
    for alert in _alerts():
        path, _, anchor = alert["annotations"]["runbook"].partition("#")
        assert path == "docs/operations.md", f"{alert['alert']}: runbook {path}"
        if anchor not in anchors:
            missing[alert["alert"]] = anchor
    assert not missing, f"runbook anchors with no heading in {doc.name}: {missing}"

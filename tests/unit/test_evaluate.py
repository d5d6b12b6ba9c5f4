"""fanpin evaluate: scoring an export against truth.csv."""

import csv
from pathlib import Path

from click.testing import CliRunner

from fanpin.cli import main
from fanpin.evaluate import evaluate
from tests.helpers import SAMPLE, read_csv

COLUMNS = ["户编号", "行政区划代码", "风险类型", "预警规则", "预警月份", "严重程度", "状态"]


def write_export(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for household, risk_type, month in rows:
            out.writerow([household, household[:12], risk_type, "r", month, "高", "新预警"])
    return path


def test_perfect_export_scores_one(tmp_path: Path) -> None:
    truth = [r for r in read_csv(SAMPLE / "truth.csv") if r["风险"] == "1"]
    rows = [(r["户编号"], r["风险原因"], r["冲击月份"] or r["首次风险月份"]) for r in truth]
    ev = evaluate(SAMPLE, write_export(tmp_path / "e.csv", rows))
    assert (ev.recall, ev.precision, ev.median_delay_months) == (1.0, 1.0, 0)
    assert ev.risk_type_accuracy == 1.0
    assert ev.entries_per_at_risk_household == 1.0


def test_false_leads_and_misses_are_counted(tmp_path: Path) -> None:
    truth = read_csv(SAMPLE / "truth.csv")
    risky = [r for r in truth if r["风险"] == "1"]
    safe = [r for r in truth if r["风险"] == "0"]
    rows = [(r["户编号"], "其他", "2026-10") for r in risky[:10] + safe[:10]]
    ev = evaluate(SAMPLE, write_export(tmp_path / "e.csv", rows))
    assert ev.true_positives == 10 and ev.flagged == 20
    assert ev.precision == 0.5
    assert ev.recall == 10 / len(risky)
    assert sum(found for found, _ in ev.by_cause.values()) == 10
    assert sum(ev.false_positives_by_shock.values()) == 10


def test_cli_prints_the_report(tmp_path: Path) -> None:
    export = write_export(tmp_path / "e.csv", [])
    result = CliRunner().invoke(main, ["evaluate", str(SAMPLE), "--alerts", str(export)])
    assert result.exit_code == 0, result.output
    assert "召回率 recall:    0.000" in result.output
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--alerts", str(export)])
    assert result.exit_code != 0 and "truth.csv" in result.output

"""A smoke run of every benchmark figure on the session's real broker, at toy sizes. It
checks the benchmark code works end to end (the worker, both baselines, ingest, latency,
recovery); it asserts no speed: ``make bench`` measures, outside the test suite."""

from __future__ import annotations

from pathlib import Path

from fanpin import bench
from fanpin.broker import LocalBroker


def test_every_figure_runs_on_a_real_broker(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    assert bench.main(["--quick", "--quiet", "--bootstrap", kafka_broker.bootstrap,
                       "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    for row in ("| detector throughput |", "plain Faust agent + Table", "raw aiokafka",
                "| 2 workers |", "| ingest:", "watch-list entry", "| recover ",
                "## Cost per million rows"):
        assert row in text, row
    plots = {p.name for p in (tmp_path / "benchmarks").iterdir()}
    assert {"detector.svg", "latency.svg", "cost.svg"} <= plots
    # Every throughput figure measured something.
    goals = [line for line in text.splitlines() if line.startswith("| detector throughput")]
    assert goals and all("| – |" not in line.split("events/s")[0] for line in goals)

"""A smoke run of the benchmark code (not a timing test: nothing here asserts speed)."""

from pathlib import Path

from fanpin import bench


def test_bench_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    bench.main(["--runs", "1", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert "| parse + validate + pseudonymise (rows/s)" in text
    assert text.count("\n|") >= 4  # header, separator and both figures

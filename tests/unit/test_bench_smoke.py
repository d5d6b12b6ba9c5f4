"""A smoke run of the benchmark code's in-process figures (not a timing test: nothing
here asserts speed; ``make bench`` measures)."""

from pathlib import Path

from fanpin import bench


def test_bench_writes_a_report_without_a_broker(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    assert bench.main(["--quick", "--no-broker", "--quiet", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| state per household |" in text
    assert "Machine:" in text and "faust-streaming" in text


def test_batched_messages_count_events_per_offset() -> None:
    """The worker's progress is read as committed offsets of batch messages; each offset
    must map to the events before it, per partition."""
    from schemas.events import split_batch

    joined = bench.joined_events(bench.REPO / "data" / "sample")
    messages, cum = bench.batched(joined.events[:5000], 4, size=300)
    assert sum(c[-1] for c in cum.values()) == 5000
    seen: dict[int, int] = {}
    for p, value in messages:
        seen[p] = seen.get(p, 0) + 1
        n = len(split_batch(value))
        assert 1 <= n <= 300
        assert cum[p][seen[p]] - cum[p][seen[p] - 1] == n
    assert {p: len(c) - 1 for p, c in cum.items()} == seen


def test_figure_ratios_and_report() -> None:
    f = bench.Figure("detector", "events/s", [10.0, 30.0, 20.0], "base", [2.0, 2.0, 3.0],
                     "≥ 10×", True)
    assert f.median == 20.0 and f.spread == 20.0 and f.ratio == 10.0
    assert bench.percentile([3.0, 1.0, 2.0], 0.5) == 2.0

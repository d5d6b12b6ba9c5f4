"""``make bench``: throughput figures, each next to a baseline measured in the same run.

This machine is noisy, so every figure is the median of several runs and is reported as a
ratio to its baseline, never as an absolute pass/fail. Figures:

- parse: department rows parsed, validated and pseudonymised per second, against reading
  the same files with plain ``csv.reader`` (the floor any parser pays);
- rules: events folded and judged per second by the pure detection rules (with the state
  serialised after each event, as the changelog does), against decoding the same events.

The broker-bound figures (publish, Faust agent, end-to-end latency) belong to the
province-scale benchmark issue and are not measured here yet.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fanpin.privacy import Pseudonymiser
from producers.common import Reject
from producers.scenario import parse_scenario, scenario_files
from schemas.events import decode_event, encode
from streams.offline import OfflinePipeline

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def _median_rate(fn: Callable[[], int], runs: int) -> tuple[float, float]:
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates), (max(rates) - min(rates))


def run(root: Path = SAMPLE, runs: int = 3) -> list[tuple[str, float, float, float, float]]:
    files = scenario_files(root)
    key = Pseudonymiser(b"bench-key-0123456789abcdef")

    def baseline_csv() -> int:
        n = 0
        for rel, path, _ in files:
            enc = "gb18030" if rel.startswith("medical/") else "utf-8-sig"
            with path.open(encoding=enc, newline="") as fh:
                n += sum(1 for _ in csv.reader(fh)) - 1
        return n

    def parse() -> int:
        return sum(1 for _ in parse_scenario(root, key))

    events = [e for e in parse_scenario(root, key) if not isinstance(e, Reject)]
    encoded = [encode(e) for e in events]

    def baseline_decode() -> int:
        for raw in encoded:
            decode_event(raw)
        return len(encoded)

    def rules() -> int:
        OfflinePipeline().feed(decode_event(raw) for raw in encoded)
        return len(encoded)

    out = []
    for name, fn, base in (("parse + validate + pseudonymise (rows/s)", parse, baseline_csv),
                           ("decode + rules + state (events/s)", rules, baseline_decode)):
        rate, spread = _median_rate(fn, runs)
        brate, bspread = _median_rate(base, runs)
        out.append((name, rate, spread, brate, bspread))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write a Markdown report here")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenario", type=Path, default=SAMPLE)
    args = ap.parse_args(argv)
    results = run(args.scenario, args.runs)
    lines = [
        "# Benchmarks", "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"{platform.platform()}. Scenario: `{args.scenario.name}`. Median of {args.runs} runs;"
        " spread is max − min.", "",
        "| figure | median | spread | baseline (same run) | baseline median | ratio |",
        "|---|---:|---:|---|---:|---:|",
    ]
    baselines = ["plain csv.reader over the same files", "msgspec decode of the same events"]
    for (name, rate, spread, brate, _), bname in zip(results, baselines, strict=True):
        lines.append(f"| {name} | {rate:,.0f} | {spread:,.0f} | {bname} | {brate:,.0f} | "
                     f"{rate / brate:.2f} |")
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()

"""A short run of the soak test (``make soak``) on the session's real broker, at a low
rate. It checks the load test works end to end (publishing, sampling lag and memory, the
report and its plots); it asserts no speed and no verdict: ``make soak`` judges, for ten
minutes, outside the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanpin import soak
from fanpin.broker import LocalBroker

pytestmark = pytest.mark.integration


def test_a_short_soak_samples_lag_and_memory(kafka_broker: LocalBroker, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "soak.md"
    args = soak.parser().parse_args([
        "--minutes", "0.6", "--rate", "300", "--households", "200", "--months", "12",
        "--interval", "2", "--drain-timeout", "60", "--bootstrap", kafka_broker.bootstrap,
        "--out", str(out), "--quiet"])
    res = soak.run(args)
    soak.write(res, out)

    # Samples every 2 s over 36 s, each with both groups' lag and every process's RSS
    # (the session broker is this machine's, found by its port).
    assert len(res.samples) >= 10
    assert res.rows > 0 and res.samples[-1].rows == res.rows
    for s in res.samples:
        assert set(s.lag) == {"worker", "sink"} and set(s.rss) >= {"worker", "sink", "broker"}
    assert sum(1 for s in res.samples if None not in s.lag.values()) >= len(res.samples) - 1
    assert all(s.rss["worker"] and s.rss["sink"] and s.rss["broker"] for s in res.samples)
    assert res.broker_pid == kafka_broker.read_pid()
    # 200 households' months at 300 rows/s: the stream goes round more than once, and the
    # pipeline turns it into watch-list entries.
    assert res.passes >= 2
    assert res.samples[-1].entries > 0
    assert res.dead_letters == 0
    # Every check is judged (pass or fail is not this test's business).
    checks = " ".join(v.check for v in res.verdicts)
    assert "publish rate" in checks and "worker lag" in checks and "sink lag" in checks
    assert all(f"{p} memory" in checks for p in ("worker", "sink", "broker"))

    text = out.read_text(encoding="utf-8")
    for part in ("# Soak test", "## Verdict", "## Samples", "| worker |", "| broker |",
                 "![lag](soak/lag.svg)", "![memory](soak/memory.svg)"):
        assert part in text, part
    for name in ("lag.svg", "memory.svg"):
        svg = (tmp_path / "soak" / name).read_text(encoding="utf-8")
        assert svg.startswith("<svg") and "<polyline" in svg
    assert "worker" in (tmp_path / "soak" / "memory.svg").read_text(encoding="utf-8")
    csv = (tmp_path / "soak" / "samples.csv").read_text(encoding="utf-8").splitlines()
    assert csv[0].startswith("seconds,rows,worker_lag,sink_lag,") and len(csv) == len(
        res.samples) + 1

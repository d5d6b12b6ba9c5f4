"""The soak test's pure parts: the year shift of a replayed pass, and the verdicts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from fanpin import soak
from fanpin.simulate import monitoring_line
from schemas.events import EmploymentEvent, IncomeReport, MedicalSettlement, MonitoringLine, Origin


def test_a_later_pass_is_new_data_for_the_same_household() -> None:
    inc = IncomeReport(id="income:9901000000000001:2024-02", origin=Origin(
        "rural", "income/2024-02.csv", 7), household_id="9901000000000001",
        region_code="990100000000", month="2024-02", household_size=3, wages=Decimal("1"),
        business=Decimal("2"), property=Decimal("0"), transfers=Decimal("0"),
        total=Decimal("3"))
    moved = soak.shift(inc, 2, ".p1")
    assert (moved.month, moved.id, moved.origin.file) == (
        "2026-02", "income:9901000000000001:2026-02", "income/2026-02.csv")
    assert moved.household_id == inc.household_id and moved.total == inc.total
    assert soak.shift(inc, 0, ".p0") is inc

    med = MedicalSettlement(
        id="medical:S1", origin=Origin("medical", "medical/2024-02.csv", 2), settlement_id="S1",
        person="p1", insured_county="990100", visit_type="住院", admitted=dt.date(2024, 2, 20),
        settled=dt.date(2024, 2, 29), total=Decimal("-10"), basic_insurance=Decimal("-5"),
        critical_illness=Decimal("0"), medical_assistance=Decimal("0"),
        out_of_pocket=Decimal("-5"), reversal=True, reverses="S0")
    m = soak.shift(med, 1, ".p1")
    assert (m.settlement_id, m.id, m.reverses) == ("S1.p1", "medical:S1.p1", "S0.p1")
    assert (m.admitted, m.settled) == (dt.date(2025, 2, 20), dt.date(2025, 2, 28))

    emp = EmploymentEvent(id="employment:B1", origin=Origin("employment",
                          "employment/2024-03.csv", 4), business_id="B1", person="p1",
                          region_code="990100000000", business_type="工资发放",
                          date=dt.date(2024, 3, 15), employer="E", amount=Decimal("100"),
                          work_place="县内")
    e = soak.shift(emp, 2, ".p1")
    assert (e.business_id, e.id, e.date, e.origin.file) == (
        "B1.p1", "employment:B1.p1", dt.date(2026, 3, 15), "employment/2026-03.csv")

    line = MonitoringLine(id="line:2025", origin=Origin("rural", "thresholds.csv", 3),
                          year=2025, line=Decimal("8700"))
    n = soak.shift(line, 2, ".p1")
    assert (n.id, n.year, n.line) == ("line:2027", 2027, Decimal(monitoring_line(2027)))


def _result(lags: list[int], rss: list[float], rate: float = 100.0) -> soak.Result:
    args = soak.parser().parse_args(["--minutes", "1", "--rate", str(rate),
                                     "--interval", "5"])
    samples = [soak.Sample(t=5.0 * i, rows=int(rate * 5 * i),
                           lag={"worker": lag, "sink": 0},
                           appended={"worker": 100 * 5 * i, "sink": 10 * i},
                           rss={"worker": r, "sink": 80.0, "broker": 1100.0},
                           cpu={"worker": 0.5 * i, "sink": 0.1 * i, "broker": 0.2 * i},
                           entries=i, alerts=2 * i, load=1.0)
               for i, (lag, r) in enumerate(zip(lags, rss, strict=True))]
    res = soak.Result(args=args, samples=samples, seconds=60.0, rows=samples[-1].rows,
                      messages=1000, late=0.0, passes=2, scenario_rows=1000,
                      generated_in=1.0, load_start=1.0, load_end=1.0, broker_pid=1)
    soak.judge(res)
    return res


def test_bounded_lag_and_flat_memory_pass() -> None:
    res = _result([300, 800, 200, 600, 400, 700, 300, 500, 400, 600, 300, 500, 400],
                  [100.0] * 6 + [120.0, 121.0, 120.0, 120.5, 121.0, 120.0, 120.5])
    assert res.ok, [v for v in res.verdicts if not v.ok]
    text = soak.markdown(res, "soak")
    assert "**Pass**" in text and "| worker | " in text
    assert set(soak.plots(res)) == {"lag.svg", "memory.svg"}


def test_growing_lag_or_memory_fails() -> None:
    growing = [100 + 400 * i for i in range(13)]  # 100 messages/s appended, lag +80/s
    res = _result(growing, [100.0] * 13)
    failed = {v.check.split(":")[0] for v in res.verdicts if not v.ok}
    assert failed == {"worker lag bounded", "worker lag not trending up"}
    res = _result([300] * 13, [100.0 + 3 * i for i in range(13)])  # +36 MB/min
    failed = {v.check.split(":")[0] for v in res.verdicts if not v.ok}
    assert failed == {"worker memory not growing"}
    assert "**FAIL**" in soak.markdown(res, "soak")


def test_the_rate_achieved_is_judged() -> None:
    res = _result([300] * 13, [100.0] * 13)
    res.rows = 3000  # 50 rows/s of 100 asked
    res.verdicts.clear()
    soak.judge(res)
    assert [v.check for v in res.verdicts if not v.ok] == ["publish rate achieved"]
    assert "did not keep up" in soak.markdown(res, "soak")


def test_the_default_rate_is_twice_the_benchmarks() -> None:
    from fanpin import bench

    assert soak.parser().parse_args([]).rate == 2 * bench.LATENCY_RATE

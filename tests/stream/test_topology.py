"""Stream tier without a broker: the in-memory topology (streams.offline) on hand-made
events and on the bundled sample, plus one test of the real Faust agent."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from fanpin.privacy import Pseudonymiser
from producers.common import Reject
from producers.scenario import parse_scenario
from schemas.events import (
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    Origin,
    RosterMember,
)
from streams.offline import OfflinePipeline
from tests.helpers import SAMPLE, read_csv

HH = "9901210010010001"
REGION = "990121001001"


def _line(year: int, amount: str) -> MonitoringLine:
    return MonitoringLine(id=f"l{year}", origin=Origin("rural", "thresholds.csv", 2), year=year,
                          line=Decimal(amount))


def _member(person: str, labour: str = "普通劳动力") -> RosterMember:
    return RosterMember(id=f"m-{person}", origin=Origin("rural", "roster.csv", 2),
                        household_id=HH, region_code=REGION, household_type="脱贫户",
                        household_size=2, member_no=1, person=person, relation="户主",
                        labour=labour)  # type: ignore[arg-type]


def _income(month: str, total: int) -> IncomeReport:
    t = Decimal(total)
    return IncomeReport(id=f"i-{month}", origin=Origin("rural", f"income/{month}.csv", 2),
                        household_id=HH, region_code=REGION, month=month, household_size=2,
                        wages=t, business=Decimal(0), property=Decimal(0), transfers=Decimal(0),
                        total=t)


def _stay(sid: str, person: str, settled: dt.date, oop: int) -> MedicalSettlement:
    return MedicalSettlement(
        id=f"s-{sid}", origin=Origin("medical", f"medical/{settled:%Y-%m}.csv", 3),
        settlement_id=sid, person=person, insured_county=REGION[:6], visit_type="住院",
        admitted=settled - dt.timedelta(days=9), settled=settled, total=Decimal(oop * 3),
        basic_insurance=Decimal(oop * 2), critical_illness=Decimal(0),
        medical_assistance=Decimal(0), out_of_pocket=Decimal(oop), reversal=False)


def _ended(person: str, day: dt.date) -> EmploymentEvent:
    return EmploymentEvent(
        id=f"e-{person}-{day}", origin=Origin("employment", f"employment/{day:%Y-%m}.csv", 4),
        business_id=f"B{day:%Y%m%d}", person=person, region_code=REGION,
        business_type="失业登记", date=day, employer="某厂", amount=None, work_place=None)


# --- roster join --------------------------------------------------------------------------

def test_person_events_before_roster_are_parked_then_joined() -> None:
    pipe = OfflinePipeline()
    early = [_stay("S1", "p-early", dt.date(2025, 3, 5), 12000),
             _ended("p-early", dt.date(2025, 3, 1))]
    pipe.feed([_line(2025, "7200"), *early])
    assert pipe.unjoined == 2
    assert len(pipe.pending["p-early"]) == 2
    assert HH not in pipe.states  # nothing reached the household yet

    pipe.feed([_member("p-early")])
    assert "p-early" not in pipe.pending
    state = pipe.state_of(HH)
    assert "S1" in state.settlements
    assert "p-early" in state.jobs
    assert state.members == {"p-early": "普通劳动力"}

    # An event for a person already on the roster goes straight through.
    pipe.feed([_stay("S2", "p-early", dt.date(2025, 3, 20), 50)])
    assert pipe.unjoined == 2 and "S2" in pipe.state_of(HH).settlements

    # ...and the joined events count when the month is judged.
    pipe.feed([_income(m, 2000) for m in ("2025-01", "2025-02", "2025-03")])
    assert pipe.alerts, "a 12000 yuan stay on a 2000/month household must raise an alert"
    alert = pipe.alerts[-1]
    assert alert.household_id == HH and alert.risk_type == "因病"
    assert Origin("medical", "medical/2025-03.csv", 3) in alert.evidence.sources


def test_unknown_person_stays_parked() -> None:
    pipe = OfflinePipeline().feed([_stay("S9", "nobody", dt.date(2025, 3, 5), 10)])
    assert pipe.unjoined == 1 and list(pipe.pending) == ["nobody"] and not pipe.states


# --- the bundled sample -------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_events() -> list[object]:
    items = list(parse_scenario(SAMPLE, Pseudonymiser(b"k" * 32)))
    events = [e for e in items if not isinstance(e, Reject)]
    assert len(items) - len(events) == len(read_csv(SAMPLE / "bad_rows.csv"))
    return events


@pytest.fixture(scope="module")
def sample_run(sample_events: list[object]) -> OfflinePipeline:
    return OfflinePipeline().feed(sample_events)


def test_sample_alerts_meet_recall_and_precision(sample_run: OfflinePipeline) -> None:
    truth = read_csv(SAMPLE / "truth.csv")
    at_risk = {r["户编号"] for r in truth if r["风险"] == "1"}
    alerted = {a.household_id for a in sample_run.alerts}
    assert alerted <= {r["户编号"] for r in truth}
    hits = alerted & at_risk
    recall, precision = len(hits) / len(at_risk), len(hits) / len(alerted)
    missed = sorted(at_risk - alerted)
    false = sorted(alerted - at_risk)
    assert recall >= 0.9, f"recall {recall:.2f}; missed {missed}"
    assert precision >= 0.7, f"precision {precision:.2f}; false leads {false}"
    assert sample_run.unjoined == 0  # every person in the sample is on the roster


def test_sample_replay_adds_no_new_alert_ids(sample_events: list[object]) -> None:
    pipe = OfflinePipeline().feed(sample_events)
    first = {a.id for a in pipe.alerts}
    assert len(first) == len(pipe.alerts), "one alert id per household and month"
    states = dict(pipe.states)
    pipe.feed(sample_events)
    assert {a.id for a in pipe.alerts} == first
    assert pipe.states == states  # folding the same events again changes no state


def _line_count(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def test_alert_sources_point_at_real_rows(sample_run: OfflinePipeline) -> None:
    lengths: dict[str, int] = {}
    bad = {(r["文件"], int(r["行号"])) for r in read_csv(SAMPLE / "bad_rows.csv")}
    assert bad
    checked = 0
    for alert in sample_run.alerts:
        assert alert.evidence.sources, alert.id
        for src in alert.evidence.sources:
            path = SAMPLE / src.file
            assert path.is_file(), f"{alert.id}: {src.file} does not exist"
            assert src.file.split("/")[0] == {"rural": "income", "medical": "medical",
                                              "employment": "employment"}[src.dept], src
            n = lengths.setdefault(src.file, _line_count(path))
            assert 2 <= src.line <= n, f"{alert.id}: {src.file}:{src.line} is not a data row"
            assert (src.file, src.line) not in bad, f"{alert.id} cites a rejected row {src}"
            checked += 1
    assert checked > 0


def test_income_sources_are_that_households_rows(sample_run: OfflinePipeline) -> None:
    rows: dict[str, list[str]] = {}
    for alert in sample_run.alerts[:100]:
        for src in alert.evidence.sources:
            if src.dept != "rural":
                continue
            if src.file not in rows:
                with (SAMPLE / src.file).open(encoding="utf-8-sig", newline="") as fh:
                    rows[src.file] = [line.split(",")[0] for line in fh]
            assert rows[src.file][src.line - 1] == alert.household_id, (alert.id, src)


# --- the real Faust agent -----------------------------------------------------------------

def test_household_detector_agent_with_test_context() -> None:
    """Drive the real ``household_risk_detector`` agent through Faust's test context: no
    broker, tables in memory."""
    agents = pytest.importorskip("streams.agents")
    from streams.app import alerts_topic, household_table

    sent: list[tuple[object, object]] = []

    async def fake_send(*args: object, key: object = None, value: object = None,
                        **kw: object) -> None:
        sent.append((key, value))

    async def scenario() -> None:
        saved_lines = dict(agents.reference.lines)
        agents.reference.lines[2025] = Decimal("7200")
        agents.reference_ready.set()
        from schemas.events import decode_event, encode

        original = alerts_topic.send
        alerts_topic.send = fake_send  # type: ignore[method-assign]
        try:
            async with agents.household_risk_detector.test_context() as agent:
                await agent.put(encode(_member("p1")), key=HH.encode())
                for m in ("2025-01", "2025-02", "2025-03"):
                    await agent.put(encode(_income(m, 300)), key=HH.encode())
        finally:
            alerts_topic.send = original  # type: ignore[method-assign]
            agents.reference.lines.clear()
            agents.reference.lines.update(saved_lines)
        alerts = [decode_event(v) for _, v in sent]  # type: ignore[arg-type]
        # 300 a month is far below the line: judged from the first month.
        assert [a.month for a in alerts] == [  # type: ignore[union-attr]
            "2025-01", "2025-02", "2025-03"]
        assert all(k == HH.encode() for k, _ in sent)
        assert household_table.get(HH.encode()) is not None

    asyncio.run(scenario())


def test_only_partitions_with_lag_on_an_idle_worker_count_as_stalled() -> None:
    from faust.types import TP

    from streams.agents import IDLE_BEFORE_RESUME, stalled

    a, b, c = TP("p.person-events", 0), TP("p.person-events", 1), TP("p.person-events", 2)
    committed = {a: 10, b: 4, c: None}
    ends = {a: 10, b: 9, c: 3}
    assert stalled(committed, ends, IDLE_BEFORE_RESUME + 1) == {b, c}
    # while events still flow the lag is being worked off: leave it to Faust
    assert stalled(committed, ends, IDLE_BEFORE_RESUME - 1) == set()
    assert stalled({a: 10}, {a: 10}, 600.0) == set()


def test_a_changelog_not_visible_yet_is_retried_not_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers starting together can see a table's changelog topic before its
    partitions: Faust raises PartitionsMismatch. That is not a bad message; dead-lettering
    it lost household events in a kill -9 test."""
    agents = pytest.importorskip("streams.agents")
    from faust.exceptions import PartitionsMismatch

    monkeypatch.setattr(agents, "TABLE_RETRY_SECONDS", 0.0)
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise PartitionsMismatch("changelog has 0 partitions")

    asyncio.run(agents._with_tables("test", flaky))
    assert len(calls) == 3

    async def broken() -> None:
        raise PartitionsMismatch("never there")

    monkeypatch.setattr(agents, "TABLE_RETRIES", 2)
    with pytest.raises(PartitionsMismatch):
        asyncio.run(agents._with_tables("test", broken))


def test_changelog_topics_are_laid_out_like_their_source_topics() -> None:
    from fanpin.kafka_admin import changelog_layout, worker_group
    from fanpin.settings import Settings

    settings = Settings(topic_prefix="t1", partitions=6)
    layout = changelog_layout(settings)
    assert layout == {f"{worker_group(settings)}-{t}-changelog": 6
                      for t in ("roster", "roster-pending", "household-state")}
    from streams.app import app
    # The names Faust itself uses for the worker's tables.
    assert {t.changelog_topic.get_topic_name().split("-worker-", 1)[1]
            for t in app.tables.values()} == {n.split("-worker-", 1)[1] for n in layout}

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
    # One id per household and month: a month judged again (late settlements) repeats it.
    assert len(first) == len({(a.household_id, a.month) for a in pipe.alerts})
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

def test_household_detector_agent_with_test_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drive the real ``household_risk_detector`` agent through Faust's test context: no
    broker, the household store in memory, events as one batch message and as single
    messages."""
    agents = pytest.importorskip("streams.agents")
    from streams.app import alerts_topic
    from streams.batch import MemoryStore, WriteBehind

    store = MemoryStore(4)
    monkeypatch.setattr(agents, "household_store", store)
    monkeypatch.setattr(agents, "_pending", WriteBehind())
    sent: list[tuple[object, object]] = []

    async def fake_send(*args: object, key: object = None, value: object = None,
                        **kw: object) -> None:
        sent.append((key, value))

    async def scenario() -> None:
        saved_lines = dict(agents.reference.lines)
        agents.reference.lines[2025] = Decimal("7200")
        agents.reference_ready.set()
        from schemas.events import decode_event, encode, encode_batch

        original = alerts_topic.send
        alerts_topic.send = fake_send  # type: ignore[method-assign]
        try:
            async with agents.household_risk_detector.test_context() as agent:
                await agent.put(encode_batch([encode(_member("p1")),
                                              encode(_income("2025-01", 300))]))
                for m in ("2025-02", "2025-03"):
                    await agent.put(encode(_income(m, 300)), key=HH.encode())
                # The state is written behind: not in the store until the next flush,
                # and the messages stay unacknowledged until then.
                assert store.get(HH.encode()) is None and agents._unacked
                async with agents._detector_lock:
                    await agents._flush_detector()
                assert not agents._unacked
        finally:
            alerts_topic.send = original  # type: ignore[method-assign]
            agents.reference.lines.clear()
            agents.reference.lines.update(saved_lines)
        alerts = [decode_event(v) for _, v in sent]  # type: ignore[arg-type]
        # 300 a month is far below the line: judged from the first month.
        assert [a.month for a in alerts] == [  # type: ignore[union-attr]
            "2025-01", "2025-02", "2025-03"]
        assert all(k == HH.encode() for k, _ in sent)
        assert store.get(HH.encode()) is not None

    asyncio.run(scenario())


# --- batches: the worker's message-level logic (streams.batch) ------------------------------

def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_batch_with_one_bad_event_keeps_the_others() -> None:
    from schemas.events import encode, split_batch
    from streams.batch import HOUSEHOLD_KINDS, unpack

    good = [encode(_income("2025-01", 300)), encode(_member("p1"))]
    bad = b'{"kind":"income.v1","id":"x"}'
    value = b'{"kind":"batch.v1","events":[' + b",".join([good[0], bad, good[1]]) + b"]}"
    assert len(split_batch(value)) == 3
    items = unpack(value, HOUSEHOLD_KINDS)
    assert [it.event is not None for it in items] == [True, False, True]
    assert items[1].raw == bad and "not a known event" in (items[1].error or "")
    # Not JSON at all: the whole message is one dead letter.
    [only] = unpack(b"\x00garbage", HOUSEHOLD_KINDS)
    assert only.event is None and only.raw == b"\x00garbage"
    # A monitoring line on the household topic does not belong there.
    [wrong] = unpack(encode(_line(2025, "7200")), HOUSEHOLD_KINDS)
    assert wrong.event is None and "MonitoringLine does not belong" in (wrong.error or "")


def test_batch_join_parks_forwards_and_partitions_by_household() -> None:
    from schemas.events import decode_event, encode, encode_batch, partition_of
    from streams.batch import PERSON_KINDS, MemoryStore, join, unpack

    roster, pending = MemoryStore(4), MemoryStore(4)
    early = encode_batch([encode(_stay("S1", "p-early", dt.date(2025, 3, 5), 12000))])
    out = _run(join(unpack(early, PERSON_KINDS), roster, pending, 6))
    assert not out.forward and not out.dead
    assert pending.get(b"p-early") is not None

    batch = encode_batch([encode(_member("p-early")),
                          encode(_ended("p-early", dt.date(2025, 3, 1)))])
    out = _run(join(unpack(batch, PERSON_KINDS), roster, pending, 6))
    assert list(out.forward) == [partition_of(HH.encode(), 6)]
    forwarded = [decode_event(raw) for raw in out.forward[partition_of(HH.encode(), 6)]]
    # roster row first, then the parked stay, then the new event: all for the household
    assert [type(e).__name__ for e in forwarded] == ["RosterMember", "MedicalSettlement",
                                                     "EmploymentEvent"]
    assert all(e.household_id == HH for e in forwarded)  # type: ignore[union-attr]
    assert pending.get(b"p-early") is None
    [(p, value)] = out.batches()
    assert p == partition_of(HH.encode(), 6)
    assert decode_event(value).events == forwarded  # type: ignore[union-attr]


@pytest.mark.parametrize("write_behind", [False, True])
def test_batch_detector_matches_the_offline_pipeline_on_the_sample(
        sample_events: list[object], write_behind: bool) -> None:
    """The worker's message-level path (join, then detect, batches of 500 per partition)
    raises exactly the alerts of the event-at-a-time pipeline, and one stored state per
    household, also when states are written behind every few messages."""
    from schemas.events import IncomeReport as Income
    from schemas.events import MonitoringLine, encode, encode_batch
    from streams.batch import (
        HOUSEHOLD_KINDS,
        PERSON_KINDS,
        MemoryStore,
        WriteBehind,
        detect,
        join,
        unpack,
    )
    from streams.rules.config import RuleConfig
    from streams.rules.engine import Policy

    lines = {e.year: e.line for e in sample_events if isinstance(e, MonitoringLine)}
    policy = Policy(lines=lines, config=RuleConfig.load())
    roster, pending, households = MemoryStore(4), MemoryStore(4), MemoryStore(4)
    alerts = []
    person: list[bytes] = []
    household: list[bytes] = []

    async def drain() -> None:
        for i in range(0, len(person), 500):
            out = await join(unpack(encode_batch(person[i:i + 500]), PERSON_KINDS), roster,
                             pending, 4)
            assert not out.dead
            for _, value in out.batches():
                household.append(value)
        person.clear()
        for i, value in enumerate(household):
            out = await detect(unpack(value, HOUSEHOLD_KINDS), households, policy,
                               cache=cache)
            assert not out.dead
            alerts.extend(out.alerts)
            if cache is not None and i % 3 == 2:
                cache.write(households)
        household.clear()

    cache = WriteBehind() if write_behind else None

    async def feed() -> None:
        month = None
        for ev in sample_events:
            if isinstance(ev, Income):
                if ev.month != month:  # a file boundary: the person rows went first
                    await drain()
                    month = ev.month
                household.append(encode_batch([encode(ev)]))
            elif isinstance(ev, RosterMember | MedicalSettlement | EmploymentEvent):
                person.append(encode(ev))
        await drain()

    _run(feed())
    if cache is not None:
        cache.write(households)
    offline = OfflinePipeline(lines=dict(lines))
    offline.feed(sample_events)
    assert sorted(a.id for a in alerts) == sorted(a.id for a in offline.alerts)
    assert {a.id: encode(a) for a in alerts} == {a.id: encode(a) for a in offline.alerts}
    assert sum(len(d) for d in households.data.values()) == len(offline.states)


@pytest.mark.parametrize("write_behind", [False, True])
def test_a_rule_failure_dead_letters_only_that_event(monkeypatch: pytest.MonkeyPatch,
                                                     write_behind: bool) -> None:
    """The household's state afterwards is as if the failing event never arrived, also
    when the events before it came in an earlier message still waiting to be written."""
    import streams.batch as batch
    from schemas.events import encode, encode_batch
    from streams.rules.config import RuleConfig
    from streams.rules.engine import Policy, step

    def flaky(state, ev, policy):  # type: ignore[no-untyped-def]
        if isinstance(ev, MedicalSettlement) and ev.settlement_id == "BAD":
            state.size = 99  # a half-done change that must not survive
            raise ValueError("boom")
        return step(state, ev, policy)

    monkeypatch.setattr(batch, "step", flaky)
    policy = Policy(lines={2025: Decimal("7200")}, config=RuleConfig.load())
    store = batch.MemoryStore(4)
    joined = [_member("p1"), _stay("S1", "p1", dt.date(2025, 1, 5), 100),
              _stay("BAD", "p1", dt.date(2025, 1, 6), 100), _income("2025-01", 300)]
    joined = [e if isinstance(e, RosterMember | IncomeReport) else
              batch.attach(e, batch.RosterLink(HH, REGION)) for e in joined]  # type: ignore[arg-type]
    cache = batch.WriteBehind() if write_behind else None
    first = encode_batch([encode(e) for e in joined[:2]])
    second = encode_batch([encode(e) for e in joined[2:]])
    out1 = _run(batch.detect(batch.unpack(first, batch.HOUSEHOLD_KINDS), store, policy,
                             cache=cache))
    out = _run(batch.detect(batch.unpack(second, batch.HOUSEHOLD_KINDS), store, policy,
                            cache=cache))
    assert not out1.dead
    assert [reason for _, reason in out.dead] == ["rule failed: ValueError: boom"]
    assert [a.month for a in out.alerts] == ["2025-01"]
    if cache is not None:
        assert store.get(HH.encode()) is None  # not written yet
        cache.write(store)
    from streams.rules.state import load_state
    state = load_state(store.get(HH.encode()))
    assert state.size == 2 and "S1" in state.settlements and "BAD" not in state.settlements


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


def test_changelog_topics_are_laid_out_like_their_source_topics() -> None:
    from fanpin.kafka_admin import changelog_layout, worker_group
    from fanpin.settings import Settings

    settings = Settings(topic_prefix="t1", partitions=6)
    layout = changelog_layout(settings)
    assert layout == {f"{worker_group(settings)}-{t}-changelog": 6
                      for t in ("roster", "roster-pending", "households")}
    from streams.app import household_store, pending_store, roster_store
    # The names the worker's stores write to.
    assert {household_store.topic.split("-worker-", 1)[1], roster_store.topic.split(
        "-worker-", 1)[1], pending_store.topic.split("-worker-", 1)[1]} == {
        n.split("-worker-", 1)[1] for n in layout}

"""The monthly figures an alert carries for the watch list's charts (``Evidence.history``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from schemas.events import Alert, MonthFigures, decode_event, encode
from streams.rules.engine import HISTORY_MONTHS, evaluate, step
from streams.rules.months import month_index
from streams.rules.state import HouseholdState
from tests.unit.test_rules import PLAIN, flat_history, income, job, medical, member, policy

ALERT_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "json" / "alert.v1.json"


def _alert(events: Sequence[object], month: str) -> Alert:
    pol = policy(PLAIN)
    state = HouseholdState()
    for ev in events:
        state, _ = step(state, ev, pol)  # type: ignore[arg-type]
    alert = evaluate(state, month_index(month), pol)
    assert alert is not None
    return alert


def _by_month(alert: Alert) -> dict[str, MonthFigures]:
    return {f.month: f for f in alert.evidence.history}


def _household() -> list[object]:
    # Income from 2024-01 to 2025-06 with 2025-02 never reported; a stay in 2025-03, one in
    # 2025-04 reversed in 2025-05, an outpatient bill in 2025-05; a job registered in
    # 2024-03, ended in 2025-05 and registered unemployed in 2025-06; wages paid monthly.
    reports = [r for r in flat_history("2024-01", "2025-06", 400) if r.month != "2025-02"]
    return [
        member("p1"),
        medical("A", "2025-03-10", "1000.50"),
        medical("B", "2025-04-05", 500),
        medical("R", "2025-05-02", -500, reverses="B"),
        medical("C", "2025-05-20", 80, inpatient=False),
        job("就业登记", "2024-03-01"),
        job("工资发放", "2025-04-15", amount="400"),
        job("解除劳动合同", "2025-05-20"),
        job("失业登记", "2025-06-02"),
        job("就业登记", "2025-06-20", person="p2"),
        *reports,
    ]


def test_history_holds_each_months_figures() -> None:
    alert = _alert(_household(), "2025-06")
    history = alert.evidence.history
    # 24 months would start in 2023-07; the first month with any figure is 2024-01.
    assert [f.month for f in history][:2] == ["2024-01", "2024-02"]
    assert history[-1].month == "2025-06"
    assert len(history) == 18
    by = _by_month(alert)
    assert by["2025-01"].income == Decimal("400.00")
    assert by["2025-02"].income is None  # not reported: a gap, not a zero
    assert by["2025-03"].out_of_pocket == Decimal("1000.50")
    assert by["2025-04"].out_of_pocket == Decimal("0.00")  # reversed the month after
    assert by["2025-05"].out_of_pocket == Decimal("80.00")  # the reversal itself is not money
    assert (by["2025-05"].job_losses, by["2025-05"].job_starts) == (1, 0)
    assert (by["2025-06"].job_losses, by["2025-06"].job_starts) == (1, 1)
    assert (by["2024-03"].job_losses, by["2024-03"].job_starts) == (0, 1)
    assert (by["2025-04"].job_losses, by["2025-04"].job_starts) == (0, 0)  # a wage is no event
    assert sum(f.job_losses for f in history) == 2
    assert sum(f.job_starts for f in history) == 2


def test_history_is_at_most_24_months_ending_at_the_alert_month() -> None:
    alert = _alert(flat_history("2023-01", "2025-06", 400), "2025-06")
    months = [f.month for f in alert.evidence.history]
    assert len(months) == HISTORY_MONTHS == 24
    assert (months[0], months[-1]) == ("2023-07", "2025-06")
    assert all(f.income == Decimal("400.00") for f in alert.evidence.history)


def test_history_starts_at_the_first_event_of_any_kind() -> None:
    events = [member("p1"), job("解除劳动合同", "2024-11-03"),
              *flat_history("2025-01", "2025-06", 300)]
    history = _alert(events, "2025-06").evidence.history
    assert history[0] == MonthFigures("2024-11", None, Decimal("0.00"), 1, 0)
    assert history[1] == MonthFigures("2024-12", None, Decimal("0.00"), 0, 0)
    assert history[2].income == Decimal("300.00")


def test_history_leaves_the_alert_id_alone() -> None:
    alert = _alert(_household(), "2025-06")
    key = f"{alert.household_id}|{month_index('2025-06')}|{alert.rule_version}"
    assert alert.id == "a" + hashlib.sha256(key.encode()).hexdigest()[:31]


def test_history_round_trips_and_old_alerts_still_decode() -> None:
    alert = _alert([*_household(), income("2025-06", 400)], "2025-06")
    assert decode_event(encode(alert)) == alert
    doc = json.loads(encode(alert))
    schema = json.loads(ALERT_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    doc["evidence"]["history"][0]["job_losses"] = "1"
    with pytest.raises(jsonschema.ValidationError):  # the schema does describe history
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    doc["evidence"]["history"][0]["job_losses"] = 0
    assert doc["evidence"]["history"][0] == {
        "month": "2024-01", "income": "400.00", "out_of_pocket": "0.00", "job_losses": 0,
        "job_starts": 0}
    del doc["evidence"]["history"]  # an alert published before the field existed
    old = decode_event(json.dumps(doc).encode())
    assert isinstance(old, Alert) and old.evidence.history == []

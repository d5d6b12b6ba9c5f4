"""Builders for watch-list tests (imported by the other watch-list test modules), and a
check that what they build survives the wire format."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from consumers.watchlist.models import AlertRecord, Entry, History, create_engine_for, init_db
from schemas import Alert, Evidence, Origin, decode_event, encode
from schemas.events import Reason

NOW = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)

# Village codes of the fictional province 99 (示范省).
VILLAGE_A = "990122003006"
VILLAGE_B = "990123001006"


def household(village: str = VILLAGE_A, n: int = 1) -> str:
    return f"{village}{n:04d}"


def make_alert(
    household_id: str = "9901220030060001",
    month: str = "2026-03",
    *,
    risk_type: str = "因病",
    severity: str = "中",
    rules: tuple[tuple[str, str, str], ...] | None = None,
    rule_version: str = "2026.11-1",
    household_type: str = "脱贫户",
    region_code: str | None = None,
    projected_per_capita: str = "7100.50",
    monitoring_line: str = "8300",
    alert_id: str | None = None,
    sources: list[Origin] | None = None,
) -> Alert:
    """An alert as the detector would publish it. ``rules`` is (rule, risk type, detail)."""
    if rules is None:
        rules = (("below_line", risk_type, f"预计人均纯收入 {projected_per_capita} 元低于监测线"),)
    reasons = [Reason(rule=r, risk_type=rt, detail=d) for r, rt, d in rules]  # type: ignore[arg-type]
    if sources is None:
        sources = [
            Origin("rural", f"income/{month}.csv", 17),
            Origin("medical", f"medical/{month}.csv", 203),
        ]
    evidence = Evidence(
        monitoring_line=Decimal(monitoring_line),
        line_year=int(month[:4]),
        household_size=4,
        projected_income_12m=Decimal("38402.00"),
        rigid_spending_12m=Decimal("10000.00"),
        projected_per_capita=Decimal(projected_per_capita),
        baseline_income_12m=Decimal("41230.40"),
        months_of_history=12,
        sources=sources,
    )
    return Alert(
        id=alert_id or f"alert:{household_id}:{month}:{rule_version}",
        household_id=household_id,
        region_code=region_code or household_id[:12],
        household_type=household_type,  # type: ignore[arg-type]
        month=month,
        rule_version=rule_version,
        risk_type=risk_type,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        reasons=reasons,
        evidence=evidence,
    )


def sqlite_engine(tmp_path: Path) -> Engine:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'var' / 'watchlist.db'}")
    init_db(engine)
    return engine


def table_counts(session: Session) -> tuple[int, int, int]:
    """(entries, alert records, history rows)."""
    return (
        session.scalar(select(func.count()).select_from(Entry)) or 0,
        session.scalar(select(func.count()).select_from(AlertRecord)) or 0,
        session.scalar(select(func.count()).select_from(History)) or 0,
    )


def snapshot(session: Session) -> list[tuple[object, ...]]:
    """Every entry's content, for comparing before and after a replay."""
    session.expire_all()
    return [
        (
            e.entry_key, e.state, e.severity, e.risk_type, e.risk_types, e.rules, e.first_month,
            e.last_month, e.alert_count, e.evidence_json, e.rule_version, e.updated_at,
        )
        for e in session.scalars(select(Entry).order_by(Entry.id))
    ]


@pytest.mark.parametrize("severity", ["高", "中", "低"])
def test_make_alert_round_trips_the_wire_format(severity: str) -> None:
    alert = make_alert(severity=severity, projected_per_capita="-120.50")
    assert decode_event(encode(alert)) == alert

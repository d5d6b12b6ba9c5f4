"""The published JSON Schemas match the models, and encoded events validate against them."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import msgspec
import pytest

from schemas.events import (
    Alert,
    DeadLetter,
    EmploymentEvent,
    EventBatch,
    Evidence,
    FeedFile,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    Origin,
    Reason,
    Region,
    RosterMember,
    decode_event,
    encode,
    encode_batch,
    json_schemas,
    partition_of,
    split_batch,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "schemas" / "json"
REGENERATE = "run `.venv/bin/python scripts/gen_schemas.py` and commit schemas/json/"


def _gen_module():  # the script is not a package module; load it by path
    spec = importlib.util.spec_from_file_location("gen_schemas", REPO / "scripts/gen_schemas.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _gen_module()
KINDS = sorted(json_schemas())


def _schema(kind: str) -> dict[str, object]:
    return json.loads((SCHEMA_DIR / f"{kind}.json").read_text(encoding="utf-8"))


# --- checked-in files equal the models ---------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_checked_in_schema_matches_model(kind: str) -> None:
    path = SCHEMA_DIR / f"{kind}.json"
    assert path.is_file(), f"{path.name} is missing: {REGENERATE}"
    expected = GEN.render(json_schemas()[kind])
    assert path.read_text(encoding="utf-8") == expected, (
        f"schemas/json/{kind}.json is out of date with schemas/events.py: {REGENERATE}")


def test_no_stale_schema_files() -> None:
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == {f"{k}.json" for k in KINDS}, f"stale or missing files: {REGENERATE}"


def test_schema_files_are_pretty_sorted_utf8() -> None:
    text = (SCHEMA_DIR / "roster_member.v1.json").read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert "脱贫户" in text  # ensure_ascii=False keeps the Chinese enum values readable
    assert "\\u" not in text
    assert "\r" not in text


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(_schema(kind))


# --- sample events validate ---------------------------------------------------------------

def _origin(dept: str = "rural", file: str = "income/2025-01.csv", line: int = 2) -> Origin:
    return Origin(dept, file, line)  # type: ignore[arg-type]


INCOME = IncomeReport(
    id="inc-1", origin=_origin(), household_id="9901210010010001", region_code="990121001001",
    month="2025-01", household_size=3, wages=Decimal("1200.10"), business=Decimal("300.00"),
    property=Decimal("0.00"), transfers=Decimal("150.25"), total=Decimal("1650.35"))

SAMPLES: list[tuple[str, msgspec.Struct]] = [
    ("region.v1", Region(id="r-1", origin=_origin("statistics", "regions.csv", 2),
                         code="990000000000", name="示范省", level="省")),
    ("monitoring_line.v1", MonitoringLine(id="l-1", origin=_origin("rural", "thresholds.csv", 2),
                                          year=2025, line=Decimal("7800.00"))),
    ("roster_member.v1", RosterMember(
        id="m-1", origin=_origin("rural", "roster.csv", 5), household_id="9901210010010001",
        region_code="990121001001", household_type="脱贫户", household_size=3, member_no=1,
        person="p" * 32, relation="户主", labour="普通劳动力")),
    ("income.v1", INCOME),
    ("medical.v1", MedicalSettlement(
        id="med-1", origin=_origin("medical", "medical/2025-03.csv", 7), settlement_id="S001",
        person="p" * 32, insured_county="990121", visit_type="住院",
        admitted=dt.date(2025, 2, 27), settled=dt.date(2025, 3, 4), total=Decimal("-30000.00"),
        basic_insurance=Decimal("-15000.00"), critical_illness=Decimal("-2000.00"),
        medical_assistance=Decimal("0.00"), out_of_pocket=Decimal("-13000.00"), reversal=True,
        reverses="S000", household_id="9901210010010001")),
    ("employment.v1", EmploymentEvent(
        id="emp-1", origin=_origin("employment", "employment/2025-03.csv", 9),
        business_id="B1", person="p" * 32, region_code="990121001001", business_type="工资发放",
        date=dt.date(2025, 3, 15), employer="某公司", amount=Decimal("4200.00"),
        work_place="省外")),
    ("employment.v1", EmploymentEvent(
        id="emp-2", origin=_origin("employment", "employment/2025-03.csv", 10),
        business_id="B2", person="p" * 32, region_code="990121001001",
        business_type="解除劳动合同", date=dt.date(2025, 3, 31), employer="某公司", amount=None,
        work_place=None)),
    ("alert.v1", Alert(
        id="a" + "0" * 31, household_id="9901210010010001", region_code="990121001001",
        household_type="监测户", month="2025-03", rule_version="r1/test", risk_type="因病",
        severity="高", reasons=[Reason("medical-spike", "因病", "单次住院个人自付 13000.00 元")],
        evidence=Evidence(
            monitoring_line=Decimal("7800"), line_year=2025, household_size=3,
            projected_income_12m=Decimal("12000.00"), rigid_spending_12m=Decimal("13000.00"),
            projected_per_capita=Decimal("-333.33"), baseline_income_12m=Decimal("20000.00"),
            months_of_history=12, sources=[_origin()]))),
    ("dead_letter.v1", DeadLetter(topic="fanpin.person-events", partition=0, offset=42,
                                  reason="not a known event", payload="{}", consumer="x")),
    ("feed_file.v1", FeedFile(id="0" * 32, feed="medical", dept="medical",
                              file="medical/2025-01.csv", sha256="a" * 64, rows_accepted=900,
                              rejects={"bad_id": 2}, file_error=None,
                              published_at=dt.datetime(2025, 2, 3, 4, 5, 6, tzinfo=dt.UTC))),
    ("batch.v1", EventBatch(events=[INCOME])),
]


def test_samples_cover_every_kind() -> None:
    assert {k for k, _ in SAMPLES} == set(KINDS)


@pytest.mark.parametrize(("kind", "event"), SAMPLES,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(SAMPLES)])
def test_encoded_sample_validates(kind: str, event: msgspec.Struct) -> None:
    doc = json.loads(encode(event))
    assert doc["kind"] == kind
    jsonschema.validate(doc, _schema(kind), cls=jsonschema.Draft202012Validator)
    assert decode_event(encode(event)) == event


@pytest.mark.parametrize(("mutate", "why"), [
    (lambda d: d.pop("total"), "missing required field"),
    (lambda d: d.update(household_size="3"), "wrong type"),
    (lambda d: d.update(kind="medical.v1"), "wrong kind for this schema"),
    (lambda d: d.update(origin=["rural", "income/2025-01.csv"]), "origin too short"),
], ids=["missing-total", "size-as-string", "wrong-kind", "short-origin"])
def test_schema_rejects_broken_income(mutate, why: str) -> None:
    doc = json.loads(encode(INCOME))
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, _schema("income.v1"), cls=jsonschema.Draft202012Validator)


# --- decoding -----------------------------------------------------------------------------

def test_unknown_kind_is_rejected() -> None:
    doc = json.loads(encode(INCOME))
    doc["kind"] = "income.v9"
    with pytest.raises(msgspec.ValidationError, match="income.v9"):
        decode_event(json.dumps(doc).encode())


@pytest.mark.parametrize("raw", [b"not json", b"", b"{\"kind\": ", "收入".encode("gbk")],
                         ids=["text", "empty", "truncated", "gbk-bytes"])
def test_non_json_is_rejected(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event(raw)


def test_missing_kind_is_rejected() -> None:
    doc = json.loads(encode(INCOME))
    del doc["kind"]
    with pytest.raises(msgspec.ValidationError):
        decode_event(json.dumps(doc).encode())


def test_money_is_exact_decimal_through_round_trip() -> None:
    amount = Decimal("12345678901234.57")  # beyond float precision
    ev = msgspec.structs.replace(INCOME, wages=amount, transfers=Decimal("0.10"),
                                 total=amount + Decimal("300.10"))
    raw = encode(ev)
    assert b'"12345678901234.57"' in raw  # encoded as a string, never a float
    back = decode_event(raw)
    assert isinstance(back, IncomeReport)
    assert isinstance(back.wages, Decimal) and back.wages == amount
    assert str(back.transfers) == "0.10"  # trailing zero (the precision) survives
    assert back.wages + back.business + back.property + back.transfers == back.total


def test_a_batch_is_its_events_encoded_one_by_one() -> None:
    """Producers build batch messages by joining events they already encoded; that must
    be exactly the batch ``encode`` would write, and split back into the same events."""
    roster = next(e for k, e in SAMPLES if k == "roster_member.v1")
    events = [INCOME, roster]
    joined = encode_batch([encode(e) for e in events])
    assert joined == encode(EventBatch(events=events))  # type: ignore[arg-type]
    assert decode_event(joined) == EventBatch(events=events)  # type: ignore[arg-type]
    assert split_batch(joined) == [encode(e) for e in events]
    with pytest.raises(msgspec.DecodeError):
        split_batch(b"not json")


def test_partition_of_is_stable_and_in_range() -> None:
    """The partition is part of the contract between processes: it must never change for
    a key (crc32 modulo the partition count)."""
    assert partition_of(b"9901210010010001", 4) == 3
    assert partition_of(b"p5c46ad76eb63e2736cc4c384ece5cf4", 4) == 0
    counts = [0] * 6
    for i in range(6000):
        p = partition_of(f"99012100100{i:05d}".encode(), 6)
        assert 0 <= p < 6
        counts[p] += 1
    assert min(counts) > 800  # spread evenly enough

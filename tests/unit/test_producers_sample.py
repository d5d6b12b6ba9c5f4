"""Acceptance: the whole sample scenario parses to exactly the rejects of bad_rows.csv,
and nothing personal leaves the producer."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from fanpin.privacy import Pseudonymiser
from producers import FORMATS
from producers.common import REJECT_CODES, Event, ParseContext, Reject
from producers.scenario import load_known_households, scenario_files
from schemas import encode
from schemas.events import (
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    Region,
    RosterMember,
)

# The bundled byte-for-byte copy of ../shared/feeds/sample, so the test runs in any checkout.
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
KEY = b"unit-test-pseudonym-key-0123456789"


@pytest.fixture(scope="module")
def sample() -> Path:
    if not (SAMPLE / "bad_rows.csv").is_file():
        pytest.skip(f"sample scenario not found at {SAMPLE}")
    return SAMPLE


@pytest.fixture(scope="module")
def parsed(sample: Path) -> tuple[list[Event], list[Reject], int]:
    """(events, rejects, data rows) over the whole sample."""
    ctx = ParseContext(Pseudonymiser(KEY), load_known_households(sample / "roster.csv"))
    events: list[Event] = []
    rejects: list[Reject] = []
    rows = 0
    for rel, path, fmt in scenario_files(sample):
        text = path.read_bytes().decode("gb18030" if rel.startswith("medical/") else "utf-8-sig")
        rows += sum(1 for line in text.split("\n")[1:] if line.strip())
        for item in fmt.parse_file(path, rel, ctx):
            (rejects if isinstance(item, Reject) else events).append(item)
    return events, rejects, rows


def _bad_rows(sample: Path) -> dict[tuple[str, int], str]:
    with (sample / "bad_rows.csv").open(encoding="utf-8-sig", newline="") as f:
        return {(r["文件"], int(r["行号"])): r["原因"] for r in csv.DictReader(f)}


def test_rejects_match_bad_rows_exactly(sample: Path, parsed) -> None:
    _, rejects, _ = parsed
    expected = _bad_rows(sample)
    got = {(r.file, r.line): r.code for r in rejects}
    assert len(got) == len(rejects), "one reject per line"
    wrongly_rejected = {k: got[k] for k in got.keys() - expected.keys()}
    wrongly_accepted = {k: expected[k] for k in expected.keys() - got.keys()}
    assert not wrongly_rejected, f"valid rows rejected: {wrongly_rejected}"
    assert not wrongly_accepted, f"invalid rows accepted: {wrongly_accepted}"
    wrong_code = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong_code, f"(got, expected) codes differ: {wrong_code}"


def test_event_count_is_rows_minus_rejects(parsed) -> None:
    events, rejects, rows = parsed
    assert len(events) == rows - len(rejects)
    assert len(events) > 20_000


def test_every_reject_is_explained(parsed) -> None:
    _, rejects, _ = parsed
    for r in rejects:
        assert r.code in REJECT_CODES
        assert r.reason == f"{r.code}: {r.message}"
        assert re.search(r"[\u4e00-\u9fff]", r.message), r.message  # Chinese, for a clerk


def test_event_kinds_and_origins(sample: Path, parsed) -> None:
    events, _, _ = parsed
    kinds = Counter(type(e).__name__ for e in events)
    regions_rows = len((sample / "regions.csv").read_text("utf-8-sig").splitlines()) - 1
    assert kinds[Region.__name__] == regions_rows
    assert kinds[MonitoringLine.__name__] == 6
    assert kinds[RosterMember.__name__] == 1035
    assert set(kinds) == {
        c.__name__
        for c in (
            Region,
            MonitoringLine,
            RosterMember,
            IncomeReport,
            MedicalSettlement,
            EmploymentEvent,
        )
    }
    for e in events:
        assert e.origin.line >= 2
        assert "\\" not in e.origin.file
        assert e.origin.dept == FORMATS[_fmt_key(e.origin.file)].DEPARTMENT


def _fmt_key(rel: str) -> str:
    return rel.split("/")[0].removesuffix(".csv")


def test_ids_are_natural_keys_and_stable(sample: Path, parsed) -> None:
    events, _, _ = parsed
    ids = Counter(e.id for e in events)
    # Only medical settlements may repeat (the feed duplicates some settlements).
    repeated = {i for i, n in ids.items() if n > 1}
    assert repeated and all(i.startswith("medical:") for i in repeated)
    by_id: dict[str, list[Event]] = {}
    for e in events:
        by_id.setdefault(e.id, []).append(e)
    for i in repeated:
        first, *rest = by_id[i]
        for other in rest:
            # Same settlement: same everything but where it was read.
            assert other.origin != first.origin
            assert msgspec.structs.replace(other, origin=first.origin) == first
    # Parsing again with a fresh context gives equal events.
    ctx = ParseContext(Pseudonymiser(KEY), load_known_households(sample / "roster.csv"))
    again = [
        x
        for rel, path, fmt in scenario_files(sample)
        if rel.startswith(("roster", "medical/2025-0"))
        for x in fmt.parse_file(path, rel, ctx)
        if not isinstance(x, Reject)
    ]
    originals = {(e.origin.file, e.origin.line): e for e in events}
    assert again and all(originals[(e.origin.file, e.origin.line)] == e for e in again)


def test_reversals_and_late_settlements_are_kept(parsed) -> None:
    events, _, _ = parsed
    medical = [e for e in events if isinstance(e, MedicalSettlement)]
    reversals = [e for e in medical if e.reversal]
    assert len(reversals) == 20
    assert all(e.reverses and e.total < 0 and e.out_of_pocket <= 0 for e in reversals)
    settled_ids = {e.settlement_id for e in medical}
    assert all(e.reverses in settled_ids for e in reversals)
    late = [e for e in medical if f"{e.settled:%Y-%m}" < e.origin.file[8:15]]
    assert len(late) > 100


# --------------------------------------------------------------------------------------
# Privacy


def _roster_people(sample: Path) -> tuple[set[str], set[str]]:
    with (sample / "roster.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["身份证号"] for r in rows}, {r["姓名"] for r in rows}


def test_no_id_number_or_name_in_any_event(sample: Path, parsed) -> None:
    events, _, _ = parsed
    ids, names = _roster_people(sample)
    assert len(ids) == 1035 and len(names) > 500
    blob = b"\n".join(encode(e) for e in events).decode("utf-8")
    # Every run of 15+ digits/X in the output, compared with the roster's ID numbers
    # (both cases of the check character).
    runs = set(re.findall(r"[0-9]{17}[0-9Xx]|[0-9]{15,}", blob))
    leaked = {r.upper() for r in runs} & ids
    assert not leaked, f"{len(leaked)} ID numbers in events"
    # Every distinct run of Chinese text in the output; no name may be inside one.
    texts = set(re.findall(r"[\u3400-\u9fff]+", blob))
    assert texts, "expected some Chinese text (places, visit types)"
    leaked_names = {n for n in names for t in texts if n in t}
    assert not leaked_names, f"names in events: {sorted(leaked_names)[:5]}"
    # And the pseudonyms really are there instead.
    assert sum(isinstance(e, RosterMember) and e.person.startswith("p") for e in events) == 1035


def test_no_id_number_or_name_in_any_reject(sample: Path, parsed) -> None:
    _, rejects, _ = parsed
    ids, names = _roster_people(sample)
    for r in rejects:
        assert not re.search(r"(?<![0-9])([0-9]{17}[0-9Xx]|[0-9]{15})(?![0-9Xx])", r.message)
        assert not any(n in r.message for n in names), r.message
        assert not any(i in r.message for i in ids)
    masked = [r.message for r in rejects if r.code == "bad_id_checksum"]
    assert masked and all("********" in m for m in masked)


def test_medical_and_employment_people_are_in_the_roster(sample: Path, parsed) -> None:
    """The sample links every person; the count of unlinked people is reported."""
    events, _, _ = parsed
    roster = {e.person for e in events if isinstance(e, RosterMember)}
    medical = {e.person for e in events if isinstance(e, MedicalSettlement)}
    employment = {e.person for e in events if isinstance(e, EmploymentEvent)}
    assert medical - roster == set()
    assert employment - roster == set()

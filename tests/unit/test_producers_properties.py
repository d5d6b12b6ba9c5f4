"""Property tests: no input makes a parser raise; the fast paths agree with the full check."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanpin.privacy import Pseudonymiser
from producers import FORMATS, employment, income, medical, roster
from producers.common import (
    REJECT_CODES,
    FileError,
    ParseContext,
    Reject,
    RowError,
    id_check_digit,
    id_number_valid,
    money_value,
    read_csv,
)
from schemas import encode
from schemas.events import (
    EmploymentEvent,
    IncomeReport,
    MedicalSettlement,
    MonitoringLine,
    Origin,
    Region,
    RosterMember,
)

EVENT_TYPES = (
    Region,
    MonitoringLine,
    RosterMember,
    IncomeReport,
    MedicalSettlement,
    EmploymentEvent,
)
KEY = b"unit-test-pseudonym-key-0123"
# No example database: nothing is written into the repository.
SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
QUICK = settings(max_examples=100, deadline=None, database=None)

# A valid row of each format, to mutate.
BASES: dict[str, str] = {
    "regions": "990121001000,城关镇,乡镇",
    "thresholds": "2025,8700",
    "roster": "9901220030060001,990122003006,一般农户,4,2,谭英娟,990122198904020880,"
    "配偶,技能劳动力",
    "income": "9901220020060006,990122002006,2025-04,2,8929.45,1266.68,0.00,242.08,10438.21",
    "medical": "JS07000001839,99012219820719309X,方强艳,990122,普通门诊,白沙县人民医院,2025/04/22,"
    "2025/04/22,164.24,86.47,0.00,0.00,77.77,正常,",
    "employment": "RS07000018048,990123196802014815,谭超梅,990123001006,工资发放,20250415,"
    "宁波某制衣厂,3334.32,省外",
}
REVERSAL = (
    "JS07000018161,99012219820719309X,方强艳,990122,普通门诊,白沙县人民医院,2025/04/22,"
    "2025/04/30,-164.24,-86.47,-0.00,-0.00,-77.77,冲销,JS07000001839"
)
INTERESTING = [
    "",
    " ",
    "0",
    "0.00",
    "-0.00",
    "00.00",
    "-1.00",
    "1.5",
    "1e3",
    "NaN",
    "-Infinity",
    "三千",
    "１２３.４５",
    "1_000.00",
    "+1.00",
    "9" * 13,
    "9" * 20 + ".00",
    "2026-00",
    "2025-12",
    "20261345",
    "20250229",
    "20240229",
    "2026/13/45",
    "2025/4/9",
    "2025/04/23",
    "99012219820719309X",
    "99012219820719309x",
    "990122196412155051",
    "990123196802014815",
    "冲销",
    "正常",
    "社保转移",
    "工资发放",
    "就业登记",
    "省外",
    "县内",
    "住院",
    "急诊",
    "脱贫户",
    "村",
    "\x00",
    "\n",
    "\r",
    '"',
    ",",
    "方强艳",
    "JS07000001839",
    "9901220020069999",
]


ONE_LINE = [v for v in INTERESTING if "\n" not in v and "\r" not in v]


def ctx(known: set[str] | None = None) -> ParseContext:
    return ParseContext(Pseudonymiser(KEY), known)


def base_row(name: str) -> dict[str, str]:
    fmt = FORMATS[name]
    return dict(zip(fmt.COLUMNS, BASES[name].split(","), strict=True))


def check_result(result: object, origin: Origin) -> None:
    if isinstance(result, Reject):
        assert result.code in REJECT_CODES, result
        assert result.message and (result.file, result.line) == (origin.file, origin.line)
    else:
        assert isinstance(result, EVENT_TYPES), result
        assert result.origin == origin
        encode(result)  # always encodable


values = st.one_of(st.text(max_size=40), st.sampled_from(INTERESTING))


@pytest.mark.parametrize("name", list(FORMATS))
@SETTINGS
@given(data=st.data())
def test_any_dict_gives_an_event_or_a_known_reject(name: str, data: st.DataObject) -> None:
    fmt = FORMATS[name]
    keys = st.one_of(st.sampled_from(fmt.COLUMNS), st.text(max_size=5))
    row = data.draw(st.dictionaries(keys, values, max_size=len(fmt.COLUMNS) + 2))
    origin = Origin(fmt.DEPARTMENT, f"{name}/2025-04.csv", 7)
    check_result(fmt.parse_row(row, origin, ctx({"9901220020060006"})), origin)


@pytest.mark.parametrize("name", list(FORMATS))
@SETTINGS
@given(data=st.data())
def test_mutated_valid_rows(name: str, data: st.DataObject) -> None:
    fmt = FORMATS[name]
    row = base_row(name)
    if name == "medical" and data.draw(st.booleans()):
        row = dict(zip(fmt.COLUMNS, REVERSAL.split(","), strict=True))
    for col in data.draw(st.lists(st.sampled_from(fmt.COLUMNS), max_size=3, unique=True)):
        row[col] = data.draw(values)
    origin = Origin(fmt.DEPARTMENT, f"{name}/2025-04.csv", 7)
    check_result(fmt.parse_row(row, origin, ctx({"9901220020060006"})), origin)


@pytest.mark.parametrize(
    "mod", [income, medical, employment, roster], ids=lambda m: m.__name__
)
@SETTINGS
@given(data=st.data())
def test_fast_path_agrees_with_the_full_check(mod, data: st.DataObject) -> None:
    """parse_row (fast path first) == parse_row_checked, with warm and cold caches, and
    fast_line on the raw line never returns an event the full check would not."""
    name = mod.__name__.rsplit(".", 1)[1]
    row = base_row(name)
    if mod is medical and data.draw(st.booleans()):
        row = dict(zip(mod.COLUMNS, REVERSAL.split(","), strict=True))
    for col in data.draw(st.lists(st.sampled_from(mod.COLUMNS), max_size=2, unique=True)):
        row[col] = data.draw(values)
    origin = Origin(mod.DEPARTMENT, f"{name}/2025-04.csv", 9)
    known = {"9901220020060006"}
    cold = mod.parse_row(row, origin, ctx(known))
    warm_ctx = ctx(known)
    checked = mod.parse_row_checked(row, origin, warm_ctx)
    assert cold == checked
    assert mod.parse_row(row, origin, warm_ctx) == checked
    line = ",".join(row[c] for c in mod.COLUMNS)
    fast = mod.fast_line(line, origin, warm_ctx)
    if fast is not None:
        assert fast == checked
        assert encode(fast) == encode(checked)


@QUICK
@given(
    st.decimals(
        min_value=Decimal("-999999999999.99"),
        max_value=Decimal("999999999999.99"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_money_round_trips(d: Decimal) -> None:
    parsed = money_value(f"{d:.2f}", "金额")
    assert parsed == d and parsed.as_tuple().exponent == -2
    assert not str(parsed).startswith("-0.00")


@QUICK
@given(st.text(max_size=30))
def test_money_raises_only_row_errors(s: str) -> None:
    try:
        money_value(s, "金额")
    except RowError as e:
        assert e.code in REJECT_CODES


@QUICK
@given(
    st.from_regex(
        r"99[0-9]{4}(19[0-9]{2}|20[01][0-9])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}",
        fullmatch=True,
    ),
    st.sampled_from("0123456789X"),
)
def test_id_check_digit(first17: str, check: str) -> None:
    assert id_number_valid(first17 + check) == (check == id_check_digit(first17))
    assert id_number_valid(first17 + id_check_digit(first17).lower())


@pytest.mark.parametrize("name", list(FORMATS))
@QUICK
@given(tail=st.binary(max_size=300), crlf=st.booleans())
def test_any_file_content_gives_rows_or_a_file_error(name: str, tail: bytes, crlf: bool) -> None:
    fmt = FORMATS[name]
    enc = "gbk" if fmt.ENCODING == "gbk" else "utf-8"
    head = (",".join(fmt.COLUMNS) + ("\r\n" if crlf else "\n")).encode(enc)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.csv"
        p.write_bytes(head + tail)
        try:
            out = list(fmt.parse_file(p, f"{name}/f.csv", ctx()))
        except FileError as e:
            assert str(e).startswith(f"{name}/f.csv：")
            return
    for x in out:
        if isinstance(x, Reject):
            assert x.code in REJECT_CODES
        else:
            assert isinstance(x, EVENT_TYPES)


@pytest.mark.parametrize("name", ["income", "medical", "employment", "roster"])
@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_files_of_mutated_rows(name: str, data: st.DataObject) -> None:
    """Whole files of slightly broken rows: one result per non-blank line, lines in order,
    and the fast path over raw lines gives exactly what the full check gives."""
    fmt = FORMATS[name]
    lines = []
    for _ in range(data.draw(st.integers(1, 8))):
        fields = BASES[name].split(",")
        for i in data.draw(st.lists(st.integers(0, len(fields) - 1), max_size=2)):
            fields[i] = data.draw(st.sampled_from(ONE_LINE))
        for i in data.draw(st.lists(st.integers(0, len(fields) - 1), max_size=2)):
            if '"' not in fields[i]:
                fields[i] = f'"{fields[i]}"'
        line = ",".join(fields)
        if data.draw(st.booleans()):
            line = line[: data.draw(st.integers(0, len(line)))]
        lines.append(line)
    body = "\r\n".join([",".join(fmt.COLUMNS), *lines]) + "\r\n"
    enc = "gb18030" if name == "medical" else "utf-8"
    rel = f"{name}/f.csv"
    c = ctx()
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.csv"
        p.write_bytes(body.encode(enc))
        list(fmt.parse_file(p, rel, c))  # warm the caches so the fast path is taken
        out = list(fmt.parse_file(p, rel, c))
        full = [
            item
            if isinstance(item, Reject)
            else fmt.parse_row_checked(item[1], Origin(fmt.DEPARTMENT, rel, item[0]), ctx())
            for item in read_csv(p, rel, fmt.COLUMNS, fmt.ENCODING)
        ]
    physical = body.split("\n")
    expected_lines = [i + 1 for i, ln in enumerate(physical) if i > 0 and ln.strip()]
    got = [x.line if isinstance(x, Reject) else x.origin.line for x in out]
    assert got == expected_lines
    assert out == full

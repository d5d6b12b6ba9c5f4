"""fanpin simulate: the scenario generator writes the sample's formats, its invalid rows
are exactly what the parsers reject, and truth.csv follows the feeds README's test."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from fanpin.cli import main
from fanpin.privacy import Pseudonymiser
from fanpin.simulate import (
    SimulateError,
    build_regions,
    id_check,
    monitoring_line,
    parse_mix,
    simulate,
)
from producers.common import REJECT_CODES, Reject, id_number_valid
from producers.scenario import parse_scenario
from tests.helpers import SAMPLE

MONTHLY = ("income", "medical", "employment")
ENCODING = {"income": "utf-8", "medical": "gbk", "employment": "utf-8"}
SAMPLE_CODES = list(REJECT_CODES)[:11]  # the departments' bad_rows.csv vocabulary


def _scenario(root: Path, **kw: object) -> Path:
    args: dict[str, object] = {"households": 60, "months": 14, "seed": 5}
    args.update(kw)
    simulate(root, **args)  # type: ignore[arg-type]
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _scenario(tmp_path_factory.mktemp("sim") / "small")


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More households and four times the mess, so every kind of trouble shows up."""
    return _scenario(tmp_path_factory.mktemp("sim") / "messy", households=150, months=24,
                     seed=9, mess=4.0)


def _text(path: Path, encoding: str = "utf-8") -> str:
    data = path.read_bytes()
    assert b"\r\n" in data and data.count(b"\n") == data.count(b"\r\n"), path
    return data.decode(encoding)


def _rows(path: Path, encoding: str = "utf-8-sig") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode(encoding), newline="")))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _cents(text: str) -> int:
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    value = int(whole) * 100 + int(frac)
    return -value if neg else value


# --------------------------------------------------------------------------------------
# Formats


def test_layout_encodings_and_headers(small: Path) -> None:
    assert sorted(p.name for p in small.iterdir()) == [
        "bad_rows.csv", "employment", "income", "medical", "regions.csv", "roster.csv",
        "thresholds.csv", "truth.csv"]
    months = [f"2024-{m:02d}" for m in (11, 12)] + [f"2025-{m:02d}" for m in range(1, 13)]
    for kind in MONTHLY:
        assert sorted(p.stem for p in (small / kind).iterdir()) == months
    # BOM on regions.csv and roster.csv only; medical is GBK (and not UTF-8).
    for name in ("regions.csv", "roster.csv"):
        assert (small / name).read_bytes().startswith(b"\xef\xbb\xbf")
    for name in ("thresholds.csv", "truth.csv", "bad_rows.csv", "income/2025-01.csv",
                 "employment/2025-01.csv", "medical/2025-01.csv"):
        assert not (small / name).read_bytes().startswith(b"\xef\xbb\xbf")
    medical = (small / "medical/2025-01.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        medical.decode("utf-8")
    assert "普通门诊" in medical.decode("gbk")
    # CRLF everywhere, the last line included.
    for path in small.rglob("*.csv"):
        data = path.read_bytes()
        assert data.endswith(b"\r\n") and data.count(b"\n") == data.count(b"\r\n"), path


def test_headers_are_the_samples(small: Path) -> None:
    if not (SAMPLE / "roster.csv").is_file():
        pytest.skip("sample scenario not bundled")
    names = ["regions.csv", "thresholds.csv", "roster.csv", "truth.csv", "bad_rows.csv",
             "income/2025-01.csv", "medical/2025-01.csv", "employment/2025-01.csv"]
    for name in names:
        enc = "gbk" if name.startswith("medical") else "utf-8-sig"
        ours = (small / name).read_bytes().decode(enc).split("\r\n")[0]
        theirs = (SAMPLE / name).read_bytes().decode(enc).split("\r\n")[0]
        assert ours == theirs, name


def test_regions_for_300_households_are_the_samples_tree() -> None:
    if not (SAMPLE / "regions.csv").is_file():
        pytest.skip("sample scenario not bundled")
    sample = [(r["行政区划代码"], r["名称"], r["级别"]) for r in _rows(SAMPLE / "regions.csv")]
    assert build_regions(300).rows == sample
    big = build_regions(100_000)
    codes = [c for c, _, _ in big.rows]
    assert len(set(codes)) == len(codes) and len(big.villages) == round(100_000 * 72 / 300)
    assert all(len(c) == 12 and c.startswith("99") for c in codes)


def test_thresholds_cover_the_simulated_years(small: Path) -> None:
    lines = {int(r["年度"]): r["监测范围"] for r in _rows(small / "thresholds.csv")}
    # 2024-11 + 14 months + 11 more for truth ends in 2026: one year either side.
    assert lines == {2023: "8050", 2024: "8300", 2025: "8700", 2026: "9000", 2027: "9300"}
    assert monitoring_line(2030) > monitoring_line(2028) > monitoring_line(2026)


def test_roster_ids_households_and_relations(small: Path) -> None:
    villages = {r["行政区划代码"] for r in _rows(small / "regions.csv") if r["级别"] == "村"}
    roster = _rows(small / "roster.csv")
    by_hh: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in roster:
        by_hh[r["户编号"]].append(r)
    assert len(by_hh) == 60
    ids = [r["身份证号"] for r in roster]
    assert len(set(ids)) == len(ids)
    for hh, members in by_hh.items():
        assert len(hh) == 16 and hh[:12] == members[0]["行政区划代码"] and hh[:12] in villages
        assert int(members[0]["家庭人口数"]) == len(members)
        assert [int(m["成员序号"]) for m in members] == list(range(1, len(members) + 1))
        head = members[0]
        assert head["与户主关系"] == "户主"
        for m in members:
            idn = m["身份证号"]
            assert id_number_valid(idn) and idn[17] == id_check(idn[:17])
            assert idn[:6] == hh[:6] and idn[:2] == "99"
            male = int(idn[16]) % 2 == 1
            assert male == (m["与户主关系"] in ("户主", "子", "父亲"))
            born = idn[6:14]
            if m["与户主关系"] in ("子", "女"):
                assert born > head["身份证号"][6:14]
            if m["与户主关系"] in ("父亲", "母亲"):
                assert born < head["身份证号"][6:14]
            assert m["劳动技能"] in ("普通劳动力", "技能劳动力", "弱劳动力", "无劳动力")


def test_id_styles_and_amounts(small: Path) -> None:
    for r in _rows(small / "medical/2025-03.csv", "gbk"):
        assert r["结算单号"].startswith("JS07") and len(r["结算单号"]) == 13
        for col in ("医疗总费用", "统筹基金支付", "大病保险支付", "医疗救助支付", "个人自付"):
            assert r[col].lstrip("-").count(".") == 1 and len(r[col].split(".")[1]) == 2
    for r in _rows(small / "employment/2025-03.csv"):
        assert r["业务流水号"].startswith("RS07") and len(r["业务流水号"]) == 13
    for r in _rows(small / "income/2025-03.csv"):
        assert r["统计月份"] == "2025-03"


# --------------------------------------------------------------------------------------
# Invalid rows


@pytest.mark.parametrize("fixture", ["small", "messy"])
def test_rejects_are_exactly_bad_rows(fixture: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(fixture)
    rejects = [x for x in parse_scenario(root, Pseudonymiser(b"k" * 32)) if isinstance(x, Reject)]
    bad = {(r["文件"], int(r["行号"])): r["原因"] for r in _rows(root / "bad_rows.csv")}
    assert {(r.file, r.line): r.code for r in rejects} == bad
    assert set(bad.values()) <= set(SAMPLE_CODES)
    listed = list(bad)
    order = {k: n for n, k in enumerate(MONTHLY)}
    assert listed == sorted(listed, key=lambda b: (order[b[0].split("/")[0]], b[0], b[1]))


def test_every_kind_of_invalid_row_and_mess(messy: Path) -> None:
    codes = Counter(r["原因"] for r in _rows(messy / "bad_rows.csv"))
    assert set(codes) == set(SAMPLE_CODES)
    medical = [r for p in sorted((messy / "medical").glob("*.csv")) for r in _rows(p, "gbk")]
    ids = Counter(r["结算单号"] for r in medical)
    assert any(n == 2 for n in ids.values())  # duplicates
    reversals = [r for r in medical if r["结算类型"] == "冲销"]
    assert reversals and all(r["原结算单号"] in ids for r in reversals)
    assert all(_cents(r["个人自付"]) <= 0 for r in reversals)
    late = [r for p in sorted((messy / "medical").glob("*.csv")) for r in _rows(p, "gbk")
            if r["结算类型"] == "正常" and r["结算日期"][:7].replace("/", "-") < p.stem]
    assert late


# --------------------------------------------------------------------------------------
# Truth


def _recompute(root: Path) -> tuple[dict[str, str | None], set[str], str]:
    """First risk month per household from the written files (valid rows only), judged on
    windows that end well inside them, and the households an invalid row touched."""
    roster = _rows(root / "roster.csv")
    size = {r["户编号"]: int(r["家庭人口数"]) for r in roster}
    person = {r["身份证号"]: r["户编号"] for r in roster}
    lines = {int(r["年度"]): int(r["监测范围"]) for r in _rows(root / "thresholds.csv")}
    bad = {(r["文件"], int(r["行号"])) for r in _rows(root / "bad_rows.csv")}
    months = sorted(p.stem for p in (root / "income").glob("*.csv"))
    touched: set[str] = set()
    income: dict[tuple[str, str], int] = {}
    for m in months:
        rows = _rows(root / f"income/{m}.csv")
        seen = {r["户编号"] for r in rows}
        touched |= set(size) - seen  # an unknown_household row stands in for one
        for n, r in enumerate(rows, start=2):
            if (f"income/{m}.csv", n) in bad:
                touched.add(r["户编号"])
            else:
                income[(r["户编号"], m)] = _cents(r["家庭纯收入"])
    settlements: dict[str, dict[str, str]] = {}
    reversed_ids: set[str] = set()
    for m in months:
        for n, r in enumerate(_rows(root / f"medical/{m}.csv", "gbk"), start=2):
            if (f"medical/{m}.csv", n) in bad:
                touched |= {h for p, h in person.items() if p[:17] == r["身份证号"][:17]}
            elif r["结算类型"] == "冲销":
                reversed_ids.add(r["原结算单号"])
            else:
                settlements[r["结算单号"]] = r
    oop: dict[tuple[str, str], int] = defaultdict(int)
    for sid, r in settlements.items():
        if sid not in reversed_ids:
            month = r["结算日期"][:7].replace("/", "-")
            oop[(person[r["身份证号"]], month)] += _cents(r["个人自付"])
    # The last window start judged: its 12 months end two months before the last file, so
    # every reversal and late settlement of those months is in the files.
    last = months[-14]
    first: dict[str, str | None] = {}
    for hh, n in size.items():
        first[hh] = None
        for w in range(months.index(last) + 1):
            window = months[w:w + 12]
            net = sum(income.get((hh, m), 0) - oop[(hh, m)] for m in window)
            if net < lines[int(window[0][:4])] * 100 * n:
                first[hh] = window[0]
                break
    return first, touched, last


@pytest.mark.parametrize("fixture", ["small", "messy"])
def test_truth_follows_the_definition(fixture: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(fixture)
    first, touched, last = _recompute(root)
    truth = {r["户编号"]: r for r in _rows(root / "truth.csv")}
    assert list(truth) == list(dict.fromkeys(r["户编号"] for r in _rows(root / "roster.csv")))
    checked = 0
    for hh, r in truth.items():
        if hh in touched:
            continue
        expected = r["首次风险月份"] if r["首次风险月份"] and r["首次风险月份"] <= last else None
        assert first[hh] == expected, hh
        checked += 1
    assert checked >= len(truth) * 0.4


def test_truth_conventions(messy: Path) -> None:
    shocks = {"因病", "因务工就业不稳", "因产业项目失败"}
    rows = _rows(messy / "truth.csv")
    for r in rows:
        assert r["风险"] in ("0", "1")
        assert (r["风险"] == "1") == bool(r["首次风险月份"]) == bool(r["风险原因"])
        assert r["冲击类型"] in shocks | {"无"}
        assert (r["冲击类型"] == "无") == (r["冲击月份"] == "")
        if r["风险原因"] in shocks:
            assert r["风险原因"] == r["冲击类型"]
        elif r["风险原因"]:
            assert r["风险原因"] in ("缺劳动力", "其他")
        assert int(r["基线人均年收入"]) >= 0
    assert any(r["冲击类型"] != "无" and r["风险"] == "0" for r in rows)  # benign shocks


def test_baseline_is_the_first_years_income_per_person(small: Path) -> None:
    truth = {r["户编号"]: r for r in _rows(small / "truth.csv")}
    months = sorted(p.stem for p in (small / "income").glob("*.csv"))[:12]
    year: dict[str, int] = defaultdict(int)
    for m in months:
        for r in _rows(small / f"income/{m}.csv"):
            year[r["户编号"]] += _cents(r["家庭纯收入"])
    ratios = [year[h] / 100 / int(r["家庭人口数"]) / int(r["基线人均年收入"])
              for h, r in truth.items() if h in year and int(r["基线人均年收入"]) > 3000]
    assert sorted(ratios)[len(ratios) // 2] == pytest.approx(1.0, abs=0.02)


# --------------------------------------------------------------------------------------
# Determinism and knobs


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, small: Path) -> None:
    again = _scenario(tmp_path / "again")
    assert _files(again) == _files(small)
    other = _scenario(tmp_path / "other", seed=6)
    assert _files(other)["roster.csv"] != _files(small)["roster.csv"]


def test_worker_processes_do_not_change_the_output(tmp_path: Path) -> None:
    a = _scenario(tmp_path / "a", households=2000, months=2, jobs=1)
    b = _scenario(tmp_path / "b", households=2000, months=2, jobs=2)
    assert _files(a) == _files(b)


def test_mess_zero_is_clean(tmp_path: Path) -> None:
    root = _scenario(tmp_path / "clean", households=100, mess=0.0)
    assert _rows(root / "bad_rows.csv") == []
    medical = [r for p in sorted((root / "medical").glob("*.csv")) for r in _rows(p, "gbk")]
    assert all(r["结算类型"] == "正常" for r in medical)
    assert len({r["结算单号"] for r in medical}) == len(medical)
    assert not [x for x in parse_scenario(root, Pseudonymiser(b"k" * 32))
                if isinstance(x, Reject)]


def test_shock_knobs(tmp_path: Path) -> None:
    ill = _rows(_scenario(tmp_path / "ill", shock_rate=0.5, mix="illness=1") / "truth.csv")
    assert {r["冲击类型"] for r in ill if r["冲击类型"] != "无"} == {"因病"}
    assert sum(r["冲击类型"] != "无" for r in ill) >= 15
    none = _rows(_scenario(tmp_path / "none", shock_rate=0.0) / "truth.csv")
    assert {r["冲击类型"] for r in none} == {"无"}
    assert {r["风险原因"] for r in none} <= {"", "缺劳动力", "其他"}
    biz = _rows(_scenario(tmp_path / "biz", shock_rate=0.4, mix="因产业项目失败=2,job=0")
                / "truth.csv")
    assert {r["冲击类型"] for r in biz if r["冲击类型"] != "无"} == {"因产业项目失败"}


def test_poor_share_knob(tmp_path: Path) -> None:
    def poor(rows: list[dict[str, str]]) -> int:
        return sum(r["风险原因"] in ("缺劳动力", "其他") for r in rows)

    many = _rows(_scenario(tmp_path / "many", households=200, shock_rate=0.0,
                           poor_share=0.5) / "truth.csv")
    few = _rows(_scenario(tmp_path / "few", households=200, shock_rate=0.0,
                          poor_share=0.0) / "truth.csv")
    assert poor(many) >= 70 and poor(few) <= 10


def test_start_month(tmp_path: Path) -> None:
    root = _scenario(tmp_path / "late", households=20, months=3, start="2026-12")
    assert sorted(p.stem for p in (root / "income").iterdir()) == ["2026-12", "2027-01",
                                                                   "2027-02"]
    # Simulated to 2028-01 (11 months beyond the last file): lines 2025..2029.
    years = [int(r["年度"]) for r in _rows(root / "thresholds.csv")]
    assert years == list(range(2025, 2030))


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SimulateError):
        parse_mix("illness=1,flood=2")
    with pytest.raises(SimulateError):
        parse_mix("illness=0")
    assert parse_mix("illness=2,job=1,business=1") == {"illness": 0.5, "job": 0.25,
                                                      "business": 0.25}
    with pytest.raises(SimulateError):
        simulate(tmp_path / "x", households=5, start="2025/01")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(SimulateError, match="not empty"):
        simulate(tmp_path / "full", households=5, months=2)
    simulate(tmp_path / "full", households=5, months=2, force=True)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------
# CLI


def test_cli_writes_a_scenario_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["simulate", str(out), "--households", "30",
                                       "--months", "13", "--seed", "2", "--mess", "2"])
    assert result.exit_code == 0, result.output
    assert "households 30" in result.output and "invalid rows" in result.output
    assert "at risk" in result.output
    assert len(list((out / "income").glob("*.csv"))) == 13
    again = CliRunner().invoke(main, ["simulate", str(out), "-n", "30"])
    assert again.exit_code == 2 and "--force" in again.output
    forced = CliRunner().invoke(main, ["simulate", str(out), "-n", "30", "--force",
                                       "--mix", "job=1"])
    assert forced.exit_code == 0, forced.output
    bad_mix = CliRunner().invoke(main, ["simulate", str(tmp_path / "m"), "--mix", "rain=1"])
    assert bad_mix.exit_code == 2


def test_cli_help() -> None:
    result = CliRunner().invoke(main, ["simulate", "--help"])
    assert result.exit_code == 0
    for option in ("--households", "--months", "--seed", "--start", "--mess", "--shock-rate",
                   "--mix", "--poor-share", "--force"):
        assert option in result.output

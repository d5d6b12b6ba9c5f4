"""Whole files: encodings, headers, broken lines, and the scenario folder layout."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from fanpin.privacy import Pseudonymiser
from producers import FORMATS, employment, income, medical, reference, roster
from producers.common import FileError, ParseContext, Reject, id_number_valid, read_csv
from producers.scenario import load_known_households, scenario_files
from schemas.events import EmploymentEvent, IncomeReport, MedicalSettlement

KEY = b"unit-test-pseudonym-key-0123"

INCOME_LINES = [
    "户编号,行政区划代码,统计月份,家庭人口数,工资性收入,经营净收入,财产净收入,转移净收入,家庭纯收入",
    "9901230030030007,990123003003,2025-04,2,0.00,249.65,0.00,153.70,403.35",
    "9901220020060006,990122002006,2025-04,2,8929.45,1266.68,0.00,242.08,10438.21",
    "9901210010010002,990121001001,2025-04,2,3740.27,405.37,0.00,209.62,4355.26",
]
MEDICAL_LINES = [
    "结算单号,身份证号,姓名,参保地区划,就诊类别,医疗机构名称,入院日期,结算日期,医疗总费用,"
    "统筹基金支付,大病保险支付,医疗救助支付,个人自付,结算类型,原结算单号",
    "JS07000001839,99012219820719309X,方强艳,990122,普通门诊,白沙县人民医院,2025/04/22,"
    "2025/04/22,164.24,86.47,0.00,0.00,77.77,正常,",
    "JS07000011481,990123198909060319,谢刚,990123,普通门诊,乡镇卫生院,2025/04/09,2025/04/09,"
    "881.89,426.15,0.00,0.00,455.74,正常,",
    "JS07000018161,99012219820719309X,方强艳,990122,普通门诊,白沙县人民医院,2025/04/22,"
    "2025/04/30,-164.24,-86.47,-0.00,-0.00,-77.77,冲销,JS07000001839",
]
EMPLOYMENT_LINES = [
    "业务流水号,身份证号,姓名,行政区划代码,业务类型,业务日期,用工单位,金额,就业地区",
    "RS07000018048,990123196802014815,谭超梅,990123001006,工资发放,20250415,宁波某制衣厂,3334.32,省外",
    "RS07000002715,990122199404133963,梁桂燕,990122003004,就业登记,20250415,宁波某制衣厂,,省内县外",
]


def ctx(known: set[str] | None = None) -> ParseContext:
    return ParseContext(Pseudonymiser(KEY), known)


def write(path: Path, lines: list[str], encoding: str = "utf-8", eol: str = "\r\n") -> Path:
    path.write_bytes((eol.join(lines) + eol).encode(encoding))
    return path


def parse(fmt, path: Path, rel: str, c: ParseContext | None = None) -> list:
    return list(fmt.parse_file(path, rel, c or ctx()))


# --------------------------------------------------------------------------------------
# Encodings


def test_medical_gbk_file(tmp_path: Path) -> None:
    p = write(tmp_path / "2025-04.csv", MEDICAL_LINES, "gbk")
    out = parse(medical, p, "medical/2025-04.csv")
    assert [type(x) for x in out] == [MedicalSettlement] * 3
    assert [x.origin.line for x in out] == [2, 3, 4]
    assert out[2].reversal and out[2].reverses == "JS07000001839"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_medical_file_saved_as_utf8_is_a_file_error(tmp_path: Path, encoding: str) -> None:
    p = write(tmp_path / "2025-04.csv", MEDICAL_LINES, encoding)
    with pytest.raises(FileError) as err:
        parse(medical, p, "medical/2025-04.csv")
    msg = str(err.value)
    assert "medical/2025-04.csv" in msg and "UTF-8" in msg and "GBK" in msg


def test_cut_off_medical_file_saved_as_utf8_is_still_recognised(tmp_path: Path) -> None:
    data = "\r\n".join(MEDICAL_LINES).encode("utf-8")
    p = tmp_path / "2025-04.csv"
    p.write_bytes(data[: data.rindex("冲".encode()) + 1])
    with pytest.raises(FileError, match="文件是 UTF-8 编码，但医保局的格式要求 GBK 编码"):
        parse(medical, p, "medical/2025-04.csv")


def test_medical_file_with_invalid_bytes(tmp_path: Path) -> None:
    p = tmp_path / "2025-04.csv"
    p.write_bytes(MEDICAL_LINES[0].encode("gbk") + b"\r\nJS1,\xff\xff\xff\r\n")
    with pytest.raises(FileError, match="第 2 行无法按 GBK 解码"):
        parse(medical, p, "medical/2025-04.csv")


def test_utf8_feed_saved_as_gbk_is_a_file_error(tmp_path: Path) -> None:
    p = write(tmp_path / "2025-04.csv", INCOME_LINES, "gbk")
    with pytest.raises(FileError, match="UTF-8") as err:
        parse(income, p, "income/2025-04.csv")
    assert "GBK" in str(err.value)


def test_bom_and_lf_line_endings_are_accepted(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", INCOME_LINES, "utf-8-sig")
    b = write(tmp_path / "b.csv", INCOME_LINES, "utf-8", eol="\n")
    pa, pb = parse(income, a, "income/2025-04.csv"), parse(income, b, "income/2025-04.csv")
    assert len(pa) == 3 and pa == pb
    assert all(isinstance(x, IncomeReport) for x in pa)


# --------------------------------------------------------------------------------------
# Headers


def test_missing_and_renamed_columns_are_named(tmp_path: Path) -> None:
    header = INCOME_LINES[0].replace("家庭纯收入", "纯收入").replace(",财产净收入", "")
    p = write(tmp_path / "2025-04.csv", [header])
    with pytest.raises(FileError) as err:
        parse(income, p, "income/2025-04.csv")
    msg = str(err.value)
    assert msg.startswith("income/2025-04.csv：缺少列 财产净收入、家庭纯收入；")
    found = msg.split("文件中的列为 ")[1].split("；")[0]
    assert (
        found
        == "户编号、行政区划代码、统计月份、家庭人口数、工资性收入、经营净收入、转移净收入、纯收入"
    )


def test_error_is_raised_by_parse_file_itself(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", ["a,b,c"])
    with pytest.raises(FileError):
        medical.parse_file(p, "medical/x.csv", ctx())


@pytest.mark.parametrize("content", [b"", b"\r\n\r\n", b"\xef\xbb\xbf", b"   "])
def test_empty_file_is_a_file_error(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "2025-04.csv"
    p.write_bytes(content)
    for fmt in FORMATS.values():
        if fmt.ENCODING == "gbk" and content.startswith(b"\xef"):
            continue
        with pytest.raises(FileError, match="文件为空"):
            parse(fmt, p, "x/2025-04.csv")


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(FileError, match="无法读取"):
        parse(income, tmp_path / "nope.csv", "income/nope.csv")


def test_header_only_yields_nothing(tmp_path: Path) -> None:
    for name, fmt in FORMATS.items():
        p = tmp_path / f"{name}.csv"
        p.write_bytes(
            (",".join(fmt.COLUMNS) + "\r\n").encode("gbk" if name == "medical" else "utf-8")
        )
        assert parse(fmt, p, f"{name}.csv") == []


def test_reordered_and_extra_columns(tmp_path: Path) -> None:
    rows = [line.split(",") for line in INCOME_LINES]
    order = [8, 0, 2, 1, 3, 7, 6, 5, 4]
    lines = [
        ",".join([r[i] for i in order] + ["备注" if n == 0 else "x"]) for n, r in enumerate(rows)
    ]
    p = write(tmp_path / "2025-04.csv", lines)
    normal = write(tmp_path / "n.csv", INCOME_LINES)
    assert parse(income, p, "income/2025-04.csv") == parse(income, normal, "income/2025-04.csv")


def test_duplicate_column_is_a_file_error(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", [INCOME_LINES[0] + ",户编号"])
    with pytest.raises(FileError, match="重复"):
        parse(income, p, "income/x.csv")


# --------------------------------------------------------------------------------------
# Broken lines


def test_truncated_last_line(tmp_path: Path) -> None:
    lines = [*INCOME_LINES, INCOME_LINES[1][:30]]
    p = tmp_path / "2025-04.csv"
    p.write_bytes("\r\n".join(lines).encode())  # cut off: no final line end either
    out = parse(income, p, "income/2025-04.csv")
    assert [type(x) for x in out] == [IncomeReport] * 3 + [Reject]
    r = out[-1]
    assert (r.file, r.line, r.code) == ("income/2025-04.csv", 5, "wrong_field_count")
    assert "截断" in r.message


def test_truncated_line_in_the_middle_of_a_gbk_file(tmp_path: Path) -> None:
    lines = [MEDICAL_LINES[0], MEDICAL_LINES[1][:40], *MEDICAL_LINES[2:]]
    p = write(tmp_path / "2025-04.csv", lines, "gbk")
    out = parse(medical, p, "medical/2025-04.csv")
    assert isinstance(out[0], Reject) and out[0].line == 2 and out[0].code == "wrong_field_count"
    assert "方强艳" not in out[0].message
    assert [type(x) for x in out[1:]] == [MedicalSettlement] * 2


@pytest.mark.parametrize(
    ("fmt", "lines", "enc", "char"),
    [
        (medical, MEDICAL_LINES, "gbk", "冲"),
        (medical, MEDICAL_LINES, "gbk", "普"),
        (employment, EMPLOYMENT_LINES, "utf-8", "县"),
        (employment, EMPLOYMENT_LINES, "utf-8", "宁"),
    ],
)
def test_file_cut_inside_a_character(tmp_path: Path, fmt, lines, enc: str, char: str) -> None:
    """A truncated export can end in the middle of a multi-byte character: only the last
    line is rejected."""
    data = "\r\n".join(lines).encode(enc)
    cut = data.rindex(char.encode(enc)) + 1
    p = tmp_path / "f.csv"
    p.write_bytes(data[:cut])
    with pytest.raises(UnicodeDecodeError):
        data[:cut].decode(enc)
    out = parse(fmt, p, "f.csv")
    assert len(out) == len(lines) - 1
    assert all(not isinstance(x, Reject) for x in out[:-1])
    assert isinstance(out[-1], Reject) and out[-1].line == len(lines)


def test_invalid_bytes_in_the_middle_are_a_file_error(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    lines = [line.encode() for line in EMPLOYMENT_LINES]
    lines[1] = lines[1].replace("宁波".encode(), b"\xff\xfe")
    p.write_bytes(b"\r\n".join(lines) + b"\r\n")
    with pytest.raises(FileError, match="第 2 行无法按 UTF-8 解码"):
        parse(employment, p, "employment/2025-04.csv")


def test_too_many_fields(tmp_path: Path) -> None:
    p = write(tmp_path / "e.csv", [*EMPLOYMENT_LINES, EMPLOYMENT_LINES[1] + ",extra"])
    out = parse(employment, p, "employment/2025-04.csv")
    assert out[-1].code == "wrong_field_count" and out[-1].line == 4


@pytest.mark.timeout(120)  # a hang fails the test; how fast it is belongs to the benchmarks
def test_huge_line_is_a_reject_not_a_hang(tmp_path: Path) -> None:
    big = INCOME_LINES[2].replace("8929.45", "9" * 1_000_000)
    lines = [INCOME_LINES[0], INCOME_LINES[1], big, INCOME_LINES[3]]
    p = write(tmp_path / "2025-04.csv", lines)
    out = parse(income, p, "income/2025-04.csv")
    assert [type(x) for x in out] == [IncomeReport, Reject, IncomeReport]
    assert out[1].line == 3 and out[1].code == "line_too_long"
    assert len(out[1].message) < 200


def test_huge_field_under_the_line_limit(tmp_path: Path) -> None:
    lines = [INCOME_LINES[0], INCOME_LINES[2].replace("8929.45", "9" * 8000)]
    out = parse(income, write(tmp_path / "x.csv", lines), "income/x.csv")
    assert out[0].code == "amount_out_of_range" and len(out[0].message) < 200


def test_quoted_field_with_a_comma(tmp_path: Path) -> None:
    line = EMPLOYMENT_LINES[1].replace("宁波某制衣厂", '"宁波某制衣厂,二分厂"')
    out = parse(employment, write(tmp_path / "e.csv", [EMPLOYMENT_LINES[0], line]), "e.csv")
    assert isinstance(out[0], EmploymentEvent) and out[0].employer == "宁波某制衣厂,二分厂"


def test_quoted_field_without_a_comma(tmp_path: Path) -> None:
    # The same person twice, so the second line is eligible for the fast path.
    quoted = EMPLOYMENT_LINES[1].replace("宁波某制衣厂", '"宁波某制衣厂"')
    p = write(tmp_path / "e.csv", [EMPLOYMENT_LINES[0], EMPLOYMENT_LINES[1], quoted])
    first, second = parse(employment, p, "e.csv")
    assert isinstance(second, EmploymentEvent) and second.employer == "宁波某制衣厂"
    assert msgspec.structs.replace(second, origin=first.origin) == first


def test_unbalanced_quote_is_a_reject(tmp_path: Path) -> None:
    line = EMPLOYMENT_LINES[1].replace("宁波某制衣厂", '"宁波某制衣厂')
    lines = [EMPLOYMENT_LINES[0], line, EMPLOYMENT_LINES[2]]
    out = parse(employment, write(tmp_path / "e.csv", lines), "e.csv")
    assert out[0].code == "bad_csv_line" and out[0].line == 2
    assert isinstance(out[1], EmploymentEvent)


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    lines = [INCOME_LINES[0], INCOME_LINES[1], "", "  ", INCOME_LINES[2]]
    out = parse(income, write(tmp_path / "x.csv", lines), "income/x.csv")
    assert [x.origin.line for x in out] == [2, 5]


def test_read_csv_yields_numbered_rows(tmp_path: Path) -> None:
    p = write(tmp_path / "x.csv", [*INCOME_LINES, "1,2"])
    items = list(read_csv(p, "income/x.csv", income.COLUMNS, "utf-8-sig"))
    assert [i[0] for i in items[:3]] == [2, 3, 4]
    assert items[0][1]["户编号"] == "9901230030030007"
    assert isinstance(items[3], Reject) and items[3].line == 5


# --------------------------------------------------------------------------------------
# Scenario


def test_scenario_files_order(tmp_path: Path) -> None:
    write(tmp_path / "regions.csv", [",".join(reference.regions.COLUMNS)], "utf-8-sig")
    write(tmp_path / "thresholds.csv", ["年度,监测范围", "2025,8700"])
    write(tmp_path / "roster.csv", [",".join(roster.COLUMNS)], "utf-8-sig")
    for folder, months in {
        "medical": ["2025-02", "2025-01"],
        "employment": ["2025-01", "2025-03"],
        "income": ["2025-03", "2025-01", "2025-02"],
    }.items():
        (tmp_path / folder).mkdir()
        for m in months:
            (tmp_path / folder / f"{m}.csv").write_bytes(b"")
    (tmp_path / "income" / "notes.txt").write_text("x")
    (tmp_path / "income" / "2025-13.csv").write_text("x")
    files = scenario_files(tmp_path)
    assert [rel for rel, _, _ in files] == [
        "regions.csv",
        "thresholds.csv",
        "roster.csv",
        "medical/2025-01.csv",
        "employment/2025-01.csv",
        "income/2025-01.csv",
        "medical/2025-02.csv",
        "income/2025-02.csv",
        "employment/2025-03.csv",
        "income/2025-03.csv",
    ]
    fmts = {rel: fmt for rel, _, fmt in files}
    assert fmts["regions.csv"] is reference.regions
    assert fmts["thresholds.csv"] is reference.thresholds
    assert fmts["roster.csv"] is roster
    assert fmts["medical/2025-02.csv"] is medical
    assert all(p == tmp_path / rel for rel, p, _ in files)


def test_load_known_households(tmp_path: Path) -> None:
    lines = [
        ",".join(roster.COLUMNS),
        "9901220030060001,990122003006,一般农户,2,1,姚秀东,990122199209043751,户主,普通劳动力",
        "9901220030060001,990122003006,一般农户,2,2,谭英娟,990122198904020881,配偶,技能劳动力",
        "9901220030060002,990122003006,脱贫户,1,1,某某,990122198904020880,户主,弱劳动力",
        "99012200300600,bad",
    ]
    p = write(tmp_path / "roster.csv", lines, "utf-8-sig")
    assert load_known_households(p) == {"9901220030060001", "9901220030060002"}
    out = parse(roster, p, "roster.csv")
    assert [getattr(x, "code", None) for x in out] == [
        None,
        "bad_id_checksum",
        None,
        "wrong_field_count",
    ]


def test_id_number_valid() -> None:
    assert id_number_valid("990122199209043751")
    assert id_number_valid("99012219820719309X") and id_number_valid("99012219820719309x")
    assert not id_number_valid("990122199209043752")
    assert not id_number_valid("99012219920904375")
    assert not id_number_valid("99012219921304375X")  # month 13
    assert not id_number_valid("")
    assert not id_number_valid("９９０１２２１９９２０９０４３７５１")

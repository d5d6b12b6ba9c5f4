"""Shared parsing machinery for the department feeds.

Everything here is pure: no Kafka, no network. A parser turns one department file into
events (``schemas.events``) and :class:`Reject` records. A bad row never stops a file; only
a problem with the whole file (wrong encoding, missing columns, no header) raises
:class:`FileError`.

Reject messages are written for a department clerk: Chinese, naming the column and the
offending value. They never carry a resident ID number (masked with
:func:`fanpin.privacy.mask_id_number`) or a person's name.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from operator import mul
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from fanpin.privacy import Pseudonymiser, mask_id_number
from schemas.events import Department, Origin, SourceEvent

Event = SourceEvent
Row = Mapping[str, str]

# --------------------------------------------------------------------------------------
# Rejects

#: Every reject code a parser can produce, with a short Chinese description. The first
#: group is the vocabulary of the departments' ``bad_rows.csv``.
REJECT_CODES: dict[str, str] = {
    "total_mismatch": "家庭纯收入不等于四项收入之和",
    "non_numeric_amount": "金额不是有效数字",
    "unknown_household": "户编号不在花名册中",
    "bad_month": "月份无效",
    "amounts_do_not_add_up": "个人自付与各项支付不符",
    "bad_id_checksum": "身份证号校验位错误",
    "missing_total": "总额为空",
    "bad_date": "日期无效",
    "negative_without_reversal": "非冲销结算出现负数金额",
    "wage_without_amount": "工资发放缺少金额",
    "unknown_business_type": "业务类型不在约定范围内",
    # Further codes of this pipeline.
    "missing_field": "必填字段为空",
    "bad_id_format": "身份证号格式错误",
    "bad_household_number": "户编号格式错误",
    "bad_region_code": "行政区划代码格式错误",
    "unknown_region_level": "区划级别不在约定范围内",
    "unknown_household_type": "户类型不在约定范围内",
    "unknown_labour": "劳动技能不在约定范围内",
    "bad_size": "家庭人口数无效",
    "bad_member_no": "成员序号无效",
    "bad_year": "年度无效",
    "bad_monitoring_line": "监测范围无效",
    "amount_out_of_range": "金额超出合理范围",
    "negative_amount": "金额不能为负数",
    "unknown_visit_type": "就诊类别不在约定范围内",
    "unknown_settlement_type": "结算类型不在约定范围内",
    "reversal_without_original": "冲销结算缺少原结算单号",
    "positive_reversal": "冲销结算出现正数金额",
    "unknown_work_place": "就业地区不在约定范围内",
    "wrong_field_count": "字段个数与表头不符",
    "line_too_long": "行过长",
    "bad_csv_line": "无法按 CSV 解析的行",
}


@dataclass(frozen=True)
class Reject:
    """One invalid row: the file (relative to the scenario folder), its line number (the
    header is line 1), a machine code from :data:`REJECT_CODES` and a message for the
    department."""

    file: str
    line: int
    code: str
    message: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"


class FileError(Exception):
    """The whole file cannot be read: wrong encoding, missing columns, no header."""


class RowError(Exception):
    """Raised by the field helpers; a parser turns it into a :class:`Reject`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------------------
# Context


@dataclass
class ParseContext:
    pseudonymiser: Pseudonymiser
    known_households: set[str] | None = None  # None: skip the unknown_household check
    #: Validated, upper-case ID number -> pseudonym. Filled by :meth:`person` after the
    #: full check; the fast paths use a hit here as proof the ID number is valid.
    pseudonyms: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    #: ``(k, K)``: parse only the k-th of K equal shares of each file's data lines (lines
    #: keep their real numbers). Used to parse one file in K processes; None: all lines.
    share: tuple[int, int] | None = None

    def person(self, id_number: str) -> str:
        """The pseudonym of a validated, upper-case ID number, memoised."""
        p = self.pseudonyms.get(id_number)
        if p is None:
            if len(self.pseudonyms) >= 500_000:
                self.pseudonyms.clear()
            p = self.pseudonyms[id_number] = self.pseudonymiser.person(id_number)
        return p

    def person_if_valid(self, id_number: str) -> str | None:
        """For the fast paths: the pseudonym of an ID number exactly as the full check
        accepts and normalises it (valid, no blanks, upper-case ``X``), else None (the
        caller then takes the full path, which says what is wrong)."""
        p = self.pseudonyms.get(id_number)
        if p is None and id_number[17:] != "x" and _id_problem(id_number) is None:
            p = self.person(id_number)
        return p


class FileFormat(Protocol):
    """What every department format offers: a parser module, or for the two reference
    formats a module object defined in :mod:`producers.reference`."""

    @property
    def DEPARTMENT(self) -> Department: ...

    @property
    def COLUMNS(self) -> list[str]: ...

    @property
    def ENCODING(self) -> Encoding: ...

    def parse_file(self, path: Path, rel: str, ctx: ParseContext) -> Iterator[Event | Reject]: ...

    def parse_row(self, row: Row, origin: Origin, ctx: ParseContext) -> Event | Reject: ...


# --------------------------------------------------------------------------------------
# Showing values in messages


_ID_LIKE = re.compile(r"(?<![0-9])(?:[0-9]{17}[0-9Xx]|[0-9]{15})(?![0-9Xx])")
_SHOW_MAX = 32


def show(value: str) -> str:
    """A value quoted for a message: ID-like numbers masked, long values cut short."""
    if value == "":
        return "（空）"
    if len(value) > _SHOW_MAX:
        head = _ID_LIKE.sub(_mask_match, value[: _SHOW_MAX + 20])[:_SHOW_MAX]
        return f"“{head}…”（共 {len(value)} 个字符）"
    return f"“{_ID_LIKE.sub(_mask_match, value)}”"


def _mask_match(m: re.Match[str]) -> str:
    return mask_id_number(m.group())


def redact(message: str, *secrets: str) -> str:
    """Last guard before a message leaves the parser: mask anything that looks like an ID
    number and blank out the given secrets (the row's name and ID number)."""
    for s in secrets:
        s = s.strip()
        if s[:1].isdigit():
            if len(s) >= 10 and s in message:  # an ID number, possibly malformed
                message = message.replace(s, mask_id_number(s))
        elif len(s) >= 2 and s in message:  # a name
            message = message.replace(s, "***")
    return _ID_LIKE.sub(_mask_match, message)


def make_reject(origin: Origin, err: RowError, *secrets: str) -> Reject:
    return Reject(origin.file, origin.line, err.code, redact(err.message, *secrets))


# --------------------------------------------------------------------------------------
# Field helpers. Each takes the row and a column name, strips the value, and returns it
# parsed or raises RowError (which the parser turns into a Reject).


def get(row: Row, column: str) -> str:
    v = row.get(column)
    if v is None:
        return ""
    return v.strip()


def required(row: Row, column: str, code: str = "missing_field") -> str:
    v = get(row, column)
    if not v:
        raise RowError(code, f"必填字段「{column}」为空")
    return v


def is_digits(s: str, n: int) -> bool:
    """Exactly ``n`` ASCII digits."""
    return len(s) == n and s.isdigit() and s.isascii()


def digits_field(row: Row, column: str, n: int, code: str, what: str) -> str:
    v = required(row, column)
    if not is_digits(v, n):
        raise RowError(code, f"「{column}」格式错误：{show(v)}，{what}应为 {n} 位数字")
    return v


def choice(row: Row, column: str, allowed: tuple[str, ...], code: str) -> str:
    v = required(row, column)
    if v not in allowed:
        raise RowError(
            code, f"「{column}」的值 {show(v)} 不在约定范围内，应为以下之一：{'、'.join(allowed)}"
        )
    return v


def int_field(row: Row, column: str, lo: int, hi: int, code: str) -> int:
    v = required(row, column)
    if not (0 < len(v) <= 4 and v.isascii() and v.isdigit()) or not lo <= int(v) <= hi:
        raise RowError(code, f"「{column}」无效：{show(v)}，应为 {lo} 到 {hi} 之间的整数")
    return int(v)


# Money: optional minus, at most 12 integer digits, at most two decimals. ASCII only
# (``\d`` and ``Decimal`` would both accept other scripts' digits).
_MONEY = re.compile(r"-?[0-9]{1,12}(?:\.[0-9]{1,2})?")
_MONEY_LOOSE = re.compile(r"[-+]?[0-9]+(?:\.[0-9]+)?")
ZERO = Decimal("0.00")
CENT = Decimal("0.01")


def money_value(v: str, column: str) -> Decimal:
    """Parse an amount in yuan, exactly, with two decimals. ``-0.00`` becomes ``0.00``."""
    if _MONEY.fullmatch(v) is None:
        if _MONEY_LOOSE.fullmatch(v) is not None and len(v.partition(".")[0].lstrip("+-")) > 12:
            raise RowError(
                "amount_out_of_range", f"「{column}」金额 {show(v)} 超出合理范围（超过 12 位整数）"
            )
        raise RowError(
            "non_numeric_amount",
            f"「{column}」不是有效金额：{show(v)}。金额须以阿拉伯数字填写，单位元，"
            f"最多两位小数，如 3000.00",
        )
    d = Decimal(v)
    if len(v) < 4 or v[-3] != ".":
        d = d.quantize(CENT)
    if not d:
        return ZERO
    return d


def money(row: Row, column: str, missing_code: str = "missing_field") -> Decimal:
    v = get(row, column)
    if not v:
        if missing_code == "missing_total":
            raise RowError(missing_code, f"「{column}」为空：请填写总额，它是核对各分项金额的依据")
        raise RowError(missing_code, f"金额字段「{column}」为空：请填写金额，没有时填 0.00")
    return money_value(v, column)


def optional_money(row: Row, column: str) -> Decimal | None:
    v = get(row, column)
    return money_value(v, column) if v else None


def _date(y: str, m: str, d: str) -> dt.date | None:
    if not (
        len(y) == 4
        and 1 <= len(m) <= 2
        and 1 <= len(d) <= 2
        and (y + m + d).isascii()
        and (y + m + d).isdigit()
    ):
        return None
    year = int(y)
    if not 1900 <= year <= 2100:
        return None
    try:
        return dt.date(year, int(m), int(d))
    except ValueError:
        return None


#: Valid dates already parsed, by their text (at most a few entries per day 1900-2100
#: each); a hit is proof the text is a valid date.
SLASH_DATES: dict[str, dt.date] = {}
COMPACT_DATES: dict[str, dt.date] = {}


def slash_date_value(v: str) -> dt.date | None:
    """The date of a stripped ``YYYY/MM/DD`` (or ``YYYY/M/D``) text, or None."""
    d = SLASH_DATES.get(v)
    if d is None:
        parts = v.split("/")
        d = _date(*parts) if len(parts) == 3 else None
        if d is not None:
            SLASH_DATES[v] = d
    return d


def compact_date_value(v: str) -> dt.date | None:
    """The date of a stripped ``YYYYMMDD`` text, or None."""
    d = COMPACT_DATES.get(v)
    if d is None:
        d = _date(v[:4], v[4:6], v[6:]) if len(v) == 8 else None
        if d is not None:
            COMPACT_DATES[v] = d
    return d


def slash_date(row: Row, column: str) -> dt.date:
    """``YYYY/MM/DD`` (medical bureau; ``YYYY/M/D`` is accepted too)."""
    v = required(row, column)
    d = slash_date_value(v)
    if d is None:
        raise RowError(
            "bad_date", f"「{column}」不是有效日期：{show(v)}，应为 YYYY/MM/DD 格式的真实日期"
        )
    return d


def compact_date(row: Row, column: str) -> dt.date:
    """``YYYYMMDD`` (human resources bureau)."""
    v = required(row, column)
    d = compact_date_value(v)
    if d is None:
        raise RowError(
            "bad_date", f"「{column}」不是有效日期：{show(v)}，应为 YYYYMMDD 格式的真实日期"
        )
    return d


def month_value(row: Row, column: str) -> str:
    """``YYYY-MM``; returned normalised (``2025-4`` is not accepted)."""
    v = required(row, column)
    ok = (
        len(v) == 7
        and v[4] == "-"
        and v.isascii()
        and v[:4].isdigit()
        and v[5:].isdigit()
        and 1900 <= int(v[:4]) <= 2100
        and 1 <= int(v[5:]) <= 12
    )
    if not ok:
        raise RowError(
            "bad_month", f"「{column}」不是有效月份：{show(v)}，应为 YYYY-MM，月份为 01 到 12"
        )
    return v


# --------------------------------------------------------------------------------------
# Resident ID numbers (GB 11643)

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_ZEROS = ord("0") * sum(_WEIGHTS)  # what the ASCII codes add on top of the digit values


def id_check_digit(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of 17 ASCII digits."""
    if not is_digits(first17, 17):
        raise ValueError("id_check_digit needs exactly 17 ASCII digits")
    # sum(digit * weight), computed on the ASCII codes (much faster than int() per char).
    return _CHECK[(sum(map(mul, first17.encode(), _WEIGHTS)) - _ZEROS) % 11]


def _id_problem(s: str) -> tuple[str, str] | None:
    first17 = s[:17]
    if len(s) != 18 or not (first17.isascii() and first17.isdigit()) or s[17] not in "0123456789Xx":
        return "bad_id_format", (
            f"身份证号格式错误：{mask_id_number(s) if len(s) < 64 else '（过长）'}"
            f" 共 {len(s)} 位，应为 18 位（前 17 位数字，末位为数字或 X）"
        )
    if compact_date_value(s[6:14]) is None:  # the birth date, YYYYMMDD
        return "bad_id_format", (
            f"身份证号格式错误：{mask_id_number(s)} 的第 7–14 位不是有效的出生日期"
        )
    expected = id_check_digit(first17)
    if s[17].upper() != expected:
        return "bad_id_checksum", f"身份证号校验位错误：{mask_id_number(s)} 的第18位应为 {expected}"
    return None


def id_number_valid(s: str) -> bool:
    """GB 11643: 18 characters, 17 digits with a real birth date, then the MOD 11-2 check
    character (``X`` or ``x`` for 10)."""
    return _id_problem(s) is None


def id_number(row: Row, column: str = "身份证号") -> str:
    """A valid ID number, upper-cased; raises RowError otherwise."""
    v = required(row, column)
    problem = _id_problem(v)
    if problem is not None:
        raise RowError(*problem)
    return v.upper()


# --------------------------------------------------------------------------------------
# Files

Encoding = Literal["utf-8-sig", "gbk"]

#: How a department calls its encoding in messages.
_ENCODING_NAMES = {"utf-8-sig": "UTF-8", "gbk": "GBK"}

#: Longest physical line accepted (characters). Department lines are about 150.
MAX_LINE = 8192


def _line_of(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _decode_cut(data: bytes, codec: str) -> str:
    """Strict decode, except that a file cut off inside its last character (a truncated
    export) keeps its text with U+FFFD at the cut, so only that last line is rejected."""
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        if e.end >= len(data) and b"\n" not in data[e.start :]:
            return data[: e.start].decode(codec) + "\ufffd"
        raise


def _is_utf8(data: bytes) -> bool:
    """Non-ASCII bytes that are valid UTF-8 (allowing a cut-off last character)."""
    if data.isascii():
        return False
    try:
        _decode_cut(data, "utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode(data: bytes, encoding: Encoding, rel: str, department: str) -> str:
    """Decode a whole file strictly in the department's encoding, or raise FileError.

    A GBK feed that is really UTF-8 is caught before decoding: UTF-8 Chinese text often
    decodes as (garbage) GB18030 without error, while GBK text is practically never valid
    UTF-8."""
    if encoding == "gbk":
        if data.startswith(b"\xef\xbb\xbf") or _is_utf8(data):
            raise FileError(
                f"{rel}：文件是 UTF-8 编码，但{department}的格式要求 GBK 编码，请按 GBK 重新导出"
            )
        try:
            return _decode_cut(data, "gb18030")
        except UnicodeDecodeError as e:
            raise FileError(
                f"{rel}：第 {_line_of(data, e.start)} 行无法按 GBK 解码，"
                "文件可能已损坏或不是 GBK 编码"
            ) from None
    try:
        return _decode_cut(data, "utf-8-sig")
    except UnicodeDecodeError as e:
        hint = ""
        try:
            data.decode("gb18030")
            hint = "，看起来是 GBK 编码"
        except UnicodeDecodeError:
            pass
        raise FileError(
            f"{rel}：第 {_line_of(data, e.start)} 行无法按 UTF-8 解码{hint}；{department}的格式要求"
            f" UTF-8 编码，请按 UTF-8 重新导出"
        ) from None


_DEPARTMENT_NAMES = {
    "statistics": "统计局",
    "rural": "乡村振兴局",
    "medical": "医保局",
    "employment": "人社局",
}


def read_csv(
    path: Path, rel: str, columns: list[str], encoding: Encoding, department: str = ""
) -> Iterator[tuple[int, dict[str, str]] | Reject]:
    """Open a department file and check its header (eagerly: FileError is raised here),
    then return an iterator of ``(line_number, row)`` with the header as line 1, or a
    :class:`Reject` for a line that is not a well-formed record (wrong field count, too
    long). Blank lines are skipped. Extra columns are allowed; missing ones are not."""
    lines, start, header = open_csv(path, rel, columns, encoding, department)
    return _rows(lines, start, header, rel)


def open_csv(
    path: Path, rel: str, columns: list[str], encoding: Encoding, department: str = ""
) -> tuple[list[str], int, list[str]]:
    """Read, decode and check the header: ``(lines, index of the first data line,
    header)``. Raises FileError."""
    dept = _DEPARTMENT_NAMES.get(department, department or "部门")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FileError(f"{rel}：无法读取文件（{e.strerror or e}）") from None
    text = decode(data, encoding, rel, dept)
    lines = text.split("\n")
    # Header: the first non-blank line.
    i = 0
    while i < len(lines) and not lines[i].strip(" \t\r\ufeff"):
        i += 1
    if i == len(lines):
        raise FileError(f"{rel}：文件为空，没有表头行；应有表头：{','.join(columns)}")
    header_line = lines[i].rstrip("\r")
    if len(header_line) > MAX_LINE:
        raise FileError(f"{rel}：表头行过长（{len(header_line)} 个字符），不是有效的表头")
    try:
        header = [h.strip().lstrip("\ufeff").strip() for h in _split(header_line)]
    except csv.Error as e:
        raise FileError(f"{rel}：表头行无法解析（{e}）") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise FileError(
            f"{rel}：缺少列 {'、'.join(missing)}；文件中的列为 {'、'.join(header) or '（无）'}；"
            f"应有的列为 {'、'.join(columns)}"
        )
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    if dupes:
        raise FileError(f"{rel}：表头中有重复的列 {'、'.join(dupes)}")
    return lines, i + 1, header


def _split(line: str) -> list[str]:
    if '"' not in line:
        return line.split(",")
    return next(csv.reader([line], strict=True))


def _too_long(rel: str, lineno: int, line: str) -> Reject:
    return Reject(
        rel,
        lineno,
        "line_too_long",
        f"该行有 {len(line)} 个字符，超过上限 {MAX_LINE}，不是有效的数据行",
    )


def _split_checked(rel: str, lineno: int, line: str, n: int) -> list[str] | Reject:
    try:
        fields = _split(line)
    except csv.Error as e:
        return Reject(rel, lineno, "bad_csv_line", f"该行无法按 CSV 解析（{e}），请检查引号")
    if len(fields) != n:
        hint = "，该行可能被截断" if len(fields) < n else "，可能多了逗号"
        return Reject(
            rel,
            lineno,
            "wrong_field_count",
            f"该行有 {len(fields)} 个字段，表头有 {n} 列{hint}",
        )
    return fields


def _rows(
    lines: list[str], start: int, header: list[str], rel: str
) -> Iterator[tuple[int, dict[str, str]] | Reject]:
    n = len(header)
    for item in _data_lines(lines, start, rel):
        if isinstance(item, Reject):
            yield item
            continue
        lineno, line = item
        fields = _split_checked(rel, lineno, line, n)
        if isinstance(fields, Reject):
            yield fields
        else:
            yield lineno, dict(zip(header, fields, strict=True))


def _data_lines(lines: list[str], start: int, rel: str) -> Iterator[tuple[int, str] | Reject]:
    """The data lines with their line numbers (header = 1): CR stripped, blank lines
    skipped (their numbers kept), over-long lines rejected without echoing them."""
    for idx in range(start, len(lines)):
        line = lines[idx]
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line.isspace():
            continue
        lineno = idx + 1
        if len(line) > MAX_LINE:
            yield _too_long(rel, lineno, line)
            continue
        yield lineno, line


R = TypeVar("R")


def parse_csv_file(
    path: Path,
    rel: str,
    ctx: ParseContext,
    *,
    department: Department,
    columns: list[str],
    encoding: Encoding,
    parse_row: Callable[[Row, Origin, ParseContext], R],
    fast_line: Callable[[str, Origin, ParseContext], R | None] | None = None,
) -> Iterator[R | Reject]:
    """Read a file (header checked eagerly: FileError is raised by this call, not by the
    first ``next``) and parse each row.

    ``fast_line``, when given, is tried first on the raw line if the header is exactly
    ``columns`` and the line has no quotes: it returns the event for an ordinary valid line
    and None for anything else, which then goes the full way (split, field count,
    ``parse_row``)."""
    lines, start, header = open_csv(path, rel, columns, encoding, department)
    fast = fast_line if header == columns else None
    return _parse_lines(lines, start, header, rel, ctx, department, parse_row, fast)


def _parse_lines(
    lines: list[str],
    start: int,
    header: list[str],
    rel: str,
    ctx: ParseContext,
    department: Department,
    parse_row: Callable[[Row, Origin, ParseContext], R],
    fast: Callable[[str, Origin, ParseContext], R | None] | None,
) -> Iterator[R | Reject]:
    # The same steps as _data_lines, in one loop: this is the hot loop of every file.
    n = len(header)
    first, end = start, len(lines)
    if ctx.share is not None:
        k, parts = ctx.share
        first, end = share_bounds(start, end, k, parts)
    for idx in range(first, end):
        line = lines[idx]
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line.isspace():
            continue
        lineno = idx + 1
        if len(line) > MAX_LINE:
            yield _too_long(rel, lineno, line)
            continue
        origin = Origin(department, rel, lineno)
        if fast is not None and '"' not in line:  # quoted fields need the CSV reader
            event = fast(line, origin, ctx)
            if event is not None:
                yield event
                continue
        fields = _split_checked(rel, lineno, line, n)
        if isinstance(fields, Reject):
            yield fields
        else:
            yield parse_row(dict(zip(header, fields, strict=True)), origin, ctx)


def share_bounds(start: int, end: int, k: int, parts: int) -> tuple[int, int]:
    """The line indices ``[a, b)`` of the k-th of ``parts`` equal shares of ``start..end``;
    the shares cover every line exactly once, in order."""
    if not 0 <= k < parts:
        raise ValueError(f"share {k} of {parts}")
    n = end - start
    return start + n * k // parts, start + n * (k + 1) // parts


_E = TypeVar("_E")


def fast_or_checked(
    row: Row,
    origin: Origin,
    ctx: ParseContext,
    values: Callable[[Row], Iterable[str]],
    fast: Callable[[str, Origin, ParseContext], _E | None],
    checked: Callable[[Row, Origin, ParseContext], _E | Reject],
) -> _E | Reject:
    """Try a format's fast path on the row's values joined as a line (ordinary valid rows),
    and fall back to the full field-by-field check, the only code that decides rejects."""
    try:
        line: str | None = ",".join(values(row))
    except (KeyError, TypeError):
        line = None
    if line is not None:
        event = fast(line, origin, ctx)
        if event is not None:
            return event
    return checked(row, origin, ctx)

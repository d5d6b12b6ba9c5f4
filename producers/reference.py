"""Reference data: ``regions.csv`` (统计局, UTF-8 with BOM) and ``thresholds.csv``
(乡村振兴局, UTF-8).

The two files come from different departments, so this module holds two formats, each an
object with the same interface as a parser module (``DEPARTMENT``, ``COLUMNS``,
``ENCODING``, ``parse_row``, ``parse_file``): :data:`regions` and :data:`thresholds`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Final, Literal, cast

from producers.common import (
    Encoding,
    ParseContext,
    Reject,
    Row,
    RowError,
    choice,
    digits_field,
    make_reject,
    money,
    parse_csv_file,
    required,
    show,
)
from schemas.events import Department, MonitoringLine, Origin, Region

Level = Literal["省", "市", "县", "乡镇", "村"]
LEVELS: Final = ("省", "市", "县", "乡镇", "村")


def parse_region_row(row: Row, origin: Origin, ctx: ParseContext) -> Region | Reject:
    try:
        code = digits_field(row, "行政区划代码", 12, "bad_region_code", "行政区划代码")
        name = required(row, "名称")
        level = choice(row, "级别", LEVELS, "unknown_region_level")
    except RowError as e:
        return make_reject(origin, e)
    return Region(
        id=f"region:{code}", origin=origin, code=code, name=name, level=cast(Level, level)
    )


def parse_threshold_row(row: Row, origin: Origin, ctx: ParseContext) -> MonitoringLine | Reject:
    try:
        y = required(row, "年度")
        if not (len(y) == 4 and y.isascii() and y.isdigit() and 1900 <= int(y) <= 2100):
            raise RowError("bad_year", f"「年度」无效：{show(y)}，应为四位年份，如 2025")
        line = money(row, "监测范围")
        if line <= 0:
            raise RowError(
                "bad_monitoring_line", f"「监测范围」应为正数（元/人·年），实际为 {line}"
            )
    except RowError as e:
        return make_reject(origin, e)
    return MonitoringLine(id=f"line:{y}", origin=origin, year=int(y), line=line)


# Each format is a module object (a ModuleType subclass), so it can stand wherever a parser
# module is expected, e.g. ``publish_file(module: ModuleType, ...)``.


class _Regions(ModuleType):
    DEPARTMENT: Final[Department] = "statistics"
    ENCODING: Final[Encoding] = "utf-8-sig"
    COLUMNS: Final[list[str]] = ["行政区划代码", "名称", "级别"]

    def parse_row(self, row: Row, origin: Origin, ctx: ParseContext) -> Region | Reject:
        return parse_region_row(row, origin, ctx)

    def parse_file(self, path: Path, rel: str, ctx: ParseContext) -> Iterator[Region | Reject]:
        return parse_csv_file(
            path,
            rel,
            ctx,
            department=self.DEPARTMENT,
            columns=self.COLUMNS,
            encoding=self.ENCODING,
            parse_row=parse_region_row,
        )

    def __repr__(self) -> str:
        return "<format regions.csv>"


class _Thresholds(ModuleType):
    DEPARTMENT: Final[Department] = "rural"
    ENCODING: Final[Encoding] = "utf-8-sig"
    COLUMNS: Final[list[str]] = ["年度", "监测范围"]

    def parse_row(self, row: Row, origin: Origin, ctx: ParseContext) -> MonitoringLine | Reject:
        return parse_threshold_row(row, origin, ctx)

    def parse_file(
        self, path: Path, rel: str, ctx: ParseContext
    ) -> Iterator[MonitoringLine | Reject]:
        return parse_csv_file(
            path,
            rel,
            ctx,
            department=self.DEPARTMENT,
            columns=self.COLUMNS,
            encoding=self.ENCODING,
            parse_row=parse_threshold_row,
        )

    def __repr__(self) -> str:
        return "<format thresholds.csv>"


regions: Final = _Regions("producers.reference.regions", "regions.csv (统计局)")
thresholds: Final = _Thresholds("producers.reference.thresholds", "thresholds.csv (乡村振兴局)")

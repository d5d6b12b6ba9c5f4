"""A scenario folder (such as ``sample/``): which files to publish, in which order."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from fanpin.privacy import Pseudonymiser
from producers import employment, income, medical, reference, roster
from producers.common import Event, ParseContext, Reject

_MONTH_FILE = re.compile(r"[0-9]{4}-(?:0[1-9]|1[0-2])\.csv")

#: Monthly folders, in the order their files of one month are published.
MONTHLY: list[tuple[str, ModuleType]] = [
    ("medical", medical),
    ("employment", employment),
    ("income", income),
]


def scenario_files(root: Path) -> list[tuple[str, Path, ModuleType]]:
    """``(rel, path, module)`` in publish order: regions.csv, thresholds.csv, roster.csv,
    then month by month (ascending) medical, employment and income. ``rel`` uses forward
    slashes. Missing files are skipped; files in the monthly folders whose name is not
    ``YYYY-MM.csv`` are ignored.

    Each module satisfies :class:`producers.common.FileFormat` (``DEPARTMENT``,
    ``COLUMNS``, ``ENCODING``, ``parse_file``, ``parse_row``); the two reference formats
    are module objects defined in :mod:`producers.reference`."""
    out: list[tuple[str, Path, ModuleType]] = []
    top: list[tuple[str, ModuleType]] = [
        ("regions.csv", reference.regions),
        ("thresholds.csv", reference.thresholds),
        ("roster.csv", roster),
    ]
    for name, fmt in top:
        p = root / name
        if p.is_file():
            out.append((name, p, fmt))
    months: set[str] = set()
    for folder, _ in MONTHLY:
        d = root / folder
        if d.is_dir():
            months.update(p.stem for p in d.iterdir() if _MONTH_FILE.fullmatch(p.name))
    for month in sorted(months):
        for folder, fmt in MONTHLY:
            p = root / folder / f"{month}.csv"
            if p.is_file():
                out.append((f"{folder}/{month}.csv", p, fmt))
    return out


def load_known_households(roster_path: Path) -> set[str]:
    """The 户编号 values of a roster file (for the income unknown_household check)."""
    return roster.household_numbers(roster_path)


def parse_scenario(
    root: Path, pseudonymiser: Pseudonymiser, *, check_households: bool = True
) -> Iterator[Event | Reject]:
    """Every event and reject of a scenario folder, in publish order. Raises FileError
    for a file that cannot be read at all (after the files before it went through)."""
    known = None
    if check_households and (root / "roster.csv").is_file():
        known = load_known_households(root / "roster.csv")
    ctx = ParseContext(pseudonymiser, known)
    for rel, path, fmt in scenario_files(root):
        yield from fmt.parse_file(path, rel, ctx)

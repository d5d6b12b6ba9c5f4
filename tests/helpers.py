"""Small helpers shared by the test tiers."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def personal_data(root: Path = SAMPLE) -> tuple[set[str], set[str]]:
    """Every resident ID number and name in a scenario's roster, medical and employment
    files: what must never appear past the producer."""
    ids: set[str] = set()
    names: set[str] = set()
    rows = read_csv(root / "roster.csv")
    for folder, enc in (("medical", "gb18030"), ("employment", "utf-8-sig")):
        for f in sorted((root / folder).glob("*.csv")):
            with f.open(encoding=enc, newline="") as fh:
                rows += list(csv.DictReader(fh))
    for r in rows:
        if r.get("身份证号"):
            ids.add(r["身份证号"].strip())
        if r.get("姓名"):
            names.add(r["姓名"].strip())
    return ids, {n for n in names if len(n) >= 2}


_ID_LIKE = re.compile(r"[0-9]{17}[0-9Xx]")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")


def find_personal_data(blob: str, ids: set[str], names: set[str]) -> list[str]:
    """The ID numbers and names that occur anywhere in ``blob`` (also inside longer
    strings), found by set intersection so a multi-megabyte dump is scanned once."""
    found = {m.upper() for m in _ID_LIKE.findall(blob)} & {i.upper() for i in ids}
    lengths = {len(n) for n in names}
    grams: set[str] = set()
    for run in set(_CJK_RUN.findall(blob)):
        for n in lengths:
            grams.update(run[i:i + n] for i in range(len(run) - n + 1))
    return sorted(found) + sorted(grams & names)


def cli_env(extra: dict[str, str]) -> dict[str, str]:
    env = os.environ.copy()
    env.update(extra)
    return env

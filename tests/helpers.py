"""Small helpers shared by the test tiers."""

from __future__ import annotations

import csv
import os
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


def find_personal_data(blob: str, ids: set[str], names: set[str]) -> list[str]:
    found = [i for i in ids if i in blob]
    found += [n for n in names if n in blob]
    return found


def cli_env(extra: dict[str, str]) -> dict[str, str]:
    env = os.environ.copy()
    env.update(extra)
    return env

"""The fault-test table of docs/reliability.md, from the summary the fault tests write.

    FANPIN_RELIABILITY_OUT=var/reliability.json \\
        .venv/bin/python -m pytest tests/integration/test_faults.py -p no:cacheprovider
    .venv/bin/python scripts/reliability_table.py var/reliability.json --write docs/reliability.md

Without ``--write`` the section is printed. With it, the text between the
``<!-- fault-tests:begin -->`` and ``<!-- fault-tests:end -->`` markers is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN = "<!-- fault-tests:begin -->"
END = "<!-- fault-tests:end -->"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def section(summary: dict) -> str:  # type: ignore[type-arg]
    sc = summary["scenario"]
    lines = [
        BEGIN,
        f"Measured on {summary['date']} by `tests/integration/test_faults.py` "
        f"({summary['module_seconds']:.0f} s for the module): `{sc['generator']}` with "
        f"{sc['households']} households × {sc['months']} months (seed {sc['seed']}), "
        f"{sc['partitions']} partitions, the session's Kafka broker and PostgreSQL.",
        "",
        "| scenario | what was done | entries expected | entries found | duplicates | lost "
        "| result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in summary["rows"]:
        lines.append("| " + " | ".join(_cell(row[k]) for k in (
            "scenario", "done", "entries_expected", "entries_found", "duplicates", "lost",
            "result")) + " |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path)
    parser.add_argument("--write", type=Path, help="the Markdown file to update")
    args = parser.parse_args(argv)
    text = section(json.loads(args.summary.read_text(encoding="utf-8")))
    if args.write is None:
        sys.stdout.write(text)
        return 0
    doc = args.write.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        print(f"{args.write} has no {BEGIN} … {END} markers", file=sys.stderr)
        return 1
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    args.write.write_text(head + text.rstrip("\n") + tail, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

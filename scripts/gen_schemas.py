"""Write the JSON Schema of every event kind to ``schemas/json/<kind>.json``.

Run after changing any struct in ``schemas/events.py``:

    .venv/bin/python scripts/gen_schemas.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "schemas" / "json"


def render(schema: dict[str, object]) -> str:
    """The exact text checked in for one schema (the unit tests compare against this)."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    sys.path.insert(0, str(REPO))
    from schemas.events import json_schemas

    OUT.mkdir(parents=True, exist_ok=True)
    for kind, schema in sorted(json_schemas().items()):
        path = OUT / f"{kind}.json"
        path.write_text(render(schema), encoding="utf-8", newline="\n")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

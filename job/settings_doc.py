"""The README's settings table, generated from the Settings class.

python -m job.settings_doc --write README.md   # regenerate (make docs)
python -m job.settings_doc --check README.md   # exit 1 if the README is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic_core import PydanticUndefined

from job.config import allowed_values
from job.settings import Settings, env_name

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def table() -> str:
    groups: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if field.default_factory is not None:
            default = "*computed*"
        elif field.default is PydanticUndefined:
            default = "**required**"
        elif field.default is None:
            default = "unset"
        else:
            default = f"`{field.default}`"
        cells = [f"`{env_name(name)}`", default, allowed_values(name), field.description or ""]
        row = "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
        groups.setdefault(str(extra.get("group", "other")), []).append(row)
    parts = []
    for group, rows in groups.items():
        parts += [f"**{group}**", "", "| variable | default | accepts | meaning |", "|---|---|---|---|", *rows, ""]
    return "\n".join(parts).rstrip() + "\n"


def splice(document: str) -> str:
    head, sep1, rest = document.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep1 or not sep2:
        raise SystemExit(f"markers {START} ... {END} not found")
    return f"{head}{START}\n{table()}{END}{tail}"


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path)
    mode.add_argument("--check", type=Path)
    args = p.parse_args(argv)
    target = args.write or args.check
    current = target.read_text()
    fresh = splice(current)
    if args.write:
        target.write_text(fresh)
        return 0
    if fresh != current:
        print(f"{target}: the settings table is stale; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())

"""Small file helpers shared by the artifact writer and the storage backends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def write_json(path: Path, payload: Any) -> None:
    """Whole or not at all: readers never see a half-written file."""
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    scratch.replace(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_listing(folder: Path) -> list[dict[str, Any]]:
    """Every file under `folder` with its size and sha256, sorted by path."""
    return [
        {"path": path.relative_to(folder).as_posix(), "size": path.stat().st_size, "sha256": sha256_of(path)}
        for path in sorted(p for p in folder.rglob("*") if p.is_file())
    ]

"""Small file helpers shared by the artifact writer and the storage backends."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
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


def ensure_writable_dir(path: Path, variable: str, *, dry_run: bool = False) -> None:
    """Create `path` if needed and check this user may write there; StorageError naming `variable` if not.

    A dry run creates the folders too (the only honest test of the permission) and then
    removes the ones it created.
    """
    from job.errors import StorageError

    created = [p for p in (path, *path.parents) if not p.exists()] if dry_run else []  # deepest first
    try:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"{variable}: cannot create {path} ({exc.strerror}); choose a writable directory"
            ) from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise StorageError(f"{variable}: {path} is not writable by this user; choose a writable directory")
    finally:
        for folder in created:
            with contextlib.suppress(OSError):  # not empty: someone else wrote there meanwhile
                folder.rmdir()

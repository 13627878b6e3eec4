"""Publishing to a local (or mounted: NFS, PVC) directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from job.files import ensure_writable_dir, file_listing, write_json
from job.storage.base import COMPLETE, LATEST, completion_manifest


class LocalOutput:
    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.final = root / run_id
        self.location = str(self.final)
        self.model_ref = str(self.final)

    def is_complete(self) -> bool:
        return (self.final / COMPLETE).is_file()

    def check_writable(self, *, dry_run: bool = False) -> None:
        ensure_writable_dir(self.root, "FT_OUTPUT", dry_run=dry_run)

    def publish(self, staging: Path, *, message: str) -> str:
        files = file_listing(staging)
        self.check_writable()
        if self.final.exists():  # left by an interrupted publish of this run id
            shutil.rmtree(self.final)
        try:
            staging.rename(self.final)
        except OSError:  # another filesystem: copy, then drop the staging copy
            shutil.copytree(staging, self.final)
            shutil.rmtree(staging)
        _make_readable(self.final)
        write_json(self.final / COMPLETE, completion_manifest(files, message=message))
        return self.location

    def read_latest(self) -> dict[str, Any] | None:
        path = self.root / LATEST
        return json.loads(path.read_text()) if path.is_file() else None

    def write_latest(self, pointer: dict[str, Any]) -> None:
        partial = self.root / f".{LATEST}.partial"
        write_json(partial, pointer)
        partial.replace(self.root / LATEST)  # readers see the old pointer or the new one


def _make_readable(folder: Path) -> None:
    """Some writers (safetensors) create 0600 files; a published model is for others to read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)

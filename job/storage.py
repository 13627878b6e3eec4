"""Where finished runs go. The one place that writes outside the run's scratch space.

A run is assembled in a local staging folder, verified, then published here;
the completion manifest is written last, so a folder without one is incomplete.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from job.errors import ConfigError, StorageError
from job.files import file_listing, write_json
from job.settings import Settings

COMPLETE = "_COMPLETE.json"


class Output(Protocol):
    location: str  # where the finished run lives, for people
    model_ref: str  # what to pass to from_pretrained / pipeline

    def is_complete(self) -> bool: ...
    def check_writable(self) -> None: ...
    def publish(self, staging: Path) -> str: ...


def open_output(settings: Settings) -> Output:
    scheme, sep, _ = settings.output.partition("://")
    if sep and scheme.lower() != "file":
        raise ConfigError(
            f"FT_OUTPUT='{settings.output}': {scheme}:// outputs are not supported yet; use a local directory"
        )
    root = Path(settings.output.removeprefix("file://")).expanduser()
    return LocalOutput(root, settings.run_id)


class LocalOutput:
    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.final = root / run_id
        self.location = str(self.final)
        self.model_ref = str(self.final)

    def is_complete(self) -> bool:
        return (self.final / COMPLETE).is_file()

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"FT_OUTPUT='{self.root}' cannot be created ({exc.strerror}); choose a writable directory"
            ) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"FT_OUTPUT='{self.root}' is not writable by this user; choose a writable directory")

    def publish(self, staging: Path) -> str:
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
        write_json(self.final / COMPLETE, completion_manifest(files))
        return self.location


def _make_readable(folder: Path) -> None:
    """Some writers (safetensors) create 0600 files; a published model is for others to read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def completion_manifest(files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "completed_at": datetime.now(UTC).isoformat(),
        "file_count": len(files),
        "total_bytes": sum(f["size"] for f in files),
        "files": files,
    }

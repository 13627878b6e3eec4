"""What every output backend provides, and the completion manifest they all write."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

COMPLETE = "_COMPLETE.json"
LATEST = "latest.json"  # beside the runs: the promoted (production) run


class Output(Protocol):
    location: str  # where the finished run lives, for people and logs
    model_ref: str  # what to pass to from_pretrained / pipeline

    def check_writable(self, *, dry_run: bool = False) -> None:
        """Fail now, before training, if publishing would fail later; a dry run leaves nothing behind."""

    def is_complete(self) -> bool:
        """This run id was already published in full."""

    def publish(self, staging: Path, *, message: str) -> str:
        """Upload the verified folder; returns the final location."""

    def read_latest(self) -> dict[str, Any] | None:
        """The `latest.json` pointer beside the runs (the production run), if any."""

    def write_latest(self, pointer: dict[str, Any]) -> None:
        """Move the pointer to a published run."""


def completion_manifest(files: list[dict[str, Any]], *, message: str) -> dict[str, Any]:
    return {
        "completed_at": datetime.now(UTC).isoformat(),
        "message": message,
        "file_count": len(files),
        "total_bytes": sum(f["size"] for f in files),
        "files": files,
    }

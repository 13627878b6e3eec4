"""Publishing a finished run to FT_OUTPUT: every file, then the completion manifest
(`_COMPLETE.json`: every file, size, sha256) last; and the promotion pointer beside the runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from job.errors import StorageError
from job.files import file_listing
from job.logs import get_logger
from job.storage.folder import COMPLETE, Folder, read_json, to_json, write_json
from job.storage.s3_client import MIB

LATEST = "latest.json"  # beside the runs: the promoted (production) run

log = get_logger("job.storage.outputs")


class Output(Protocol):
    location: str  # where the finished run lives, for people and logs
    model_ref: str  # what to pass to from_pretrained / pipeline
    model_revision: str | None  # and the revision to pass with it (a Hub branch), if any

    def check_writable(self, *, dry_run: bool = False) -> None:
        """Fail now, before training, if publishing would fail later; a dry run leaves nothing behind."""

    def is_complete(self) -> bool:
        """This run id was already published in full."""

    def publish(self, staging: Path, *, message: str) -> str:
        """Upload the verified folder; returns the final location."""

    def read_published(self, name: str) -> bytes | None:
        """A file of this run as published (None when absent, or where promotion does not apply)."""

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


class FolderOutput:
    """`<FT_OUTPUT>/<run id>/` in a durable folder (a local or mounted directory, an S3 prefix)."""

    def __init__(self, root: Folder, run_id: str, *, probe_run: bool) -> None:
        self.root = root
        self.run = root.child(run_id)
        self.location = self.model_ref = self.run.location
        self.model_revision = None
        # A local run folder appears in one rename when it is published, so the folder above is
        # the one to probe; object stores have no folders, and policies may grant per run prefix.
        self._probe = self.run if probe_run else self.root

    def check_writable(self, *, dry_run: bool = False) -> None:
        self._probe.check_writable(dry_run=dry_run)

    def is_complete(self) -> bool:
        return self.run.read(COMPLETE) is not None

    def publish(self, staging: Path, *, message: str) -> str:
        mark = time.monotonic()
        files = file_listing(staging)  # sizes and sha256: most of the manifest's cost
        hashing = time.monotonic() - mark
        mark = time.monotonic()
        self.run.put_tree(staging, [f["path"] for f in files])
        moving = time.monotonic() - mark
        try:
            created = self.run.create(COMPLETE, to_json(completion_manifest(files, message=message)))
        except BaseException:
            # Files without their marker are a run nobody can trust: withdraw them (they are this
            # process's own upload, under its lease) rather than leave a partial run behind.
            self.run.delete_all()
            raise
        if not created:
            raise StorageError(
                f"{self.run.variable}={self.location}: another process completed this run id while this one published; "
                "its result stands, and this one's files may be mixed in — check the run, or publish under a new "
                "FT_RUN_ID"
            )
        size = sum(f["size"] for f in files)
        log.info(
            "output.published",
            location=self.location,
            files=len(files),
            mib=round(size / MIB, 2),
            upload_seconds=round(moving, 2),
            mib_per_second=round(size / MIB / moving, 1) if moving else None,
            manifest_seconds=round(hashing, 3),
        )
        return self.location

    def read_published(self, name: str) -> bytes | None:
        return self.run.read(name)

    def read_latest(self) -> dict[str, Any] | None:
        return read_json(
            self.root, LATEST, fix="restore it from the run it names, or delete it to let the next run become latest"
        )

    def write_latest(self, pointer: dict[str, Any]) -> None:
        write_json(self.root, LATEST, pointer)  # readers see the old pointer or the new one

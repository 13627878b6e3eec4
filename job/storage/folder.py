"""The one interface of a durable folder (a local or mounted directory, an S3 prefix):
what outputs, checkpoints, the search record and the promotion pointer are written through."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from job.errors import StorageError

COMPLETE = "_COMPLETE.json"  # written last into a published run: every other file, size, sha256
MIRROR_INDEX = ".ftjob-s3-index.json"  # what a local mirror holds: object -> [etag, size]


@dataclass(frozen=True)
class Entry:
    size: int
    etag: str  # changes when the content does (S3's ETag; size and mtime locally)


class Folder(Protocol):
    location: str  # as the user wrote it (s3://bucket/prefix/run, /mnt/models/run): for messages
    variable: str  # the setting it comes from, named in every error

    def child(self, *parts: str) -> Folder:
        """The folder below this one."""

    def list(self, prefix: str = "") -> dict[str, Entry]:
        """Every object below this folder whose relative path ('/'-separated) starts with `prefix`."""

    def read(self, name: str) -> bytes | None:
        """One object's content; None when there is none."""

    def write(self, name: str, body: bytes) -> None:
        """Readers see the previous content or the new one, never a part."""

    def create(self, name: str, body: bytes) -> bool:
        """Write only if `name` does not exist yet (atomically); False when it already did."""

    def read_tagged(self, name: str) -> tuple[bytes, str] | None:
        """One object's content and a tag that changes whenever it is written; None when absent."""

    def swap(self, name: str, body: bytes, *, tag: str) -> bool:
        """Replace the object only if it is still the version `tag` names (compare-and-swap);
        False when another writer changed or removed it meanwhile."""

    def put_tree(self, source: Path, names: list[str]) -> None:
        """Make this folder hold exactly `names` (paths relative to `source`): upload or move them in, check
        what arrived, and remove whatever else an earlier attempt left. `source` may be consumed. Refuses
        (StorageError) to touch a folder that holds a completed run (`_COMPLETE.json`)."""

    def upload(self, source: Path, names: list[str]) -> None:
        """Copy these files (paths relative to `source`) in, leaving every other object as it is."""

    def get(self, names: Iterable[str], target: Path) -> None:
        """Download these objects to the same relative paths under `target`."""

    def delete(self, names: Iterable[str]) -> None:
        """Remove these objects (missing ones are fine)."""

    def delete_all(self) -> None:
        """Remove every object below this folder."""

    def check_writable(self, *, dry_run: bool = False) -> None:
        """Fail now, before training, if writing here would fail later; a dry run leaves nothing behind."""


def read_json(folder: Folder, name: str, *, fix: str) -> Any | None:
    """A small JSON object, or None when absent; StorageError naming the object and `fix` when it is not JSON."""
    body = folder.read(name)
    if body is None:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise StorageError(
            f"{folder.variable}: {folder.location.rstrip('/')}/{name} is not valid JSON; {fix}"
        ) from None


def to_json(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, default=str) + "\n").encode()


def write_json(folder: Folder, name: str, payload: Any) -> None:
    folder.write(name, to_json(payload))


def mirror(folder: Folder, objects: dict[str, Entry], target: Path, *, exact: bool) -> tuple[int, int]:
    """Download what of `objects` the local `target` does not already hold at the same
    ETag; returns the objects and bytes fetched. `exact`: afterwards `target` holds these
    objects and nothing else (files an earlier mirror had, deleted at the source since, go)."""
    target.mkdir(parents=True, exist_ok=True)
    index_path = target / MIRROR_INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    todo = [n for n, e in objects.items() if not ((target / n).is_file() and index.get(n) == [e.etag, e.size])]
    folder.get(todo, target)
    index.update({n: [objects[n].etag, objects[n].size] for n in todo})
    if exact:
        for path in [p for p in target.rglob("*") if p.is_file() and p != index_path]:
            if path.relative_to(target).as_posix() not in objects:
                path.unlink()
        index = {n: v for n, v in index.items() if n in objects}
    index_path.write_text(json.dumps(index, indent=1))
    return len(todo), sum(objects[n].size for n in todo)

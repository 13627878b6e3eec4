"""A durable folder on a local or mounted filesystem (a disk, NFS, a PVC)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from job.errors import StorageError, filesystem_error
from job.storage.folder import COMPLETE, Entry


class LocalFolder:
    def __init__(self, root: Path, variable: str) -> None:
        self.root = root
        self.variable = variable
        self.location = str(root)

    def child(self, *parts: str) -> LocalFolder:
        return LocalFolder(self.root.joinpath(*parts), self.variable)

    def list(self, prefix: str = "") -> dict[str, Entry]:
        if not self.root.is_dir():
            return {}
        found = {}
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if name.startswith(prefix) and path.is_file():
                stat = path.stat()
                found[name] = Entry(stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}")
        return found

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def write(self, name: str, body: bytes) -> None:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.partial")
        scratch.write_bytes(body)
        scratch.replace(target)  # readers see the old file or the new one

    def create(self, name: str, body: bytes) -> bool:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            scratch.write_bytes(body)
            os.link(scratch, target)  # fails if the target exists, also over NFS
        except FileExistsError:
            return False
        finally:
            scratch.unlink(missing_ok=True)
        return True

    def read_tagged(self, name: str) -> tuple[bytes, str] | None:
        body = self.read(name)
        return None if body is None else (body, hashlib.sha256(body).hexdigest())

    def swap(self, name: str, body: bytes, *, tag: str) -> bool:
        # The check and the replace under one lock, which other hosts of a shared filesystem
        # see too (flock is carried as a POSIX lock over NFS).
        with self._locked(name):
            current = self.read_tagged(name)
            if current is None or current[1] != tag:
                return False
            self.write(name, body)
        return True

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        path = self.root / f".{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def put_tree(self, source: Path, names: list[str]) -> None:
        ensure_writable_dir(self.root.parent, self.variable)
        if (self.root / COMPLETE).exists():
            raise StorageError(
                f"{self.variable}={self.location}: a completed run is already there; it is never replaced — "
                "publish under a new FT_RUN_ID"
            )
        if self.root.exists():  # left by an interrupted attempt of this run id
            shutil.rmtree(self.root)
        try:
            source.rename(self.root)
        except OSError:  # another filesystem: copy, then drop the source
            try:
                shutil.copytree(source, self.root)
            except (OSError, shutil.Error):
                shutil.rmtree(self.root, ignore_errors=True)  # no partial run folder stays behind
                raise
            shutil.rmtree(source)
        _make_readable(self.root)
        arrived = self.list()
        missing = [n for n in names if n not in arrived]
        if missing:
            raise StorageError(f"{self.variable}={self.location}: {', '.join(missing[:3])} did not arrive")

    def upload(self, source: Path, names: list[str]) -> None:
        _copy(source, names, self.root)

    def get(self, names: Iterable[str], target: Path) -> None:
        _copy(self.root, names, target)

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            path = self.root / name
            path.unlink(missing_ok=True)
            for folder in path.parents:  # folders left empty go too, as they would in S3
                if folder == self.root.parent or not folder.is_relative_to(self.root):
                    break
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def delete_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def check_writable(self, *, dry_run: bool = False) -> None:
        """Like the S3 probe, this leaves nothing behind, dry run or not: the folders the
        job writes later are created when they are written."""
        ensure_writable_dir(self.root, self.variable, keep=False)


def ensure_writable_dir(path: Path, variable: str, *, keep: bool = True) -> None:
    """Create `path` if needed and write a probe file there; StorageError naming `variable`,
    the folder and the fix if either fails (read-only, immutable, full, a file in the way).

    Creating and writing are the only honest test (permission bits say nothing to root on a
    read-only mount); unless `keep`, the folders it created are removed again.
    """
    created = [] if keep else [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        if path.exists() and not path.is_dir():
            raise filesystem_error(variable, str(path), errno.EEXIST)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".ftjob-write-check-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise filesystem_error(variable, str(path), exc.errno or errno.EIO) from None
    finally:
        for folder in created:
            with contextlib.suppress(OSError):  # not empty: someone else wrote there meanwhile
                folder.rmdir()


def _copy(source: Path, names: Iterable[str], target: Path) -> None:
    for name in names:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, destination)


def _make_readable(folder: Path) -> None:
    """Some writers (safetensors) create 0600 files; a published model is for others to read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)

"""One owner per run id: an OS lock per node on this machine, and on the main node a lease
beside the run's durable checkpoint folder (`<FT_CHECKPOINT_DIR>/<run id>.lease.json`, in S3
or on a shared filesystem) that other machines see.

The lease is an object created with a conditional write ("only if absent"), renewed by a
compare-and-swap every quarter of FT_LEASE_SECONDS while its owner is alive. A second
process finds it fresh and stops at once (exit 8) before touching anything; one that finds
it no longer renewed (its owner was killed) waits for it to expire and takes it over. Its
owner removes it when the command ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from job.errors import RunInUse
from job.logs import get_logger
from job.settings import Settings
from job.storage import Folder


def lease_name(run_id: str) -> str:
    return f"{run_id}.lease.json"


log = get_logger("job.ownership")


@dataclass
class Lease:
    """What this process holds; `lost` is set when a renewal found the lease taken."""

    folder: Folder | None
    name: str = ""
    owner: dict[str, Any] | None = None  # who this process is, as the lease record says it
    tag: str | None = None  # the version of the record this process wrote last
    lost: threading.Event | None = None

    def check_held(self) -> None:
        """Before a step that must not be shared (publishing): stop if the lease was lost."""
        if self.lost is not None and self.lost.is_set():
            where = f"{self.folder.location.rstrip('/')}/{self.name}" if self.folder is not None else "?"
            raise RunInUse(
                f"this process lost its lease on the run id at {where} (it could not renew it in time, and "
                "another process took it over); nothing was published — the other process carries on"
            )


@contextlib.contextmanager
def owned(settings: Settings, *, lock_dir: Path, node_rank: int, store: Folder | None) -> Iterator[Lease]:
    """Hold the run id for the duration: the node's lock on this machine, and the lease in
    `store` when given (the main node's FT_CHECKPOINT_DIR)."""
    with _machine_lock(lock_dir, settings.run_id, node_rank):
        if store is None:
            yield Lease(None)
            return
        lease = _acquire(store, settings)
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, args=(lease, settings, stop), name="lease-renewal", daemon=True)
        renewer.start()
        try:
            yield lease
        finally:
            stop.set()
            renewer.join()
            _release(lease)


def probe(settings: Settings, *, lock_dir: Path, node_rank: int, store: Folder | None) -> dict[str, Any]:
    """What a run would find, without taking anything (the dry run): raises the run's RunInUse
    for a live owner; otherwise says whether a stale lease would be waited for."""
    with _machine_lock(lock_dir, settings.run_id, node_rank):
        pass
    if store is None:
        return {"lease": None}
    found = store.read_tagged(lease_name(settings.run_id))
    if found is None:
        return {"lease": "free"}
    record = _parse(found[0])
    state = _state(record, settings)
    if state == "live":
        raise RunInUse(_in_use(settings, store, record))
    return {"lease": state, "held_by": _owner(record)}


@contextlib.contextmanager
def _machine_lock(lock_dir: Path, run_id: str, node_rank: int) -> Iterator[None]:
    """flock beside the work folder: released by the kernel when the process dies, however it dies."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{run_id}.node-{node_rank}.lock"
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunInUse(
                f"FT_RUN_ID={run_id} is in use by another process on this machine (pid {holder}, lock {path}); "
                "wait for it to finish, or start this run under a new FT_RUN_ID"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def _acquire(store: Folder, settings: Settings) -> Lease:
    owner = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "run_id": settings.run_id}
    name = lease_name(settings.run_id)
    where = f"{store.location.rstrip('/')}/{name}"
    while True:
        body = _record(owner, settings)
        if store.create(name, body):
            log.info("lease.acquired", location=where, expires_in_s=settings.lease_seconds)
            return _held(store, name, owner)
        found = store.read_tagged(name)
        if found is None:
            continue  # released between our attempt and our look: try again
        record, tag = _parse(found[0]), found[1]
        state = _state(record, settings)
        if state == "live":
            raise RunInUse(_in_use(settings, store, record))
        if state == "stale":
            wait = max(0.0, float(record.get("expires_at", 0)) - time.time()) + 0.5
            log.warning(
                "lease.waiting",
                location=where,
                held_by=_owner(record),
                seconds=round(wait, 1),
                reason="its owner stopped renewing it (killed?); it is taken over once it expires",
            )
            time.sleep(wait)
            continue  # look again: the owner may have come back
        if store.swap(name, body, tag=tag):  # expired: take it over
            log.info("lease.taken_over", location=where, previous=_owner(record))
            return _held(store, name, owner)


def _held(store: Folder, name: str, owner: dict[str, Any]) -> Lease:
    found = store.read_tagged(name)
    return Lease(store, name, owner, found[1] if found else None, threading.Event())


def _renew(lease: Lease, settings: Settings, stop: threading.Event) -> None:
    assert lease.folder is not None and lease.lost is not None and lease.owner is not None
    owner = lease.owner
    while not stop.wait(settings.lease_seconds / 4):
        try:
            if lease.tag is None or not lease.folder.swap(lease.name, _record(owner, settings), tag=lease.tag):
                lease.lost.set()
                log.error("lease.lost", location=lease.folder.location, effect="this process will not publish")
                return
            found = lease.folder.read_tagged(lease.name)
            lease.tag = found[1] if found else None
        except Exception as exc:  # a passing outage: the next renewal tries again, within the lease's time
            log.warning("lease.renewal_failed", location=lease.folder.location, error=str(exc)[:300])


def _release(lease: Lease) -> None:
    """Remove the lease if it is still ours (a fresh lease no other process may change), so
    the next process takes the run id at once."""
    if lease.folder is None or lease.tag is None or (lease.lost is not None and lease.lost.is_set()):
        return
    try:
        found = lease.folder.read_tagged(lease.name)
        if found is not None and found[1] == lease.tag:
            lease.folder.delete([lease.name])
    except Exception as exc:  # it then expires on its own
        log.warning("lease.release_failed", location=lease.folder.location, error=str(exc)[:300])


def _record(owner: dict[str, Any], settings: Settings) -> bytes:
    now = time.time()
    return json.dumps({**owner, "renewed_at": now, "expires_at": now + settings.lease_seconds}).encode()


def _parse(body: bytes) -> dict[str, Any]:
    """The lease record; an unreadable one counts as expired (it protects nothing)."""
    try:
        record = json.loads(body)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _state(record: dict[str, Any], settings: Settings) -> str:
    """`live` (renewed lately), `stale` (not renewed for two renewal periods, not yet expired) or
    `expired`. A lease whose owner was a process of this machine that is gone (a requeued job on
    its node, a restart after a kill) is expired at once: the machine lock is this process's now."""
    now = time.time()
    expires = float(record.get("expires_at") or 0)
    if now >= expires or (record.get("host") == socket.gethostname() and not _alive(record.get("pid"))):
        return "expired"
    renewed = float(record.get("renewed_at") or 0)
    return "stale" if now - renewed > settings.lease_seconds / 2 else "live"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return pid != os.getpid()


def _owner(record: dict[str, Any]) -> str:
    return f"{record.get('host', '?')} pid {record.get('pid', '?')}"


def _in_use(settings: Settings, store: Folder, record: dict[str, Any]) -> str:
    age = time.time() - float(record.get("renewed_at") or 0)
    return (
        f"FT_RUN_ID={settings.run_id} is in use by another live process ({_owner(record)}, lease at "
        f"{store.location.rstrip('/')}/{lease_name(settings.run_id)} renewed {age:.0f}s ago); wait for it to finish, "
        "or start this run under a new FT_RUN_ID"
    )

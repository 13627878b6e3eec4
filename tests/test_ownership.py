"""The run-id lease on a shared folder, in one process with hand-written lease records: each
state a second machine can find (fresh, no longer renewed, expired, lost) without the timing
of a killed subprocess. test_integrity.py runs the same rules end to end."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from job.errors import RunInUse
from job.ownership import lease_name, owned
from job.storage.local import LocalFolder


def other_host_lease(folder: LocalFolder, run_id: str, *, renewed_ago: float, lease_seconds: int) -> None:
    renewed = time.time() - renewed_ago
    record = {"owner": "someone-else", "host": "other-host", "pid": 4242, "run_id": run_id}
    record |= {"renewed_at": renewed, "expires_at": renewed + lease_seconds}
    folder.write(lease_name(run_id), json.dumps(record).encode())


def lease_record(folder: LocalFolder, run_id: str) -> dict[str, Any] | None:
    body = folder.read(lease_name(run_id))
    return None if body is None else json.loads(body)


@pytest.fixture
def store(tmp_path: Path) -> LocalFolder:
    return LocalFolder(tmp_path / "checkpoints", "FT_CHECKPOINT_DIR")


def test_a_fresh_lease_of_another_host_stops_the_run_at_once(make_settings: Any, store: LocalFolder, tmp_path: Path):
    settings = make_settings(dataset="unused", lease_seconds=60)
    other_host_lease(store, settings.run_id, renewed_ago=1, lease_seconds=60)
    started = time.monotonic()
    with pytest.raises(RunInUse) as refused, owned(settings, lock_dir=tmp_path / "locks", node_rank=0, store=store):
        pytest.fail("the run id was taken from a live owner")
    assert time.monotonic() - started < 2
    assert "other-host pid 4242" in str(refused.value) and "new FT_RUN_ID" in str(refused.value)
    assert lease_record(store, settings.run_id)["owner"] == "someone-else"  # untouched


def test_a_lease_no_longer_renewed_is_waited_for_then_taken_over(
    make_settings: Any, store: LocalFolder, tmp_path: Path
) -> None:
    # Renewal is due every 1.5 s: 4 s without one is stale; it expires 2 s from now.
    settings = make_settings(dataset="unused", lease_seconds=6)
    other_host_lease(store, settings.run_id, renewed_ago=4, lease_seconds=6)
    started = time.monotonic()
    with owned(settings, lock_dir=tmp_path / "locks", node_rank=0, store=store):
        waited = time.monotonic() - started
        held = lease_record(store, settings.run_id)
    assert 1.5 <= waited < 6, waited  # until it expired, not at once and not forever
    assert held["host"] != "other-host" and held["pid"] == os.getpid()
    assert lease_record(store, settings.run_id) is None  # released at the end


def test_an_expired_lease_and_a_dead_local_owners_lease_are_taken_at_once(
    make_settings: Any, store: LocalFolder, tmp_path: Path
) -> None:
    settings = make_settings(dataset="unused", lease_seconds=60)
    other_host_lease(store, settings.run_id, renewed_ago=61, lease_seconds=60)
    started = time.monotonic()
    with owned(settings, lock_dir=tmp_path / "locks", node_rank=0, store=store):
        assert lease_record(store, settings.run_id)["pid"] == os.getpid()
    # On this machine a gone pid is proof enough, however fresh its lease looks.
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    now = time.time()
    record = {"owner": "x", "host": os.uname().nodename, "pid": gone, "renewed_at": now, "expires_at": now + 60}
    store.write(lease_name(settings.run_id), json.dumps(record).encode())
    with owned(settings, lock_dir=tmp_path / "locks", node_rank=0, store=store):
        assert lease_record(store, settings.run_id)["pid"] == os.getpid()
    assert time.monotonic() - started < 3


def test_a_lease_taken_while_running_forbids_publishing(make_settings: Any, store: LocalFolder, tmp_path: Path):
    settings = make_settings(dataset="unused", lease_seconds=5)  # renewed every 1.25 s
    with owned(settings, lock_dir=tmp_path / "locks", node_rank=0, store=store) as lease:
        lease.check_held()
        other_host_lease(store, settings.run_id, renewed_ago=0, lease_seconds=5)  # a takeover behind our back
        deadline = time.monotonic() + 5
        while not lease.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(RunInUse, match="lost its lease"):
            lease.check_held()
    assert lease_record(store, settings.run_id)["host"] == "other-host"  # the new owner's lease is not removed


def test_a_second_process_on_this_machine_is_refused_by_the_lock(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings(dataset="unused")
    with owned(settings, lock_dir=tmp_path / "locks", node_rank=0, store=None):
        child = os.fork()
        if child == 0:
            try:
                with owned(settings, lock_dir=tmp_path / "locks", node_rank=0, store=None):
                    os._exit(0)
            except RunInUse as refused:
                os._exit(8 if f"pid {os.getppid()}" in str(refused) else 1)
            os._exit(2)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 8

"""Checkpoints on durable storage, and resuming from them.

The checkpoints of run R live at `<FT_CHECKPOINT_DIR>/<R>/checkpoint-<step>`. The
Trainer writes them to a local folder: FT_CHECKPOINT_DIR itself when it is a path
(a PVC, a shared filesystem), else a local mirror that the launcher uploads to S3
in the background. A checkpoint counts only once its marker is written, after every
rank has saved its part, so one cut off mid-save is never resumed from.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainingArguments

from job.errors import Preempted
from job.files import file_listing
from job.logs import get_logger
from job.preemption import StopRequest
from job.settings import Settings
from job.storage import Folder, checkpoint_location, mirror, open_folder, read_json

MARKER = "ftjob-checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_PUSH_INTERVAL_S = 5.0
_MIB = 1024 * 1024

log = get_logger("job.checkpoints")


@dataclass(frozen=True)
class Checkpoints:
    local: Path  # where the Trainer writes
    store: Folder  # their durable home: `local` itself, or an S3 prefix it is mirrored to
    remote: bool  # the store is not `local`: checkpoints are uploaded and downloaded
    root: Folder  # FT_CHECKPOINT_DIR itself, above every run's store

    @property
    def durable(self) -> str:
        return self.store.location


def locate(settings: Settings, work: Path) -> Checkpoints:
    """`<FT_CHECKPOINT_DIR>/<run id>/`; in S3, the Trainer writes to a local mirror in `work`."""
    location = checkpoint_location(settings)
    root = open_folder(location, settings)
    store = root.child(settings.run_id)
    if location.kind == "s3":
        return Checkpoints(local=work, store=store, remote=True, root=root)
    return Checkpoints(local=location.path / settings.run_id, store=store, remote=False, root=root)


def check_writable(checkpoints: Checkpoints, *, dry_run: bool = False) -> None:
    checkpoints.store.check_writable(dry_run=dry_run)


def complete(folder: Path) -> list[Path]:
    """Checkpoints with their marker, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and (p / MARKER).is_file()]
    return [p for _, p in sorted(found)]


def latest(folder: Path) -> Path | None:
    found = complete(folder)
    return found[-1] if found else None


def restore(checkpoints: Checkpoints) -> Path | None:
    """The checkpoint to resume from, after fetching the remote ones (once per node)."""
    if checkpoints.remote:
        _pull(checkpoints)
    return latest(checkpoints.local)


def _pull(checkpoints: Checkpoints) -> None:
    """Fetch every complete checkpoint (one with its marker) from the store."""
    listed = checkpoints.store.list()
    done = {name.split("/")[0] for name in listed if name.endswith(f"/{MARKER}") and _NAME.match(name.split("/")[0])}
    if not done:
        return
    started = time.monotonic()
    wanted = {n: e for n, e in listed.items() if n.split("/")[0] in done}
    mirror(checkpoints.store, wanted, checkpoints.local, exact=False)  # newer local ones may not be uploaded yet
    seconds = round(time.monotonic() - started, 2)
    log.info("checkpoint.downloaded", location=checkpoints.durable, checkpoints=sorted(done), seconds=seconds)


def _push(checkpoints: Checkpoints) -> None:
    """Mirror local complete checkpoints to the store: new ones up (marker last), rotated ones removed."""
    store, local = checkpoints.store, checkpoints.local
    remote = set(store.list())
    remote_done = {k.split("/")[0] for k in remote if k.endswith(f"/{MARKER}")}
    present = {p.name for p in local.iterdir() if _NAME.match(p.name)} if local.is_dir() else set()
    for name in sorted(present - remote_done):
        folder = local / name
        if not (folder / MARKER).is_file():
            continue  # still being written
        files = [f for f in file_listing(folder) if f["path"] != MARKER]
        started = time.monotonic()
        target = store.child(name)
        target.upload(folder, [f["path"] for f in files])
        target.upload(folder, [MARKER])
        log.info(
            "checkpoint.uploaded",
            location=target.location,
            mib=round(sum(f["size"] for f in files) / _MIB, 2),
            seconds=round(time.monotonic() - started, 2),
        )
    gone = [k for k in remote if k.split("/")[0] not in present and _NAME.match(k.split("/")[0])]
    # Marker first, so a half-deleted checkpoint is never taken for a complete one.
    gone.sort(key=lambda k: not k.endswith(f"/{MARKER}"))
    for key in gone:
        store.delete([key])


@contextlib.contextmanager
def mirrored(checkpoints: Checkpoints, *, active: bool) -> Iterator[None]:
    """Upload complete checkpoints while the body trains; on failure or preemption,
    upload the last ones before giving up, so a restart elsewhere can resume."""
    if not (checkpoints.remote and active):
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(_PUSH_INTERVAL_S):
            try:
                _push(checkpoints)
            except Exception as exc:  # a transient outage must not end the training
                log.warning("checkpoint.upload_failed", location=checkpoints.durable, error=str(exc)[:300])

    thread = threading.Thread(target=loop, name="checkpoint-upload", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        stop.set()
        thread.join()
        _push(checkpoints)
        raise
    stop.set()
    thread.join()


def marker(checkpoint: Path) -> dict[str, Any]:
    """What a complete local checkpoint's marker records (step, run id, the inputs it was made with)."""
    return json.loads((checkpoint / MARKER).read_text())


def newest_in_store(checkpoints: Checkpoints) -> tuple[str, dict[str, Any]] | None:
    """The newest complete checkpoint in the durable store and its marker, without downloading it."""
    listed = checkpoints.store.list()
    steps = [
        int(m.group(1)) for name in listed if name.endswith(f"/{MARKER}") and (m := _NAME.match(name.split("/")[0]))
    ]
    if not steps:
        return None
    name = f"checkpoint-{max(steps)}"
    found = read_json(checkpoints.store, f"{name}/{MARKER}", fix=f"delete {name} so the run does not resume from it")
    return name, found or {}


def remove(checkpoints: Checkpoints) -> None:
    """After publishing (or when FT_CHANGED_INPUTS=discard): the checkpoints, and the search
    record beside them, are superseded."""
    shutil.rmtree(checkpoints.local, ignore_errors=True)
    if checkpoints.remote:
        checkpoints.store.delete_all()


class CheckpointCallback(TrainerCallback):
    """Extra saves every FT_SAVE_STEPS, markers on complete checkpoints, and the stop on request.

    Every rank runs it. Ranks exchange their stop flags each step without waiting on
    each other in the hot path (the result of step s is read at step s+1), so all of
    them stop, save and exit at the same step.
    """

    def __init__(
        self, stop: StopRequest, *, save_steps: int | None, run_id: str, inputs: dict[str, Any] | None
    ) -> None:
        self.stop = stop
        self.save_steps = save_steps
        self.run_id = run_id
        self.inputs = inputs  # what the checkpoint was made with (job.fingerprint); None for search trials
        self.stopping = False
        self._group: Any = None
        self._flag: torch.Tensor | None = None
        self._pending: Any = None

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if args.world_size > 1 and dist.is_available() and dist.is_initialized():
            # Host-side exchange on gloo, whatever the training backend: no device sync.
            self._group = dist.new_group(backend="gloo")

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.save_steps and state.global_step % self.save_steps == 0:
            control.should_save = True
        if self._stop_agreed():
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True

    def on_epoch_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stopping:  # no evaluation of a cut-short epoch: it would count as that epoch's score
            control.should_evaluate = False
            control.should_save = False

    def on_save(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self._group is not None:
            dist.barrier(group=self._group)  # every rank has written its part (its RNG state)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero:
            marker = {
                "step": state.global_step,
                "epoch": state.epoch,
                "run_id": self.run_id,
                "saved_at": time.time(),
                "inputs": self.inputs,
            }
            (folder / MARKER).write_text(json.dumps(marker))
            log.info("checkpoint.saved", step=state.global_step, path=str(folder))
        if self.stopping:
            raise Preempted(
                f"stopped on request at step {state.global_step} of {state.max_steps}; checkpoint saved to "
                f"{folder.name}; run again with FT_RUN_ID={self.run_id} to resume from it"
            )

    def on_train_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self._pending is not None:
            self._pending.wait()
            self._pending = None

    def _stop_agreed(self) -> bool:
        local = self.stop.requested
        if self._group is None:
            return local
        agreed = False
        if self._pending is not None:
            self._pending.wait()
            agreed = bool(self._flag is not None and self._flag.item() > 0)
        self._flag = torch.tensor([1.0 if local else 0.0])
        self._pending = dist.all_reduce(self._flag, group=self._group, async_op=True)
        return agreed

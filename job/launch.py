"""Start training on every process of this node: in this process when the run has a
single process, else through `accelerate launch` (one worker per GPU, world size =
GPUs x nodes).

Workers inherit the environment minus credentials and plus offline flags: the
launcher already fetched the data and model, and only it may talk to remote
storage. A failed worker fails the run with that worker's exit code and message.

Started by torchrun (or accelerate launch) instead, the processes are the workers already:
each node's local rank 0 hands the task to the node's other ranks (job.handoff, `follow`)
and trains as its own rank, in this process; no launch is nested in theirs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from job import bootstrap, device, handoff, worker
from job.config import SECRET_VARIABLES
from job.errors import TrainingError, error_for_code
from job.logs import get_logger
from job.preemption import StopRequest
from job.prepare import PreparedData
from job.results import TrainOutcome, clear_failures, load_outcome, reported_failures
from job.settings import ENV_PREFIX, Settings, as_environment
from job.topology import Topology
from job.training import train_and_evaluate
from job.workspace import Workspace

log = get_logger("job.launch")

# Workers never need these: they read only local files.
_WITHHELD = (*SECRET_VARIABLES, "AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE")


def train(
    settings: Settings,
    prepared: PreparedData,
    model_path: Path,
    topology: Topology,
    work: Workspace,
    *,
    checkpoints: Path,
    resume: Path | None,
    stop: StopRequest,
    inputs: dict[str, Any] | None = None,
) -> TrainOutcome | None:
    """The outcome on the main node; None on the others. The Trainer writes checkpoints to
    the local folder `checkpoints`, each recording `inputs` (the run's fingerprint)."""
    if topology.outer is not None:
        return _train_as_rank(
            settings, prepared, model_path, topology, work,
            checkpoints=checkpoints, resume=resume, stop=stop, inputs=inputs,
        )  # fmt: skip
    if topology.world_size == 1:
        return train_and_evaluate(
            settings,
            prepared,
            model_path,
            staging=work.staging,
            checkpoints=checkpoints,
            resume=resume,
            stop=stop,
            inputs=inputs,
        )
    _prepare_workers(topology, work, inputs)
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes", str(topology.world_size),
        "--num_machines", str(topology.nnodes),
        "--machine_rank", str(topology.node_rank),
        "--main_process_ip", topology.master_addr,
        "--main_process_port", str(topology.master_port),
        "--mixed_precision", device.precision(settings.mixed_precision),
        "--dynamo_backend", "no",
        "--max_restarts", "0",
        "-m", "job.worker",
        *_worker_arguments(prepared, model_path, work, checkpoints=checkpoints, resume=resume, stop=stop),
    ]  # fmt: skip
    log.info("launch.workers", processes=topology.procs_per_node, world_size=topology.world_size)
    returncode = subprocess.run(command, env=_worker_environment(settings), check=False).returncode
    if returncode != 0:
        raise _worker_failure(work.failures, returncode)
    return load_outcome(work.outcome) if topology.is_main_node else None


def _prepare_workers(topology: Topology, work: Workspace, inputs: dict[str, Any] | None) -> None:
    work.inputs.parent.mkdir(parents=True, exist_ok=True)
    work.inputs.write_text(json.dumps(inputs))
    clear_failures(work.failures, range(topology.first_rank, topology.first_rank + topology.procs_per_node))
    if topology.is_main_node:
        shutil.rmtree(work.outcome, ignore_errors=True)


def _worker_arguments(
    prepared: PreparedData,
    model_path: Path,
    work: Workspace,
    *,
    checkpoints: Path,
    resume: Path | None,
    stop: StopRequest,
) -> list[str]:
    return [
        "--prepared", str(prepared.path),
        "--model", str(model_path),
        "--work", str(work.root),
        "--checkpoints", str(checkpoints),
        "--stop-file", str(stop.stop_file),
        *(["--resume", str(resume)] if resume else []),
    ]  # fmt: skip


def _train_as_rank(
    settings: Settings,
    prepared: PreparedData,
    model_path: Path,
    topology: Topology,
    work: Workspace,
    *,
    checkpoints: Path,
    resume: Path | None,
    stop: StopRequest,
    inputs: dict[str, Any] | None,
) -> TrainOutcome | None:
    """Local rank 0 of a torchrun launch: the task to the node's other ranks, then its own share."""
    _prepare_workers(topology, work, inputs)
    arguments = _worker_arguments(prepared, model_path, work, checkpoints=checkpoints, resume=resume, stop=stop)
    handed = {k: v for k, v in _worker_environment(settings).items() if k.startswith(ENV_PREFIX) or k in _OFFLINE}
    handoff.post(topology, {"train": True, "environment": handed, "arguments": arguments})
    log.info("launch.handed_off", ranks=topology.procs_per_node - 1, world_size=topology.world_size)
    outcome = train_and_evaluate(
        settings,
        prepared,
        model_path,
        staging=work.staging,
        checkpoints=checkpoints,
        resume=resume,
        stop=stop,
        inputs=inputs,
    )
    worker.leave_process_group()  # verifying and publishing are this process's alone
    return outcome if topology.is_main_node else None


def follow(topology: Topology) -> dict[str, Any]:
    """A rank of a torchrun launch other than its node's local rank 0: wait for that rank's task
    and train as this rank. Raises JobError as a command does; its exit code is this process's."""
    assert topology.outer is not None
    rank = topology.outer.rank
    log.info("launch.waiting", rank=rank, effect="local rank 0 prepares the run")
    task = handoff.wait(topology)
    if not task["train"]:
        log.info("launch.released", rank=rank, effect="nothing to train")
        return {"status": "released", "rank": rank}
    # The launcher's effective settings (its run id among them) replace this process's own.
    for name in [k for k in os.environ if k.startswith(ENV_PREFIX) or k in _WITHHELD]:
        del os.environ[name]
    os.environ.update(task["environment"])
    settings = bootstrap.start(rank=rank, warn_unknown=False)
    worker.train_rank(worker.parse(task["arguments"]), settings, rank)
    log.info("rank.finished", rank=rank)
    return {"status": "rank_finished", "rank": rank}


_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _worker_environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _WITHHELD and not k.startswith(ENV_PREFIX)}
    # The launcher's effective settings (generated run id included), whatever they came from.
    env.update(as_environment(settings))
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    # A NCCL error aborts the process (and so the run) instead of leaving peers hanging.
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    # Where the scheduler signals every process (Slurm), torchrun's agent passes SIGTERM on
    # to the workers and kills them after this many seconds: leave them time to checkpoint.
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "300")
    return env


def _worker_failure(failures: Path, returncode: int) -> Exception:
    reports = reported_failures(failures)
    if not reports:
        return TrainingError(
            f"a training worker failed without reporting why (accelerate launch exited with {returncode}): "
            "killed by a signal or out of host memory; see the worker logs above"
        )
    first = reports[0]
    others = f" ({len(reports) - 1} more rank(s) failed too)" if len(reports) > 1 else ""
    return error_for_code(int(first["exit_code"]), f"rank {first['rank']}: {first['error']}{others}")

"""One training process of a distributed run, started by the launcher (job.launch):

    accelerate launch ... -m job.worker --prepared DIR --model DIR --work DIR --checkpoints DIR --stop-file FILE

(Under torchrun the ranks other than each node's local rank 0 run `train_rank` with these
arguments, handed over by job.handoff, instead of a process of their own.)

Settings come from FT_* variables the launcher sets to its own effective settings; the data is the
launcher's prepared folder and the model a local folder, so workers never reach
remote storage. Rank 0 hands the predictions back through files in the work folder; a
failing rank writes its exit code and message there for the launcher to report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from job import bootstrap
from job.errors import ExitCode, JobError
from job.logs import get_logger
from job.results import report_failure
from job.settings import Settings
from job.workspace import Workspace


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="job.worker")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--resume", type=Path)
    return parser.parse_args(argv)


def train_rank(args: argparse.Namespace, settings: Settings, rank: int) -> None:
    """This rank's share of the training; rank 0 leaves the outcome in the work folder.
    Raises JobError (and whatever training raises) for the caller to report."""
    from job.preemption import StopRequest
    from job.prepare import load_prepared
    from job.results import save_outcome
    from job.training import train_and_evaluate

    work = Workspace(args.work)
    stop = StopRequest(args.stop_file)  # the launcher's file, or SIGTERM from Slurm
    stop.install()
    outcome = train_and_evaluate(
        settings,
        load_prepared(args.prepared),
        args.model,
        staging=work.staging,
        checkpoints=args.checkpoints,
        resume=args.resume,
        stop=stop,
        inputs=json.loads(work.inputs.read_text()),
    )
    if rank == 0:
        save_outcome(outcome, work.outcome)
    leave_process_group()


def run(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rank = int(os.environ.get("RANK", "0"))
    work = Workspace(args.work)
    log = get_logger("job.worker")
    settings = None
    try:
        settings = bootstrap.start(rank=rank, warn_unknown=False)  # the launcher warned already
        bootstrap.route_libraries(settings)
        train_rank(args, settings, rank)
        return 0
    except JobError as exc:
        log.error(exc.event, error=exc.message, exit_code=int(exc.exit_code))
        report_failure(work.failures, rank=rank, code=int(exc.exit_code), event=exc.event, message=exc.message)
        return int(exc.exit_code)
    except Exception as exc:
        from job import faults

        known = faults.explain(exc, settings) if settings is not None else None  # a fault of the disk, not a bug
        if known is not None:
            log.error(known.event, error=known.message, exit_code=int(known.exit_code))
            report_failure(
                work.failures, rank=rank, code=int(known.exit_code), event=known.event, message=known.message
            )
            return int(known.exit_code)
        log.exception("worker.crashed", exit_code=int(ExitCode.INTERNAL))
        message = f"{type(exc).__name__}: {exc}"
        report_failure(work.failures, rank=rank, code=int(ExitCode.INTERNAL), event="worker.crashed", message=message)
        return int(ExitCode.INTERNAL)


def leave_process_group() -> None:
    # Left to interpreter exit, Gloo's worker threads are destroyed still joinable and the
    # process aborts (SIGABRT, "terminate called without an active exception"): about one
    # run in six on 2 CPU ranks, failing a run whose model is already saved. Only on success:
    # after a failure another rank may be stuck in a collective, and the launcher stops it.
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(run())

"""One training process of a distributed run, started by the launcher (job.launch):

    accelerate launch ... -m job.worker --prepared DIR --model DIR --work DIR

Settings come from FT_* variables the launcher sets to its own effective settings; the data is the
launcher's prepared folder and the model a local folder, so workers never reach
remote storage. Rank 0 hands the predictions back through files in --work; a
failing rank writes its exit code and message there for the launcher to report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from job.config import load_settings, secret_values
from job.errors import ExitCode, JobError
from job.logs import configure_logging, get_logger, route_library_logs

FAILURES = "failures"


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="job.worker")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--resume", type=Path)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    log = get_logger("job.worker")
    try:
        settings, _ = load_settings()
        configure_logging(
            log_format=settings.log_format,
            level=settings.log_level,
            run_id=settings.run_id,
            rank=rank,
            secrets=secret_values(settings),
        )
        route_library_logs(settings.log_format)

        from job.preemption import StopRequest
        from job.prepare import load_prepared
        from job.training import save_outcome, train_and_evaluate

        stop = StopRequest(args.stop_file)  # the launcher's file, or SIGTERM from Slurm
        stop.install()
        outcome = train_and_evaluate(
            settings,
            load_prepared(args.prepared),
            args.model,
            staging=args.work / "model",
            checkpoints=args.checkpoints,
            resume=args.resume,
            stop=stop,
        )
        if rank == 0:
            save_outcome(outcome, args.work / "outcome")
        _leave_process_group()
        return 0
    except JobError as exc:
        log.error(exc.event, error=exc.message, exit_code=int(exc.exit_code))
        return _report(args.work, rank, int(exc.exit_code), exc.event, exc.message)
    except Exception as exc:
        log.exception("worker.crashed", exit_code=int(ExitCode.INTERNAL))
        return _report(args.work, rank, int(ExitCode.INTERNAL), "worker.crashed", f"{type(exc).__name__}: {exc}")


def _leave_process_group() -> None:
    # Left to interpreter exit, Gloo's worker threads are destroyed still joinable and the
    # process aborts (SIGABRT, "terminate called without an active exception"): about one
    # run in six on 2 CPU ranks, failing a run whose model is already saved. Only on success:
    # after a failure another rank may be stuck in a collective, and the launcher stops it.
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _report(work: Path, rank: int, code: int, event: str, message: str) -> int:
    folder = work / FAILURES
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{rank}.json").write_text(
        json.dumps({"rank": rank, "exit_code": code, "event": event, "error": message})
    )
    return code


if __name__ == "__main__":
    sys.exit(run())

"""Command line: `python -m job` (or `ftjob`). Configuration comes from FT_* variables.

python -m job                   # train, evaluate, verify, publish
python -m job check             # dry run: settings, access, data report, duration estimate
python -m job predict           # score FT_DATASET with the saved model FT_MODEL, publish the predictions
python -m job --print-config    # the effective settings, secrets redacted
python -m job --env-file demo.env
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from pathlib import Path

from job import bootstrap
from job.errors import ConfigError, ExitCode, JobError
from job.logs import get_logger
from job.settings import redacted

# Each command is `function(settings) -> summary`, raising JobError on failure; imported
# only when chosen, because torch and transformers take seconds to import.
COMMANDS = {
    "train": ("job.main", "main"),
    "check": ("job.check", "check"),
    "predict": ("job.predict", "predict"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ftjob",
        description="Fine-tune a BERT-family text classifier, or score a dataset with one (predict). "
        "Configure it with FT_* environment variables (see the README's settings table).",
    )
    p.add_argument(
        "command",
        nargs="?",
        choices=tuple(COMMANDS),
        default="train",
        help="train (default): the whole job; check: a dry run that fails where the run would, reports the "
        "data, labels, token lengths and planned steps, and estimates the run's duration, writing nothing to "
        "FT_OUTPUT; predict: score FT_DATASET with the saved classifier FT_MODEL and publish predictions.jsonl "
        "to FT_OUTPUT",
    )
    p.add_argument("--env-file", type=Path, help="read settings from this file instead of ./.env")
    p.add_argument("--print-config", action="store_true", help="print the effective settings and exit")
    return p


def run(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = get_logger("job")
    try:
        settings = bootstrap.start(args.env_file)
    except ConfigError as exc:
        log.error(exc.event, error=exc.message, exit_code=int(exc.exit_code))
        return int(exc.exit_code)
    if args.print_config:
        print(json.dumps(redacted(settings), indent=2))
        return int(ExitCode.OK)

    # From here on a SIGTERM never ends the process with 143: the command's own handler takes
    # it while the command runs, and this one, which only notes it, before and after.
    bootstrap.hold_sigterm()
    module, name = COMMANDS[args.command]
    command = getattr(importlib.import_module(module), name)
    bootstrap.route_libraries(settings)
    try:
        command(settings)
    except JobError as exc:
        log.error(exc.event, error=exc.message, exit_code=int(exc.exit_code))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        log.error(
            "run.interrupted",
            error="interrupted (SIGINT); nothing new was published — run again with the same FT_RUN_ID to resume "
            "from its last checkpoint",
            exit_code=int(ExitCode.INTERRUPTED),
        )
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:
        from job import faults

        known = faults.explain(exc, settings)  # a fault of the disk or the input, not a bug
        if known is None:
            log.exception("run.crashed", exit_code=int(ExitCode.INTERNAL))
            return int(ExitCode.INTERNAL)
        log.error(known.event, error=known.message, exit_code=int(known.exit_code))
        return int(known.exit_code)
    return int(ExitCode.OK)

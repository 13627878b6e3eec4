"""Process start-up shared by the command line and the training workers: the settings from
the environment, and logging configured by them (secrets masked from the first line on)."""

from __future__ import annotations

import signal
from pathlib import Path

from job.config import load_settings, secret_values
from job.logs import configure_logging, get_logger, route_library_logs
from job.settings import Settings

log = get_logger("job")


def start(env_file: Path | None = None, *, rank: int | None = None, warn_unknown: bool = True) -> Settings:
    """Validated settings, with logging set up for them; raises ConfigError (already
    logged nowhere: the caller reports it) when they are invalid."""
    configure_logging(secrets=secret_values(None), rank=rank)  # until the settings say otherwise
    settings, warnings = load_settings(env_file)
    configure_logging(
        log_format=settings.log_format,
        level=settings.log_level,
        run_id=settings.run_id,
        rank=rank,
        secrets=secret_values(settings),
    )
    if warn_unknown:
        for warning in warnings:
            log.warning("config.unknown_variable", detail=warning)
    return settings


def hold_sigterm() -> None:
    """A SIGTERM outside a command's own handling (before its handler is set, after it is
    restored, while the process exits) is noted and changes nothing: the exit code stays
    the command's (75 once a checkpoint is saved), not the default action's 143."""

    seen = []

    def noted(signum: int, frame: object) -> None:
        if not seen:
            seen.append(signum)
            log.warning("run.stop_requested", signal="SIGTERM", effect="noted; the command is finishing")

    signal.signal(signal.SIGTERM, noted)


def route_libraries(settings: Settings) -> None:
    """transformers, datasets and warnings through the job's renderer; separate from `start`
    because importing those libraries takes seconds that a config error should not wait for."""
    route_library_logs(settings.log_format)

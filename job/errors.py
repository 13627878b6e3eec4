"""Failure categories and the process exit codes they map to.

Each code is documented in the README; schedulers key off them (a Kubernetes
podFailurePolicy fails fast on configuration and data errors, retries on others).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    CONFIG = 2
    DATA = 3
    TRAINING = 4
    VERIFICATION = 5
    STORAGE = 6
    NOT_PROMOTED = 7
    RUN_IN_USE = 8  # another live process owns this run id: retry later, or use a new run id
    PREEMPTED = 75  # EX_TEMPFAIL: stopped on request with a checkpoint saved; run it again
    INTERRUPTED = 130


class JobError(Exception):
    """An expected failure: one line for the operator, and an exit code.

    The message names what is wrong (variable, file, location) and how to fix it.
    """

    exit_code: ExitCode = ExitCode.INTERNAL
    event: str = "job.failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(JobError):
    exit_code = ExitCode.CONFIG
    event = "config.invalid"


class DataError(JobError):
    exit_code = ExitCode.DATA
    event = "data.invalid"


class TrainingError(JobError):
    exit_code = ExitCode.TRAINING
    event = "training.failed"


class VerificationError(JobError):
    exit_code = ExitCode.VERIFICATION
    event = "verification.failed"


class StorageError(JobError):
    exit_code = ExitCode.STORAGE
    event = "storage.failed"


class RunInUse(JobError):
    """Another live process holds this run id's lease (or its lock on this machine)."""

    exit_code = ExitCode.RUN_IN_USE
    event = "run.in_use"


class Preempted(JobError):
    """SIGTERM (eviction, preemption, spot reclaim): progress is checkpointed, retry the run."""

    exit_code = ExitCode.PREEMPTED
    event = "run.preempted"


class NotPromoted(JobError):
    """The promotion gate kept the new model as a candidate: a result, not a failure."""

    exit_code = ExitCode.NOT_PROMOTED
    event = "run.not_promoted"


def error_for_code(code: int, message: str) -> JobError:
    """Rebuild the error a training worker reported, so the launcher exits with its code."""
    for cls in (ConfigError, DataError, TrainingError, VerificationError, StorageError, RunInUse, Preempted):
        if cls.exit_code == code:
            return cls(message)
    error = JobError(message)
    error.exit_code = ExitCode.INTERNAL
    return error

"""Failure categories and the process exit codes they map to.

Each code is documented in the README; schedulers key off them (a Kubernetes
podFailurePolicy fails fast on configuration and data errors, retries on others).
"""

from __future__ import annotations

import errno
import os
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


# A filesystem fault's errno -> what happened, and the fix ({variable}: the setting to change).
_FILESYSTEM = {
    errno.ENOSPC: ("no space left on the device", "free space there or point {variable} at a larger disk"),
    errno.EDQUOT: ("the disk quota is used up", "free space there or point {variable} at a folder with quota left"),
    errno.EACCES: ("permission denied", "let this user (uid {uid}) write there or point {variable} elsewhere"),
    errno.EPERM: ("operation not permitted (an immutable or protected folder?)", "point {variable} elsewhere"),
    errno.EROFS: ("the filesystem is read-only", "mount it writable or point {variable} at a writable folder"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "remove that file or point {variable} elsewhere"),
    errno.EEXIST: ("a file is where a folder should be", "remove that file or point {variable} elsewhere"),
    errno.EISDIR: ("a folder is where a file should be", "remove that folder or point {variable} elsewhere"),
    errno.ENOENT: ("a folder on the path does not exist (removed while the job ran?)", "check {variable}"),
    errno.EIO: ("the device reported an input/output error", "check the disk behind {variable}"),
    errno.ENAMETOOLONG: ("the path is too long", "point {variable} at a shorter path"),
    errno.EMFILE: ("too many open files", "raise the open-files limit (ulimit -n)"),
}
FILESYSTEM_FAULTS = frozenset(_FILESYSTEM)


def filesystem_error(variable: str, location: str, code: int, *, path: str | None = None) -> StorageError:
    """One line for a filesystem fault at a setting's location: the setting, the location
    as the user wrote it, the file it happened to (when that says more), what and the fix."""
    what, fix = _FILESYSTEM.get(code, (os.strerror(code).lower(), "check {variable}"))
    at = f" ({path})" if path and path.rstrip("/") != location.rstrip("/") else ""
    return StorageError(f"{variable}={location}: {what}{at}; {fix.format(variable=variable, uid=os.getuid())}")


def error_for_code(code: int, message: str) -> JobError:
    """Rebuild the error a training worker reported, so the launcher exits with its code."""
    for cls in (ConfigError, DataError, TrainingError, VerificationError, StorageError, RunInUse, Preempted):
        if cls.exit_code == code:
            return cls(message)
    error = JobError(message)
    error.exit_code = ExitCode.INTERNAL
    return error

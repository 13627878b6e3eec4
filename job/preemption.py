"""Stop requests: SIGTERM from Kubernetes eviction, Slurm preemption or a spot reclaim.

The handler only records the request; training notices it at the next step end,
saves a checkpoint and exits with code 75 ("run me again"). In a distributed run
the launcher (the container's PID 1 on Kubernetes, the only process that gets the
signal there) also creates a stop file that its workers watch, and the ranks agree
on the step to stop at (see checkpoints.CheckpointCallback).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from job.logs import get_logger

log = get_logger("job.preemption")


class StopRequest:
    """Set by SIGTERM in this process, or by the stop file another process created."""

    def __init__(self, stop_file: Path) -> None:
        self.stop_file = stop_file
        # A plain flag, not a threading.Event: a second signal that lands while the handler
        # holds the Event's lock would deadlock the process (handlers run in the main thread).
        self._signalled = False

    def install(self) -> None:
        """Take over SIGTERM (main thread only); the default action would kill the run unsaved."""
        signal.signal(signal.SIGTERM, self._on_signal)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """SIGTERM handled for the duration, the previous handler restored after."""
        previous = signal.getsignal(signal.SIGTERM)
        self.install()
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def clear(self) -> None:
        """Forget a previous attempt's request (its stop file); a signal this process got stands."""
        self.stop_file.unlink(missing_ok=True)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signalled:
            return  # the first one is being acted on; more change nothing
        self._signalled = True
        log.warning("run.stop_requested", signal=signal.Signals(signum).name, effect="checkpoint, then exit 75")
        try:
            self.stop_file.parent.mkdir(parents=True, exist_ok=True)
            self.stop_file.touch()
        except OSError:
            pass  # the workers then stop on their own signal, or are stopped by their launcher

    @property
    def requested(self) -> bool:
        return self._signalled or self.stop_file.exists()

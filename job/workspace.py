"""The run's scratch folder, `<FT_CACHE_DIR>/runs/<run id>/`, and the name of everything in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from job.settings import Settings


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def of(cls, settings: Settings) -> Workspace:
        return cls(settings.run_work_dir())

    @property
    def staging(self) -> Path:
        """The run's files before they are verified and published."""
        return self.root / "model"

    @property
    def predictions(self) -> Path:
        """`predict`'s files before they are published."""
        return self.root / "predictions"

    @property
    def checkpoint_mirror(self) -> Path:
        """Where the Trainer writes checkpoints whose durable home is in S3."""
        return self.root / "checkpoints"

    @property
    def outcome(self) -> Path:
        """Rank 0's results, handed to the launcher."""
        return self.root / "outcome"

    @property
    def failures(self) -> Path:
        """A failing worker's exit code and error line, for the launcher to report."""
        return self.root / "failures"

    @property
    def inputs(self) -> Path:
        """The run's input fingerprint, which the workers record in every checkpoint."""
        return self.root / "inputs.json"

    @property
    def stop_file(self) -> Path:
        """Created on SIGTERM: workers that did not get the signal stop too."""
        return self.root / "STOP"

    def trial(self, number: int) -> Workspace:
        """A hyperparameter-search trial's own scratch folder."""
        return Workspace(self.root / "search" / f"trial-{number}")

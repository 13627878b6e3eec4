"""What training returns (validation and test predictions, the best metric, throughput)
and how a training worker hands it to its launcher: through files in the run's work folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from job.files import write_json


@dataclass
class Prediction:
    logits: np.ndarray
    labels: np.ndarray | None  # None for an unlabelled split
    index: list[int]  # source row of each prediction
    loss: float | None = None


@dataclass
class TrainOutcome:
    validation: Prediction
    test: Prediction | None
    best_metric: str
    best_value: float | None
    stats: dict[str, Any] = field(default_factory=dict)


_OUTCOME, _ARRAYS = "outcome.json", "predictions.npz"


def save_outcome(outcome: TrainOutcome, folder: Path) -> None:
    """Rank 0 hands its results to the launcher through files."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for split, prediction in (("validation", outcome.validation), ("test", outcome.test)):
        if prediction is None:
            continue
        arrays[f"{split}_logits"] = prediction.logits
        arrays[f"{split}_index"] = np.asarray(prediction.index)
        if prediction.labels is not None:
            arrays[f"{split}_labels"] = prediction.labels
    np.savez(folder / _ARRAYS, **arrays)
    losses = {"validation": outcome.validation.loss, "test": outcome.test.loss if outcome.test else None}
    write_json(
        folder / _OUTCOME,
        {
            "best_metric": outcome.best_metric,
            "best_value": outcome.best_value,
            "stats": outcome.stats,
            "losses": losses,
        },
    )


def load_outcome(folder: Path) -> TrainOutcome:
    meta = json.loads((folder / _OUTCOME).read_text())
    with np.load(folder / _ARRAYS) as arrays:
        found = dict(arrays)

    def prediction(split: str) -> Prediction | None:
        if f"{split}_logits" not in found:
            return None
        return Prediction(
            logits=found[f"{split}_logits"],
            labels=found.get(f"{split}_labels"),
            index=[int(i) for i in found[f"{split}_index"]],
            loss=meta["losses"][split],
        )

    validation = prediction("validation")
    assert validation is not None
    return TrainOutcome(
        validation=validation,
        test=prediction("test"),
        best_metric=meta["best_metric"],
        best_value=meta["best_value"],
        stats=meta["stats"],
    )


def report_failure(folder: Path, *, rank: int, code: int, event: str, message: str) -> None:
    """A failing worker leaves its exit code and error line for the launcher."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{rank}.json").write_text(
        json.dumps({"rank": rank, "exit_code": code, "event": event, "error": message})
    )


def clear_failures(folder: Path, ranks: range) -> None:
    for rank in ranks:
        (folder / f"rank-{rank}.json").unlink(missing_ok=True)


def reported_failures(folder: Path) -> list[dict[str, Any]]:
    """What failed workers reported, lowest rank first."""
    reports = (json.loads(p.read_text()) for p in folder.glob("rank-*.json"))
    return sorted(reports, key=lambda r: int(r["rank"]))

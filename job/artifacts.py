"""The files a run leaves beside the model: metrics, predictions, run manifest."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from job import metrics, thresholds
from job.labels import MULTI, REGRESSION, LabelSpec
from job.prepare import PreparedData
from job.redaction import redact_document
from job.results import Prediction, TrainOutcome
from job.settings import Settings, redacted
from job.tokenization import texts_of

METRICS = "metrics.json"
CONFUSION = "confusion_matrix.json"  # beside metrics.json when the labels are too many to show it inline
RUN_MANIFEST = "run_manifest.json"
TEST_PREDICTIONS = "test_predictions.jsonl"
TRAIN_LOG = "train_log.jsonl"  # one line per logging step and per evaluation
_LIBRARIES = ("torch", "transformers", "datasets", "accelerate", "tokenizers", "safetensors", "numpy")


def prediction_rows(prediction: Prediction, spec: LabelSpec, *, all_scores: bool = False) -> Iterator[dict[str, Any]]:
    """One dict per row, in source-row order: index, predicted label(s), score(s);
    `all_scores` adds every label's probability to single-label rows."""
    probs = metrics.probabilities(prediction.logits, spec)
    decided = thresholds.decide(probs, spec) if spec.problem_type != REGRESSION else probs
    for position in np.argsort(prediction.index, kind="stable"):
        row: dict[str, Any] = {"index": int(prediction.index[position])}
        p = probs[position]
        if spec.problem_type == REGRESSION:
            row["score"] = float(p)
        elif spec.problem_type == MULTI:
            row["labels"] = [name for name, on in zip(spec.names, decided[position], strict=True) if on]
            row["scores"] = {name: round(float(v), 6) for name, v in zip(spec.names, p, strict=True)}
        else:
            best = int(decided[position])
            row.update(label=spec.names[best], label_id=best, score=round(float(p[best]), 6))
            if all_scores:
                row["scores"] = {name: round(float(v), 6) for name, v in zip(spec.names, p, strict=True)}
        yield row


def unpredicted_row(index: int, spec: LabelSpec, *, reason: str, all_scores: bool = False) -> dict[str, Any]:
    """The line for a row that got no prediction: the keys of a predicted one, all null."""
    if spec.problem_type == REGRESSION:
        keys: tuple[str, ...] = ("score",)
    elif spec.problem_type == MULTI:
        keys = ("labels", "scores")
    else:
        keys = ("label", "label_id", "score", "scores") if all_scores else ("label", "label_id", "score")
    return {"index": index, **dict.fromkeys(keys), "skipped": reason}


def write_predictions(path: Path, prediction: Prediction, spec: LabelSpec) -> int:
    rows = 0
    with path.open("w") as handle:
        for row in prediction_rows(prediction, spec):
            handle.write(json.dumps(row) + "\n")
            rows += 1
    return rows


def metrics_document(outcome: TrainOutcome, spec: LabelSpec) -> dict[str, Any]:
    """metrics.json: every split's metrics, decided as `spec` says (its tuned thresholds)."""
    assert outcome.validation.labels is not None
    validation = metrics.report(outcome.validation.logits, outcome.validation.labels, spec)
    validation["loss"] = outcome.validation.loss
    document: dict[str, Any] = {
        "problem_type": spec.problem_type,
        "labels": list(spec.names),
        "headline": {"metric": outcome.best_metric, "split": "validation", "value": _headline(validation, outcome)},
        "validation": validation,
    }
    if spec.thresholds is not None:
        document["decision_thresholds"] = thresholds.by_label(spec)
    if outcome.test is not None and outcome.test.labels is not None:
        document["test"] = metrics.report(outcome.test.logits, outcome.test.labels, spec)
        document["test"]["loss"] = outcome.test.loss
    document["train"] = {
        k: outcome.stats.get(k)
        for k in ("train_loss", "steps", "epochs", "train_runtime_s", "train_samples_per_second")
    }
    return document


def move_out_large_matrices(document: dict[str, Any], folder: Path) -> None:
    """A sparse confusion matrix (many labels) goes to its own compact file, one per split;
    metrics.json keeps where it is, so it stays small and readable."""
    for split in ("validation", "test"):
        matrix = document.get(split, {}).get("confusion_matrix")
        if not matrix or "cells" not in matrix:
            continue
        name = CONFUSION if split == "validation" else f"{split}_{CONFUSION}"
        (folder / name).write_text(json.dumps(matrix, separators=(",", ":")) + "\n")
        document[split]["confusion_matrix"] = {"file": name, "labels": len(matrix["labels"]), "format": "sparse"}


def _headline(validation: dict[str, Any], outcome: TrainOutcome) -> float | None:
    value = validation.get(outcome.best_metric)
    return float(value) if isinstance(value, (int, float)) else None


def run_manifest(
    settings: Settings,
    prepared: PreparedData,
    outcome: TrainOutcome,
    *,
    timings: dict[str, float],
    verification: dict[str, Any],
    promotion: dict[str, Any],
    files: list[str],
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What ran, on what, with which data and code, how fast: enough to reproduce it."""
    manifest = {
        "run_id": settings.run_id,
        "settings": redacted(settings),
        "data": {
            "fingerprint": prepared.fingerprint,
            "source": prepared.meta.get("source"),
            "splits": prepared.meta.get("source_splits"),
            "files": prepared.meta.get("source_files"),
            "rows": {name: len(texts_of(split)) for name, split in prepared.splits.items()},  # the data's rows
            "windows": {name: len(split) for name, split in prepared.splits.items()},  # what was trained on and scored
            "labels": prepared.labels.to_json(),
            "class_counts": prepared.meta.get("class_counts"),
            "token_lengths": prepared.meta.get("lengths"),
            "dropped_empty_text": prepared.meta.get("dropped_empty_text"),
            "max_length": prepared.max_length,
            "long_texts": prepared.meta.get("long_texts"),
        },
        "training": {k: v for k, v in outcome.stats.items() if k != "first_step_unix"},
        "best_model": {"metric": outcome.best_metric, "value": outcome.best_value},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "verification": verification,
        "promotion": promotion,
        "environment": environment(),
        "files": files,
    }
    if search is not None:  # the trials that chose this run's hyperparameters
        manifest["search"] = search
    return redact_document(manifest)


def environment() -> dict[str, Any]:
    versions = {}
    for name in ("ftjob", *_LIBRARIES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }

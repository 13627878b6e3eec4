"""The metric catalogue (which metrics each problem type has, which are better lower,
the default best-model metric) and the metrics themselves, computed locally with numpy.

`evaluate.load(...)` fetches metric scripts from the Hub and fails offline, so the
job computes everything from the confusion matrix (classification), per-label
counts (multi-label) or residuals (regression).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from job.errors import ConfigError
from job.settings import MULTI, REGRESSION, SINGLE

if TYPE_CHECKING:
    from job.labels import LabelSpec

THRESHOLD = 0.5  # multi-label: a label is predicted when its probability exceeds this
INLINE_CONFUSION_LABELS = 50  # a dense matrix of up to 2,500 cells stays readable inside metrics.json

CATALOGUE: dict[str, tuple[str, ...]] = {
    SINGLE: (
        "loss", "accuracy", "f1", "f1_macro", "f1_weighted", "precision", "precision_macro",
        "precision_weighted", "recall", "recall_macro", "recall_weighted", "mcc",
    ),
    MULTI: (
        "loss", "subset_accuracy", "hamming_accuracy", "f1_micro", "f1_macro", "f1_weighted",
        "precision_micro", "recall_micro",
    ),
    REGRESSION: ("loss", "mse", "rmse", "mae", "r2", "pearson", "spearman"),
}  # fmt: skip
EVERY_METRIC = tuple(dict.fromkeys(name for names in CATALOGUE.values() for name in names))
LOWER_IS_BETTER = frozenset({"loss", "mse", "rmse", "mae"})


def default_metric(problem_type: str) -> str:
    return "rmse" if problem_type == REGRESSION else "f1_macro"


def best_model_metric(setting: str | None, problem_type: str) -> str | None:
    """The metric that picks the best checkpoint: FT_METRIC_FOR_BEST_MODEL checked against the
    metrics of `problem_type` (while that is still `auto`, against every metric), else the default."""
    if problem_type not in CATALOGUE:
        if setting is not None and setting not in EVERY_METRIC:
            raise ConfigError(
                f"FT_METRIC_FOR_BEST_MODEL='{setting}' is not a metric the job computes; "
                f"use one of {', '.join(EVERY_METRIC)}"
            )
        return setting
    metric = setting or default_metric(problem_type)
    if metric not in CATALOGUE[problem_type]:
        raise ConfigError(
            f"FT_METRIC_FOR_BEST_MODEL={metric} does not apply to {problem_type}; "
            f"use one of {', '.join(CATALOGUE[problem_type])}"
        )
    return metric


def greater_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def probabilities(logits: np.ndarray, spec: LabelSpec) -> np.ndarray:
    """Softmax for single-label, sigmoid per label for multi-label, raw for regression."""
    logits = np.asarray(logits, dtype=np.float64)
    if spec.problem_type == REGRESSION:
        return logits.reshape(-1)
    if spec.problem_type == MULTI:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def report(logits: np.ndarray, labels: np.ndarray, spec: LabelSpec) -> dict[str, Any]:
    """Every metric for one split: scalars, plus per-class detail and confusion matrix."""
    probs = probabilities(logits, spec)
    if spec.problem_type == REGRESSION:
        return regression_metrics(probs, np.asarray(labels, dtype=np.float64).reshape(-1))
    if spec.problem_type == MULTI:
        return multi_label_metrics(probs > THRESHOLD, np.asarray(labels) > THRESHOLD, spec.names)
    return classification_metrics(probs.argmax(axis=-1), np.asarray(labels), spec.names)


def scalars(logits: np.ndarray, labels: np.ndarray, spec: LabelSpec) -> dict[str, float]:
    """The numeric subset of `report`, for the Trainer's per-evaluation logs."""
    return {k: v for k, v in report(logits, labels, spec).items() if isinstance(v, float)}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    matrix = confusion_matrix(labels, predictions, len(names))
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    total = support.sum()
    weights = support / total if total else support

    out: dict[str, Any] = {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "f1_macro": float(f1.mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_weighted": float((f1 * weights).sum()),
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "mcc": _mcc(matrix),
    }
    if len(names) == 2:
        # Binary: the second label (id 1) is the positive class.
        out.update(f1=float(f1[1]), precision=float(precision[1]), recall=float(recall[1]))
    else:
        out.update(f1=out["f1_macro"], precision=out["precision_macro"], recall=out["recall_macro"])
    out["per_class"] = _per_class(names, precision, recall, f1, support)
    out["confusion_matrix"] = confusion_record(matrix, names)
    out["rows"] = int(total)
    return out


def confusion_record(matrix: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """The confusion matrix as a document: dense up to INLINE_CONFUSION_LABELS labels; beyond,
    only its non-zero cells, `[true id, predicted id, rows]`, at most one per scored row, so
    its size grows with the rows, not with the square of the labels."""
    if len(names) <= INLINE_CONFUSION_LABELS:
        return {"labels": list(names), "matrix": matrix.tolist()}
    true, predicted = np.nonzero(matrix)
    cells = [[int(t), int(p), int(matrix[t, p])] for t, p in zip(true, predicted, strict=True)]
    return {"labels": list(names), "cells": cells}


def multi_label_metrics(predicted: np.ndarray, actual: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    predicted, actual = predicted.astype(bool), actual.astype(bool)
    tp = (predicted & actual).sum(axis=0).astype(np.float64)
    fp = (predicted & ~actual).sum(axis=0).astype(np.float64)
    fn = (~predicted & actual).sum(axis=0).astype(np.float64)
    precision = _divide(tp, tp + fp)
    recall = _divide(tp, tp + fn)
    f1 = _divide(2 * tp, 2 * tp + fp + fn)
    support = tp + fn
    weights = support / support.sum() if support.sum() else support
    micro_p = _divide(tp.sum(), tp.sum() + fp.sum())
    micro_r = _divide(tp.sum(), tp.sum() + fn.sum())
    return {
        "subset_accuracy": float((predicted == actual).all(axis=1).mean()),
        "hamming_accuracy": float((predicted == actual).mean()),
        "f1_micro": float(_divide(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())),
        "f1_macro": float(f1.mean()),
        "f1_weighted": float((f1 * weights).sum()),
        "precision_micro": float(micro_p),
        "recall_micro": float(micro_r),
        "per_class": _per_class(names, precision, recall, f1, support),
        "rows": int(actual.shape[0]),
    }


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    residual = predictions - targets
    mse = float(np.mean(residual**2))
    variance = float(np.var(targets))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(residual))),
        "r2": 1.0 - mse / variance if variance else 0.0,
        "pearson": _correlation(predictions, targets),
        "spearman": _correlation(_ranks(predictions), _ranks(targets)),
        "rows": int(targets.size),
    }


def _per_class(
    names: tuple[str, ...], precision: np.ndarray, recall: np.ndarray, f1: np.ndarray, support: np.ndarray
) -> dict[str, dict[str, Any]]:
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for name, p, r, f, n in zip(names, precision, recall, f1, support, strict=True)
    }


def _mcc(matrix: np.ndarray) -> float:
    """Matthews correlation, multi-class form (Gorodkin 2004); 0 when undefined."""
    matrix = matrix.astype(np.float64)
    total = matrix.sum()
    correct = np.trace(matrix)
    true_per_class = matrix.sum(axis=1)
    predicted_per_class = matrix.sum(axis=0)
    numerator = correct * total - true_per_class @ predicted_per_class
    denominator = np.sqrt(
        (total**2 - predicted_per_class @ predicted_per_class) * (total**2 - true_per_class @ true_per_class)
    )
    return float(numerator / denominator) if denominator else 0.0


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their average rank, as Spearman's rho needs."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _divide(numerator: Any, denominator: Any) -> Any:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)

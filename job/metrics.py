"""The metric catalogue (which metrics each problem type has, which are better lower,
the default best-model metric) and the metrics themselves, computed with scikit-learn
(correlations with scipy).

`evaluate.load(...)` fetches metric scripts from the Hub and fails offline; scikit-learn's
are the field's reference implementations and run locally. It is imported inside the
functions that compute, because importing it takes seconds and the catalogue is needed
at once, for checking the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from job import thresholds
from job.errors import ConfigError
from job.settings import MULTI, REGRESSION, SINGLE

if TYPE_CHECKING:
    from job.labels import LabelSpec

THRESHOLD = 0.5  # multi-label: a label is predicted when its probability exceeds this
INLINE_CONFUSION_LABELS = 50  # a dense matrix of up to 2,500 cells stays readable inside metrics.json
# Each class's AUC sorts the whole split once, at every evaluation: 3,000 classes took 14 s.
# Beyond this many classes (labels) no AUC is computed.
AUC_MAX_LABELS = 100

CATALOGUE: dict[str, tuple[str, ...]] = {
    SINGLE: (
        "loss", "accuracy", "f1", "f1_macro", "f1_weighted", "precision", "precision_macro",
        "precision_weighted", "recall", "recall_macro", "recall_weighted", "mcc",
        "roc_auc", "roc_auc_macro", "pr_auc", "pr_auc_macro", "log_loss",
    ),
    MULTI: (
        "loss", "subset_accuracy", "hamming_accuracy", "f1_micro", "f1_macro", "f1_weighted",
        "precision_micro", "recall_micro", "roc_auc_macro", "pr_auc_macro", "log_loss",
    ),
    REGRESSION: ("loss", "mse", "rmse", "mae", "r2", "pearson", "spearman"),
}  # fmt: skip
EVERY_METRIC = tuple(dict.fromkeys(name for names in CATALOGUE.values() for name in names))
LOWER_IS_BETTER = frozenset({"loss", "log_loss", "mse", "rmse", "mae"})
RANKING = ("roc_auc", "pr_auc")  # prefixes of the metrics a split may lack (see _ranking)
# The range of the metrics that have one, for the charts' axes. Listed by name: a metric
# added to the catalogue has no range until someone says which.
_SCORES = (
    "accuracy", "f1", "f1_macro", "f1_weighted", "f1_micro", "precision", "precision_macro",
    "precision_weighted", "precision_micro", "recall", "recall_macro", "recall_weighted", "recall_micro",
    "roc_auc", "roc_auc_macro", "pr_auc", "pr_auc_macro", "subset_accuracy", "hamming_accuracy",
)  # fmt: skip
BOUNDS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(_SCORES, (0.0, 1.0)),
    **dict.fromkeys(("mcc", "pearson", "spearman"), (-1.0, 1.0)),  # correlations
}  # fmt: skip


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


def require_defined(metric: str, labels: np.ndarray, spec: LabelSpec) -> None:
    """Refuse a best-model metric this validation split cannot have (an AUC of a class it
    lacks, or of too many classes): the Trainer would fail on it only after the first
    epoch, with a KeyError."""
    if not metric.startswith(RANKING):
        return
    uniform = np.zeros((len(labels), spec.num_labels))  # whether an AUC exists depends on the labels alone
    if metric not in scalars(uniform, labels, spec):
        raise ConfigError(
            f"FT_METRIC_FOR_BEST_MODEL={metric} is not defined on this validation split: an AUC needs "
            f"positive and negative rows of every label, and at most {AUC_MAX_LABELS} labels; "
            "choose another metric (f1_macro, log_loss) or a validation split with every label"
        )


def report(logits: np.ndarray, labels: np.ndarray, spec: LabelSpec) -> dict[str, Any]:
    """Every metric for one split: scalars, plus per-class detail and confusion matrix."""
    probs = probabilities(logits, spec)
    if spec.problem_type == REGRESSION:
        return regression_metrics(probs, np.asarray(labels, dtype=np.float64).reshape(-1))
    if spec.problem_type == MULTI:
        return multi_label_metrics(probs, np.asarray(labels) > THRESHOLD, spec)
    return classification_metrics(probs, np.asarray(labels), spec)


def scalars(logits: np.ndarray, labels: np.ndarray, spec: LabelSpec) -> dict[str, float]:
    """The numeric subset of `report`, for the Trainer's per-evaluation logs (an undefined
    AUC, None, is left out)."""
    return {k: v for k, v in report(logits, labels, spec).items() if isinstance(v, float)}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    from sklearn import metrics as sk

    return sk.confusion_matrix(labels.astype(np.int64), predictions.astype(np.int64), labels=np.arange(num_classes))


def classification_metrics(probs: np.ndarray, labels: np.ndarray, spec: LabelSpec) -> dict[str, Any]:
    """Single-label metrics from the class probabilities (rows x classes) and true class ids,
    decided as the spec says (argmax, or a binary model's tuned threshold)."""
    from sklearn import metrics as sk

    names = spec.names
    labels = labels.astype(np.int64)
    predictions = thresholds.decide(probs, spec)
    ids = np.arange(len(names))
    scores = {
        average: sk.precision_recall_fscore_support(labels, predictions, labels=ids, average=average, zero_division=0.0)
        for average in (None, "macro", "weighted")
    }
    precision, recall, f1, support = scores[None]
    actual = labels[:, None] == ids  # one-vs-rest truth, one column per class
    roc, ap = _ranking(actual, probs)

    out: dict[str, Any] = {"accuracy": float(sk.accuracy_score(labels, predictions))}
    for average in ("macro", "weighted"):
        p, r, f, _ = scores[average]
        out.update({f"f1_{average}": float(f), f"precision_{average}": float(p), f"recall_{average}": float(r)})
    out["mcc"] = float(sk.matthews_corrcoef(labels, predictions))  # 0 when undefined (a constant prediction)
    out["roc_auc_macro"], out["pr_auc_macro"] = _mean(roc), _mean(ap)
    if len(names) == 2:
        # Binary: the second label (id 1) is the positive class.
        out.update(f1=float(f1[1]), precision=float(precision[1]), recall=float(recall[1]))
        out.update(roc_auc=roc[1] if roc else None, pr_auc=ap[1] if ap else None)
    else:
        out.update(f1=out["f1_macro"], precision=out["precision_macro"], recall=out["recall_macro"])
        out.update(roc_auc=out["roc_auc_macro"], pr_auc=out["pr_auc_macro"])
    out["log_loss"] = float(sk.log_loss(labels, probs, labels=ids))
    out["per_class"] = _per_class(names, precision, recall, f1, support, roc=roc, ap=ap)
    out["confusion_matrix"] = confusion_record(confusion_matrix(labels, predictions, len(names)), names)
    out["rows"] = int(labels.size)
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


def multi_label_metrics(probs: np.ndarray, actual: np.ndarray, spec: LabelSpec) -> dict[str, Any]:
    """Multi-label metrics from per-label probabilities and the true label indicators (rows x labels)."""
    from sklearn import metrics as sk

    names = spec.names
    actual = actual.astype(bool)
    predicted = thresholds.decide(probs, spec)
    scores = {
        average: sk.precision_recall_fscore_support(actual, predicted, average=average, zero_division=0.0)
        for average in (None, "micro", "macro", "weighted")
    }
    precision, recall, f1, support = scores[None]
    roc, ap = _ranking(actual, probs)
    return {
        "subset_accuracy": float(sk.accuracy_score(actual, predicted)),  # every label of the row right
        "hamming_accuracy": float(1.0 - sk.hamming_loss(actual, predicted)),
        "f1_micro": float(scores["micro"][2]),
        "f1_macro": float(scores["macro"][2]),
        "f1_weighted": float(scores["weighted"][2]),
        "precision_micro": float(scores["micro"][0]),
        "recall_micro": float(scores["micro"][1]),
        "roc_auc_macro": _mean(roc),
        "pr_auc_macro": _mean(ap),
        # Every row has every label, so the mean over all cells is the mean of the labels' losses.
        "log_loss": float(sk.log_loss(actual.ravel().astype(np.int64), probs.ravel(), labels=[0, 1])),
        "per_class": _per_class(names, precision, recall, f1, support, roc=roc, ap=ap),
        "rows": int(actual.shape[0]),
    }


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    from scipy import stats
    from sklearn import metrics as sk

    # Fewer than two rows or a constant side: no correlation or R² exists; 0 says "no
    # signal" without the NaN (invalid JSON) and the warning the libraries give.
    varied = targets.size >= 2 and np.ptp(targets) > 0 and np.ptp(predictions) > 0
    return {
        "mse": float(sk.mean_squared_error(targets, predictions)),
        "rmse": float(sk.root_mean_squared_error(targets, predictions)),
        "mae": float(sk.mean_absolute_error(targets, predictions)),
        "r2": float(sk.r2_score(targets, predictions)) if targets.size >= 2 else 0.0,
        "pearson": float(stats.pearsonr(predictions, targets).statistic) if varied else 0.0,
        "spearman": float(stats.spearmanr(predictions, targets).statistic) if varied else 0.0,
        "rows": int(targets.size),
    }


def _ranking(actual: np.ndarray, scores: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Per class (column of `actual`, one-vs-rest): ROC-AUC and PR-AUC (average precision)
    of its scores. Empty lists beyond AUC_MAX_LABELS classes.

    The rule for a degenerate split: an AUC measures how well the scores rank a class's
    rows above the others, so a class without a positive or without a negative row in the
    split has none. Its AUCs are None (scikit-learn would warn and give NaN, which is not
    JSON, or a made-up 0), and so is any average over classes that includes it (see _mean).
    """
    from sklearn import metrics as sk

    if actual.shape[1] > AUC_MAX_LABELS:
        return [], []
    roc: list[float | None] = []
    ap: list[float | None] = []
    for column in range(actual.shape[1]):
        truth = actual[:, column]
        if truth.all() or not truth.any():
            roc.append(None)
            ap.append(None)
            continue
        roc.append(float(sk.roc_auc_score(truth, scores[:, column])))
        ap.append(float(sk.average_precision_score(truth, scores[:, column])))
    return roc, ap


def _mean(values: list[float | None]) -> float | None:
    """The macro average, only when every class has a value: averaging over the classes
    that have one would report another set of classes under the same name."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def _per_class(
    names: tuple[str, ...],
    precision: np.ndarray,
    recall: np.ndarray,
    f1: np.ndarray,
    support: np.ndarray,
    *,
    roc: list[float | None],
    ap: list[float | None],
) -> dict[str, dict[str, Any]]:
    out = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for name, p, r, f, n in zip(names, precision, recall, f1, support, strict=True)
    }
    if roc:  # not computed beyond AUC_MAX_LABELS classes
        for name, auc, average_precision in zip(names, roc, ap, strict=True):
            out[name].update(roc_auc=auc, pr_auc=average_precision)
    return out

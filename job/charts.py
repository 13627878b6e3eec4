"""PNG charts beside the metrics: the training and evaluation curves, and the
validation confusion matrix (per label for multi-label; predicted against true
values for regression).

Drawn with matplotlib's Agg renderer on Figure objects of their own (no pyplot, no
display, no global state), so they render the same offline, headless and in any
order. A chart that fails is logged and left out: pictures never fail a run.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from job import metrics, thresholds
from job.artifacts import TRAIN_LOG
from job.labels import MULTI, REGRESSION, LabelSpec
from job.logs import get_logger
from job.results import Prediction

TRAINING_CURVES = "training_curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
PREDICTION_SCATTER = "prediction_scatter.png"

_DPI = 100
_MAX_ANNOTATED_CLASSES = 30  # beyond this, counts in the cells are unreadable
_MAX_CLASSES = 100  # beyond this, one cell is a pixel: the matrix says nothing a reader can use
_MAX_LABEL_PANELS = 36  # multi-label: one small matrix per label, up to a 6 x 6 grid
_MAX_NAME = 18  # characters of a label name shown on an axis
_MIN_SPAN = 0.05  # a bounded metric's axis spans at least this much, so a change of 2e-5 looks flat

log = get_logger("job.charts")


def draw(folder: Path, validation: Prediction, spec: LabelSpec, *, metric: str) -> list[str]:
    """Write the charts into `folder` (which holds train_log.jsonl); returns the names written."""
    wanted: list[tuple[str, Any]] = [(TRAINING_CURVES, lambda: _training_curves(folder / TRAIN_LOG, metric))]
    if validation.labels is not None:
        if spec.problem_type == REGRESSION:
            wanted.append((PREDICTION_SCATTER, lambda: _prediction_scatter(validation)))
        elif spec.problem_type == MULTI:
            wanted.append((CONFUSION_MATRIX, lambda: _per_label_confusion(validation, spec)))
        else:
            wanted.append((CONFUSION_MATRIX, lambda: _confusion_matrix(validation, spec)))
    written = []
    for name, figure in wanted:
        try:
            drawn = figure()
            if drawn is None:
                continue
            (folder / name).write_bytes(_png(drawn))
        except Exception as exc:
            log.warning("charts.failed", chart=name, error=f"{type(exc).__name__}: {exc}", effect="left out")
            continue
        written.append(name)
    log.info("charts.written", files=written)
    return written


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()  # the file appears whole or not at all
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def read_train_log(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name} line {number} is not JSON ({exc.msg})") from None
    return sorted(records, key=lambda r: r.get("step", 0))


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _training_curves(path: Path, metric: str) -> Any:
    records = read_train_log(path)
    train_steps, train_loss = _series(records, "loss")
    eval_steps, eval_loss = _series(records, "eval_loss")
    if not train_steps and not eval_steps:
        raise ValueError(f"{path.name} holds no losses")
    metric_steps, metric_values = _series(records, f"eval_{metric}") if metric != "loss" else ([], [])
    lr_steps, lr_values = _series(records, "learning_rate")

    panels = 1 + bool(metric_steps) + bool(lr_steps)
    figure = _figure(4.2 * panels, 3.4)
    axes = list(np.atleast_1d(figure.subplots(1, panels)))

    loss_axis = axes.pop(0)
    if train_steps:
        loss_axis.plot(train_steps, train_loss, color="tab:blue", linewidth=1.2, label="training")
    if eval_steps:
        loss_axis.plot(eval_steps, eval_loss, color="tab:orange", marker="o", linewidth=1.2, label="validation")
    _best(loss_axis, eval_steps, eval_loss, lower_is_better=True, chosen=metric == "loss")
    loss_axis.set(title="Loss", xlabel="optimizer step", ylabel="loss")
    loss_axis.ticklabel_format(axis="y", useOffset=False)
    loss_axis.legend(loc="best", fontsize="small")

    if metric_steps:
        axis = axes.pop(0)
        axis.plot(metric_steps, metric_values, color="tab:green", marker="o", linewidth=1.2)
        _best(axis, metric_steps, metric_values, lower_is_better=not metrics.greater_is_better(metric), chosen=True)
        axis.set(title=f"Validation {metric}", xlabel="optimizer step", ylabel=metric)
        _metric_scale(axis, metric_values, metrics.BOUNDS.get(metric))
        axis.legend(loc="best", fontsize="small")
    if lr_steps:
        axis = axes.pop(0)
        axis.plot(lr_steps, lr_values, color="tab:gray", linewidth=1.2)
        axis.set(title="Learning rate", xlabel="optimizer step")
        axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for axis in figure.axes:
        axis.grid(alpha=0.3)
    return figure


def _metric_scale(axis: Any, values: list[float], bounds: tuple[float, float] | None) -> None:
    """Tick labels as plain numbers, and a bounded metric's axis at least _MIN_SPAN tall.

    Left to itself, matplotlib zooms onto the data and labels the ticks against an offset
    (`1e-5+8.009e-1`): a change in the fifth decimal fills the panel as a steep climb."""
    axis.ticklabel_format(axis="y", style="plain", useOffset=False)
    finite = [v for v in values if math.isfinite(v)]
    if bounds is None or not finite:
        return
    low, high = bounds
    span = min(max((max(finite) - min(finite)) * 1.1, _MIN_SPAN), high - low)  # 5% margins, as matplotlib's
    bottom = (max(finite) + min(finite) - span) / 2
    bottom = min(max(bottom, low), high - span)  # slid inside the range, not cut
    axis.set_ylim(bottom, bottom + span)


def _best(axis: Any, steps: list[int], values: list[float], *, lower_is_better: bool, chosen: bool) -> None:
    """Star the evaluation that picked the published checkpoint."""
    finite = [(v, s) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
    if not chosen or not finite:
        return
    value, step = min(finite) if lower_is_better else max(finite, key=lambda p: (p[0], -p[1]))
    axis.plot([step], [value], linestyle="none", marker="*", markersize=14, color="tab:red", label="best (published)")


def _confusion_matrix(validation: Prediction, spec: LabelSpec) -> Any:
    assert validation.labels is not None
    names = spec.names
    if len(names) > _MAX_CLASSES:
        log.info("charts.skipped", chart=CONFUSION_MATRIX, reason=f"{len(names)} labels, more than {_MAX_CLASSES}")
        return None
    predicted = thresholds.decide(metrics.probabilities(validation.logits, spec), spec)
    matrix = metrics.confusion_matrix(np.asarray(validation.labels), predicted, len(names))
    n = len(names)
    side = min(3.0 + 0.45 * n, 16.0)
    figure = _figure(side + 1.2, side)
    axis = figure.subplots()
    _heatmap(figure, axis, matrix, annotate=n <= _MAX_ANNOTATED_CLASSES)
    ticks = range(n)
    size = "medium" if n <= 10 else "small" if n <= 30 else "xx-small"
    axis.set_xticks(
        ticks,
        [_short(name) for name in names],
        rotation=45 if n > 3 else 0,
        ha="right" if n > 3 else "center",
        fontsize=size,
    )
    axis.set_yticks(ticks, [_short(name) for name in names], fontsize=size)
    axis.set(xlabel="predicted label", ylabel="true label")
    axis.set_title(f"Validation confusion matrix ({int(matrix.sum()):,} rows)")
    return figure


def _per_label_confusion(validation: Prediction, spec: LabelSpec) -> Any:
    assert validation.labels is not None
    names = spec.names
    if len(names) > _MAX_LABEL_PANELS:
        log.info("charts.skipped", chart=CONFUSION_MATRIX, reason=f"{len(names)} labels, more than {_MAX_LABEL_PANELS}")
        return None
    predicted = thresholds.decide(metrics.probabilities(validation.logits, spec), spec)
    actual = np.asarray(validation.labels) > metrics.THRESHOLD
    columns = min(len(names), 6)
    rows = math.ceil(len(names) / columns)
    figure = _figure(2.3 * columns + 0.6, 2.3 * rows + 0.5)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for i, name in enumerate(names):
        matrix = metrics.confusion_matrix(actual[:, i].astype(np.int64), predicted[:, i].astype(np.int64), 2)
        _heatmap(figure, axes[i], matrix, annotate=True, colorbar=False)
        axes[i].set_xticks([0, 1], ["no", "yes"])
        axes[i].set_yticks([0, 1], ["no", "yes"])
        axes[i].set_title(_short(name), fontsize="medium")
    for axis in axes[len(names) :]:
        axis.set_visible(False)
    figure.supxlabel("predicted")
    figure.supylabel("true")
    figure.suptitle(f"Validation confusion per label ({actual.shape[0]:,} rows)")
    return figure


def _heatmap(figure: Any, axis: Any, matrix: np.ndarray, *, annotate: bool, colorbar: bool = True) -> None:
    """Counts in the cells; colour is the share of the true class (row), so rare classes read as clearly."""
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    if colorbar:
        figure.colorbar(image, ax=axis, shrink=0.8, label="share of the true label's rows")
    if annotate:
        for (row, column), count in np.ndenumerate(matrix):
            colour = "white" if shares[row, column] > 0.5 else "black"
            axis.text(column, row, f"{count:,}", ha="center", va="center", color=colour, fontsize="small")


def _prediction_scatter(validation: Prediction) -> Any:
    assert validation.labels is not None
    predicted = np.asarray(validation.logits, dtype=np.float64).reshape(-1)
    actual = np.asarray(validation.labels, dtype=np.float64).reshape(-1)
    figure = _figure(4.8, 4.5)
    axis = figure.subplots()
    axis.scatter(actual, predicted, s=10, alpha=0.5 if actual.size > 200 else 0.8, edgecolors="none", rasterized=True)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    margin = (high - low) * 0.05 or 1.0
    limits = (low - margin, high + margin)
    axis.plot(limits, limits, color="tab:gray", linestyle="--", linewidth=1, label="predicted = true")
    axis.set(xlim=limits, ylim=limits, xlabel="true value", ylabel="predicted value", aspect="equal")
    axis.set_title(f"Validation: predicted vs true ({actual.size:,} rows)")
    axis.legend(loc="upper left", fontsize="small")
    axis.grid(alpha=0.3)
    return figure


def _short(name: str) -> str:
    return name if len(name) <= _MAX_NAME else name[: _MAX_NAME - 1] + "…"

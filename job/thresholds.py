"""Decision thresholds tuned on the validation split (FT_DECISION_THRESHOLDS).

A classifier trained on 1 positive in 20 rarely puts a positive above 0.5 even when it
ranks positives first; the threshold that best separates the validation split turns that
ranking into decisions. Binary: one threshold on the probability of label id 1, chosen
for macro-F1 (both classes count); multi-label: one per label, for that label's F1.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from job.settings import MULTI, SINGLE

if TYPE_CHECKING:
    from job.labels import LabelSpec

DEFAULT = 0.5
# Below this many validation rows of the rarer side, a tuned threshold fits the noise of a
# handful of rows rather than the model: keep the default.
MIN_ROWS = 10


def choose(setting: str, probs: np.ndarray, labels: np.ndarray | None, spec: LabelSpec) -> LabelSpec:
    """The spec the model decides by: with thresholds tuned on these validation probabilities
    (FT_DECISION_THRESHOLDS=tune), or as it was (`fixed`, or no labels to tune on)."""
    if setting == "fixed" or labels is None:
        return spec
    return dataclasses.replace(spec, thresholds=tune(probs, labels, spec))


def by_label(spec: LabelSpec) -> dict[str, float] | None:
    """The thresholds as stored and reported: binary, the cut on the second label's
    probability; multi-label, each label's own."""
    if spec.thresholds is None:
        return None
    names = spec.names[1:] if spec.problem_type == SINGLE else spec.names
    return {name: round(cut, 6) for name, cut in zip(names, spec.thresholds, strict=True)}


def store(model_folder: Path, spec: LabelSpec) -> None:
    """Record the thresholds in the saved model's config.json, where `predict` (which reads
    the config into its LabelSpec) finds them; the key is ignored by transformers."""
    from job.labels import THRESHOLDS_KEY

    cuts = by_label(spec)
    if cuts is None:
        return
    path = model_folder / "config.json"
    config: dict[str, Any] = json.loads(path.read_text())
    config[THRESHOLDS_KEY] = cuts
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def tune(probs: np.ndarray, labels: np.ndarray, spec: LabelSpec) -> tuple[float, ...] | None:
    """Thresholds for `decide` (LabelSpec.thresholds), or None where the problem has none
    (multi-class: argmax; regression)."""
    if spec.problem_type == SINGLE and len(spec.names) == 2:
        return (_best_cut(probs[:, 1], np.asarray(labels) == 1, macro=True),)
    if spec.problem_type == MULTI:
        truth = np.asarray(labels) > 0.5
        return tuple(_best_cut(probs[:, i], truth[:, i], macro=False) for i in range(probs.shape[1]))
    return None


def decide(probs: np.ndarray, spec: LabelSpec) -> np.ndarray:
    """Predicted ids (single-label) or a boolean matrix (multi-label) from probabilities,
    with the spec's thresholds where it has them."""
    cuts = spec.thresholds
    if spec.problem_type == MULTI:
        return probs > np.asarray(cuts if cuts is not None else [DEFAULT] * probs.shape[1])
    if cuts is not None and probs.shape[1] == 2:
        return (probs[:, 1] > cuts[0]).astype(np.int64)
    return probs.argmax(axis=-1)


def _best_cut(scores: np.ndarray, truth: np.ndarray, *, macro: bool) -> float:
    positives = int(truth.sum())
    if min(positives, len(truth) - positives) < MIN_ROWS:
        return DEFAULT
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    # Cutting after position k predicts the k+1 highest scores positive.
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    fn = positives - tp
    tn = (len(truth) - positives) - fp
    f1_pos = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    quality = (f1_pos + 2 * tn / np.maximum(2 * tn + fn + fp, 1)) / 2 if macro else f1_pos
    # Only cut between distinct scores: rows with equal scores get the same decision.
    distinct = np.append(ranked[:-1] > ranked[1:], True)
    quality = np.where(distinct, quality, -1.0)
    best = int(np.argmax(quality))
    below = ranked[best + 1] if best + 1 < len(ranked) else 0.0
    return float((ranked[best] + below) / 2)  # midway to the next score: a margin both sides

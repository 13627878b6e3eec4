"""Decision thresholds tuned on the validation split (FT_DECISION_THRESHOLDS).

A classifier trained on 1 positive in 20 rarely puts a positive above 0.5 even when it
ranks positives first; the threshold that best separates the validation split turns that
ranking into decisions. Binary: one threshold on the probability of label id 1, chosen
for macro-F1 (both classes count); multi-label: one per label, for that label's F1.

The best cut of a small validation split is also the one that fits its noise best: on 100
balanced movie reviews (the quality bench's rotten-tomatoes, seed 1) it landed at 0.013 and
cost 4.8 points of test accuracy against argmax on the same model (0.758 vs 0.806). So
`auto` (the default) tunes only an imbalanced problem or label, where 0.5 is known to be
wrong (class_weights.IMBALANCE_RATIO, the ratio from which the loss is weighted too), and a
tuned cut replaces 0.5 only when it decides the validation rows better than 0.5 by more
than chance could (`_beats_default`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from job.class_weights import IMBALANCE_RATIO
from job.settings import MULTI, SINGLE

if TYPE_CHECKING:
    from job.labels import LabelSpec

DEFAULT = 0.5
# Below this many validation rows of the rarer side, a tuned threshold fits the noise of a
# handful of rows rather than the model: keep the default.
MIN_ROWS = 10
# Standard deviations by which a tuned cut must beat 0.5 on validation (about 2.3% one-sided
# by chance): without this margin the cut follows the split's noise.
MIN_Z = 2.0


def choose(
    setting: str, probs: np.ndarray, labels: np.ndarray | None, spec: LabelSpec, *, train: dict[str, int], rows: int
) -> LabelSpec:
    """The spec the model decides by: with thresholds tuned on these validation probabilities
    (FT_DECISION_THRESHOLDS=tune; `auto`: for the imbalanced problem or labels, by `train`,
    the training rows per label of `rows`), or as it was (`fixed`, nothing imbalanced under
    `auto`, or no labels to tune on)."""
    if setting == "fixed" or labels is None:
        return spec
    if setting == "tune":
        return dataclasses.replace(spec, thresholds=tune(probs, labels, spec))
    wanted = imbalanced(spec, train, rows)
    if not any(wanted):
        return spec  # nothing imbalanced: no cut to tune, argmax decides
    tuned = tune(probs, labels, spec)
    if tuned is None:
        return dataclasses.replace(spec, thresholds=None)
    return dataclasses.replace(spec, thresholds=tuple(c if w else DEFAULT for c, w in zip(tuned, wanted, strict=True)))


def planned(setting: str, spec: LabelSpec, train: dict[str, int], rows: int) -> dict[str, Any] | None:
    """What the run will do about decision thresholds, for `check`: None where the problem
    has none (multi-class, regression)."""
    if not _has_thresholds(spec):
        return None
    names = spec.names if spec.problem_type == MULTI else spec.names[1:]
    wanted = [setting == "tune"] * len(names) if setting != "auto" else imbalanced(spec, train, rows)
    tuned = [name for name, w in zip(names, wanted, strict=True) if w]
    return {
        "setting": setting,
        "tuned_on_validation": tuned,
        "at_0_5": [name for name in names if name not in tuned],
        "effect": "a tuned cut is kept only where it beats 0.5 on validation by 2 standard deviations"
        if tuned
        else "decisions by argmax (0.5); FT_DECISION_THRESHOLDS=tune tunes them on validation",
    }


def imbalanced(spec: LabelSpec, train: dict[str, int], rows: int) -> list[bool]:
    """For each threshold `tune` gives (binary: one; multi-label: one per label), whether its
    yes/no problem is imbalanced in training: the larger side IMBALANCE_RATIO times the smaller;
    none where the problem decides without thresholds (multi-class, regression)."""
    if not _has_thresholds(spec):
        return []
    if spec.problem_type == MULTI:
        sides = [(train.get(name, 0), rows - train.get(name, 0)) for name in spec.names]
    else:
        sides = [tuple(train.get(name, 0) for name in spec.names)]
    return [min(a, b) == 0 or max(a, b) >= IMBALANCE_RATIO * min(a, b) for a, b in sides]


def _has_thresholds(spec: LabelSpec) -> bool:
    return spec.problem_type == MULTI or (spec.problem_type == SINGLE and len(spec.names) == 2)


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
    cut = float((ranked[best] + below) / 2)  # midway to the next score: a margin both sides
    return cut if _beats_default(scores, truth, cut) else DEFAULT


def _beats_default(scores: np.ndarray, truth: np.ndarray, cut: float) -> bool:
    """A sign test over the rows that `cut` and 0.5 decide differently: each counts +w where
    the cut decides it right and -w where wrong, w = 1 / the rows of its true class (so the
    small class counts as much as the large, as in macro-F1); the cut wins when the sum
    reaches MIN_Z standard deviations of what coin flips over those rows would give."""
    decided = scores > cut
    differ = decided != (scores > DEFAULT)
    if not differ.any():
        return False  # the same decisions: 0.5 is the simpler statement of them
    positives = int(truth.sum())
    weight = 1.0 / np.where(truth[differ], positives, len(truth) - positives)
    sign = np.where(decided[differ] == truth[differ], 1.0, -1.0)
    return float((weight * sign).sum()) >= MIN_Z * float(np.sqrt((weight**2).sum()))

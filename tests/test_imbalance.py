"""Imbalanced labels: the class-weighted loss, end to end on the tiny model."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import NEGATIVE, POSITIVE, ft_env, run_cli, sentence, write

from job.class_weights import IMBALANCE_RATIO, WeightedLoss, class_weights
from job.labels import MULTI, SINGLE, LabelSpec
from job.thresholds import DEFAULT, MIN_ROWS, decide, tune


def _rows(positives: int, negatives: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = [{"text": sentence(rng, rng.choice(POSITIVE)), "label": 1} for _ in range(positives)]
    out += [{"text": sentence(rng, rng.choice(NEGATIVE)), "label": 0} for _ in range(negatives)]
    rng.shuffle(out)
    return out


def _run(tmp_path: Path, model: Path, data: Path, setting: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    env = ft_env(
        tmp_path,
        model,
        data,
        FT_RUN_ID=f"weights-{setting}",
        FT_CLASS_WEIGHTS=setting,
        FT_EPOCHS="2",
        FT_BATCH_SIZE="16",
        # Short and gentle: enough to move the decision bias, not to learn the words.
        FT_LEARNING_RATE="2e-3",
        FT_WARMUP_RATIO="0",
        FT_SEED="3",
    )
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "outputs" / f"weights-{setting}" / "metrics.json").read_text())
    return metrics["validation"], events


@pytest.mark.slow
def test_weighted_loss_finds_the_small_class_that_plain_loss_ignores(tmp_path: Path, tiny_model: Path) -> None:
    positives, negatives = 12, 228  # 19:1, above the automatic ratio
    assert negatives / positives >= IMBALANCE_RATIO
    data = tmp_path / "data"
    write(data / "train.jsonl", _rows(positives, negatives, seed=1))
    write(data / "validation.jsonl", _rows(30, 30, seed=2))

    plain, plain_events = _run(tmp_path, tiny_model, data, "none")
    weighted, events = _run(tmp_path, tiny_model, data, "auto")

    chosen = next(e for e in events if e["event"] == "train.class_weights")
    rows = positives + negatives
    expected = {"0": rows / (2 * negatives), "1": rows / (2 * positives)}
    assert chosen["weights"] == pytest.approx(expected, abs=1e-3)
    assert not any(e["event"] == "train.class_weights" for e in plain_events)
    # The plain loss settles on the large class; the weighted one finds the small one.
    print("RESULT", plain["recall"], weighted["recall"], plain["f1_macro"], weighted["f1_macro"])
    assert weighted["recall"] >= plain["recall"] + 0.3, (plain, weighted)
    assert weighted["f1_macro"] > plain["f1_macro"], (plain, weighted)


def test_balanced_weights_average_one_over_the_training_rows() -> None:
    from datasets import Dataset

    labels = [0] * 90 + [1] * 9 + [2] * 1
    train = Dataset.from_dict({"labels": labels})
    weights = class_weights("auto", train, LabelSpec(SINGLE, ("a", "b", "c")))
    assert weights is not None
    assert sum(weights[y] for y in labels) / len(labels) == pytest.approx(1.0)
    assert weights == pytest.approx([100 / 270, 100 / 27, 100 / 3])
    assert class_weights("none", train, LabelSpec(SINGLE, ("a", "b", "c"))) is None
    even = Dataset.from_dict({"labels": [0, 1] * 50})
    assert class_weights("auto", even, LabelSpec(SINGLE, ("a", "b"))) is None
    assert class_weights("balanced", even, LabelSpec(SINGLE, ("a", "b"))) == pytest.approx([1.0, 1.0])


def test_multi_label_weights_lift_positives_up_to_a_cap() -> None:
    from datasets import Dataset

    rows = [[1, 0]] * 30 + [[0, 1]] * 1 + [[0, 0]] * 69  # label a: 30 of 100, label b: 1 of 100
    weights = class_weights("auto", Dataset.from_dict({"labels": rows}), LabelSpec(MULTI, ("a", "b")))
    assert weights == pytest.approx([70 / 30, 10.0])


def test_weighted_loss_is_the_weighted_mean_over_the_counted_items() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    weights = [0.5, 1.0, 3.0]
    loss = WeightedLoss(weights, SINGLE)({"logits": logits}, labels, num_items_in_batch=12)
    each = -torch.log_softmax(logits, -1)[torch.arange(6), labels] * torch.tensor(weights)[labels]
    assert loss.item() == pytest.approx(each.sum().item() / 12, rel=1e-6)

    targets = torch.tensor([[1.0, 0.0, 1.0]] * 6)
    multi = WeightedLoss(weights, MULTI)({"logits": logits}, targets)
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(weights))
    assert multi.item() == pytest.approx(expected.item(), rel=1e-6)
    assert not math.isnan(multi.item())


def _f1_macro(truth: np.ndarray, predicted: np.ndarray) -> float:
    scores = []
    for positive in (True, False):
        tp = int(((predicted == positive) & (truth == positive)).sum())
        wrong = int((predicted != truth).sum())
        scores.append(2 * tp / (2 * tp + wrong) if tp or wrong else 0.0)
    return sum(scores) / 2


def test_binary_threshold_is_the_best_cut_of_the_validation_scores() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.1
    # A model that ranks positives higher but keeps nearly all of them under 0.5.
    scores = np.clip(rng.normal(0.15, 0.08, 400) + 0.25 * truth, 0, 1)
    probs = np.stack([1 - scores, scores], axis=1)
    spec = LabelSpec(SINGLE, ("no", "yes"))
    (cut,) = tune(probs, truth.astype(int), spec) or [None]
    assert cut is not None and cut < 0.5
    at_cut = _f1_macro(truth, decide(probs, replace(spec, thresholds=(cut,))) == 1)
    # No other cut through the scores does better, and the default does worse.
    assert all(_f1_macro(truth, scores >= c) <= at_cut + 1e-12 for c in np.unique(scores))
    assert _f1_macro(truth, decide(probs, spec) == 1) < at_cut


def test_too_few_validation_rows_of_a_side_keep_the_default() -> None:
    truth = np.array([1] * (MIN_ROWS - 1) + [0] * 200)
    scores = np.linspace(0, 1, len(truth))
    spec = LabelSpec(SINGLE, ("no", "yes"))
    assert tune(np.stack([1 - scores, scores], axis=1), truth, spec) == (DEFAULT,)
    assert tune(np.eye(3)[[0, 1, 2] * 10], np.array([0, 1, 2] * 10), LabelSpec(SINGLE, ("a", "b", "c"))) is None


def test_multi_label_thresholds_are_per_label() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((300, 2)) < [0.5, 0.1]
    scores = np.clip(rng.normal(0.3, 0.1, (300, 2)) + [0.4, 0.15] * truth, 0, 1)
    cuts = tune(scores, truth.astype(float), LabelSpec(MULTI, ("a", "b")))
    assert cuts is not None and len(cuts) == 2 and cuts[1] < cuts[0]
    assert (decide(scores, LabelSpec(MULTI, ("a", "b"), cuts)) == (scores > np.asarray(cuts))).all()

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
from job.labels import MULTI, REGRESSION, SINGLE, LabelSpec
from job.thresholds import DEFAULT, MIN_ROWS, choose, decide, tune


def _rows(positives: int, negatives: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = [{"text": sentence(rng, rng.choice(POSITIVE)), "label": 1} for _ in range(positives)]
    out += [{"text": sentence(rng, rng.choice(NEGATIVE)), "label": 0} for _ in range(negatives)]
    rng.shuffle(out)
    return out


POSITIVES, NEGATIVES = 12, 228  # 19:1 in training, above the automatic ratio


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training rows 19:1; validation and test balanced, so a model that ignores the small
    class shows it."""
    data = tmp_path_factory.mktemp("imbalanced")
    write(data / "train.jsonl", _rows(POSITIVES, NEGATIVES, seed=1))
    write(data / "validation.jsonl", _rows(30, 30, seed=2))
    write(data / "test.jsonl", _rows(30, 30, seed=3))
    return data


def _run(root: Path, model: Path, data: Path, **settings: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run_id = "-".join(settings.values())
    env = ft_env(
        root,
        model,
        data,
        FT_RUN_ID=run_id,
        FT_EPOCHS="3",
        FT_BATCH_SIZE="16",
        # A budget in which the plain loss never learns the small class's words (validation
        # ROC-AUC near 0.5) and the weighted one does (near 1).
        FT_LEARNING_RATE="1e-2",
        FT_WARMUP_RATIO="0",
        FT_SEED="3",
        FT_CHARTS="false",
        **settings,
    )
    result, events = run_cli(env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((root / "outputs" / run_id / "metrics.json").read_text()), events


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, imbalanced: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("plain")
    metrics, events = _run(root, tiny_model, imbalanced, FT_CLASS_WEIGHTS="none", FT_DECISION_THRESHOLDS="fixed")
    assert not any(e["event"] in ("train.class_weights", "train.thresholds") for e in events)
    assert "decision_thresholds" not in metrics
    return metrics


@pytest.fixture(scope="module")
def weighted(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, imbalanced: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("weighted")
    metrics, events = _run(root, tiny_model, imbalanced, FT_CLASS_WEIGHTS="auto", FT_DECISION_THRESHOLDS="fixed")
    chosen = next(e for e in events if e["event"] == "train.class_weights")
    rows = POSITIVES + NEGATIVES
    assert chosen["weights"] == pytest.approx({"0": rows / (2 * NEGATIVES), "1": rows / (2 * POSITIVES)}, abs=1e-3)
    return metrics


@pytest.mark.slow
def test_weighted_loss_finds_the_small_class_that_plain_loss_ignores(
    plain: dict[str, Any], weighted: dict[str, Any]
) -> None:
    assert NEGATIVES / POSITIVES >= IMBALANCE_RATIO  # so `auto` applies
    # The plain loss settles on the large class; the weighted one finds the small one.
    assert weighted["validation"]["recall"] >= plain["validation"]["recall"] + 0.3, (plain, weighted)
    assert weighted["validation"]["roc_auc"] >= plain["validation"]["roc_auc"] + 0.2
    for split in ("validation", "test"):
        assert weighted[split]["f1_macro"] > plain[split]["f1_macro"], split


@pytest.mark.slow
def test_tuned_threshold_decides_test_and_predict(
    tmp_path: Path, tiny_model: Path, imbalanced: Path, weighted: dict[str, Any]
) -> None:
    tuned, events = _run(tmp_path, tiny_model, imbalanced, FT_CLASS_WEIGHTS="auto")  # thresholds: the default, auto
    cut = tuned["decision_thresholds"]["1"]
    assert next(e for e in events if e["event"] == "train.thresholds")["thresholds"] == {"1": cut}
    assert cut < 0.5  # the small class's probabilities stay low even with the weighted loss
    # The same model (same seed and settings), decided by the cut: unseen rows (test) gain.
    assert tuned["validation"]["roc_auc"] == pytest.approx(weighted["validation"]["roc_auc"])
    assert tuned["test"]["f1_macro"] >= weighted["test"]["f1_macro"] + 0.1, (weighted["test"], tuned["test"])
    run = tmp_path / "outputs" / "auto"
    assert json.loads((run / "config.json").read_text())["decision_thresholds"] == {"1": cut}
    assert f"`1` above {cut:.4f}" in (run / "README.md").read_text()  # the card says how to apply it

    # predict reads the cut from the model's config: the same decisions as the run's own test predictions.
    env = ft_env(tmp_path, run, imbalanced / "test.jsonl", FT_RUN_ID="scored", FT_OUTPUT=str(tmp_path / "scored"))
    result, _ = run_cli("predict", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    predicted = [json.loads(line) for line in (tmp_path / "scored" / "scored" / "predictions.jsonl").open()]
    own = [json.loads(line) for line in (run / "test_predictions.jsonl").open()]
    assert [r["label"] for r in predicted] == [r["label"] for r in own]
    assert any(r["label"] == "1" and r["score"] < 0.5 for r in predicted)  # decided by the cut, not by argmax


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


BINARY = LabelSpec(SINGLE, ("no", "yes"))


def _low_scores(share: float, mean: float, spread: float, top: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """400 validation rows, `share` positive, from a model that ranks positives higher (by
    0.25) but keeps (nearly) all of them under 0.5: truth, scores, probabilities, and `tune`'s cut below 0.5."""
    rng = np.random.default_rng(0)
    truth = rng.random(400) < share
    scores = np.clip(rng.normal(mean, spread, 400) + 0.25 * truth, 0, top)
    return truth, scores, np.stack([1 - scores, scores], axis=1)


def _tuned_cut(probs: np.ndarray, truth: np.ndarray) -> float:
    (cut,) = tune(probs, truth.astype(int), BINARY) or [None]
    assert cut is not None and cut < 0.5
    return cut


def test_binary_threshold_is_the_best_cut_of_the_validation_scores() -> None:
    truth, scores, probs = _low_scores(0.1, 0.15, 0.08, top=1)
    spec = BINARY
    cut = _tuned_cut(probs, truth)
    at_cut = _f1_macro(truth, decide(probs, replace(spec, thresholds=(cut,))) == 1)
    # No other cut through the scores does better, and the default does worse.
    assert all(_f1_macro(truth, scores >= c) <= at_cut + 1e-12 for c in np.unique(scores))
    assert _f1_macro(truth, decide(probs, spec) == 1) < at_cut


def test_a_cut_that_only_fits_the_validation_noise_keeps_the_default() -> None:
    # A calibrated model on 100 balanced rows: 0.5 is right, yet some other cut always scores
    # a little higher on these rows by chance; in most draws that gain is within chance.
    spec = LabelSpec(SINGLE, ("no", "yes"))
    kept = fitted = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        truth = rng.random(100) < 0.5
        scores = np.clip(rng.normal(0.25, 0.25, 100) + 0.5 * truth, 0, 1)
        fitted += max(_f1_macro(truth, scores > c) for c in np.unique(scores)) > _f1_macro(truth, scores > DEFAULT)
        kept += tune(np.stack([1 - scores, scores], axis=1), truth.astype(int), spec) == (DEFAULT,)
    assert fitted >= 36, fitted  # the best cut of the rows is nearly always another one
    assert kept >= 34, kept  # about 8% of draws pass a 2-sigma test after picking the best cut


def test_auto_tunes_only_imbalanced_problems_and_labels() -> None:
    # Every positive under 0.5: a cut below it is far better than 0.5 on these rows.
    truth, scores, probs = _low_scores(0.3, 0.1, 0.05, top=0.49)
    spec = BINARY
    cut = _tuned_cut(probs, truth)  # what `tune` would use
    balanced, skewed = {"no": 500, "yes": 400}, {"no": 850, "yes": 50}
    assert choose("auto", probs, truth.astype(int), spec, train=balanced, rows=900) == spec  # argmax
    assert choose("auto", probs, truth.astype(int), spec, train=skewed, rows=900).thresholds == (cut,)
    assert choose("tune", probs, truth.astype(int), spec, train=balanced, rows=900).thresholds == (cut,)
    assert choose("fixed", probs, truth.astype(int), spec, train=skewed, rows=900) == spec

    # Multi-label: each label by its own positives and negatives; 10:1 is imbalanced.
    pair = np.stack([scores, scores], axis=1)
    multi = LabelSpec(MULTI, ("rare", "common"))
    both = np.stack([truth, truth], axis=1).astype(float)
    per_label = tune(pair, both, multi)
    assert per_label is not None and per_label[0] < 0.5
    got = choose("auto", pair, both, multi, train={"rare": 90, "common": 450}, rows=990).thresholds
    assert got == (per_label[0], DEFAULT)


@pytest.mark.parametrize("setting", ["auto", "tune", "fixed"])
def test_problems_without_thresholds_keep_argmax_whatever_the_setting(setting: str) -> None:
    # Multi-class (even skewed) and regression have no cut: every setting leaves the spec as it is.
    three = LabelSpec(SINGLE, ("a", "b", "c"))
    ids = np.array([0, 1, 2] * 10)
    assert choose(setting, np.eye(3)[ids], ids, three, train={"a": 900, "b": 50, "c": 5}, rows=955) == three
    regression = LabelSpec(REGRESSION)
    values = np.linspace(0, 1, 30)
    assert choose(setting, values[:, None], values, regression, train={}, rows=30) == regression


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

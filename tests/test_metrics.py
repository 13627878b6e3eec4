"""Metrics against values worked out by hand (see the comments) and against scikit-learn
and scipy called here, through other entry points than the job's, on random predictions."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ft_env, rows, run_cli, write
from scipy import special, stats
from sklearn import metrics as sk
from sklearn.preprocessing import label_binarize

from job import metrics
from job.errors import ConfigError
from job.labels import MULTI, REGRESSION, SINGLE, LabelSpec


def test_binary_metrics_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    predictions = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    out = metrics.classification_metrics(np.eye(2)[predictions], labels, LabelSpec(SINGLE, ("neg", "pos")))
    # Confusion matrix [[3, 1], [1, 3]]: 6 of 8 right; each class p = r = f1 = 3/4.
    assert out["confusion_matrix"]["matrix"] == [[3, 1], [1, 3]]
    assert out["accuracy"] == 0.75
    assert out["f1"] == out["precision"] == out["recall"] == 0.75
    assert out["f1_macro"] == out["f1_weighted"] == 0.75
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 - 1) / sqrt(4^4) = 0.5
    assert out["mcc"] == pytest.approx(0.5)
    pos = out["per_class"]["pos"]
    assert (pos["precision"], pos["recall"], pos["f1"], pos["support"]) == (0.75, 0.75, 0.75, 4)
    # One-hot scores: of the 16 (positive, negative) pairs, 9 ranked right, 6 tied, 1 wrong.
    assert out["roc_auc"] == pos["roc_auc"] == pytest.approx((9 + 0.5 * 6) / 16)


def test_binary_positive_class_is_label_one() -> None:
    # Every row predicted "pos": pos precision 2/4, recall 1; neg precision 0 (no predictions).
    out = metrics.classification_metrics(
        np.eye(2)[np.ones(4, int)], np.array([0, 0, 1, 1]), LabelSpec(SINGLE, ("neg", "pos"))
    )
    assert out["precision"] == 0.5 and out["recall"] == 1.0 and out["f1"] == pytest.approx(2 / 3)
    assert out["per_class"]["neg"]["precision"] == 0.0  # no division-by-zero warning, just 0
    assert out["mcc"] == 0.0  # undefined (a constant prediction) is reported as 0


def test_multiclass_metrics_by_hand() -> None:
    labels = np.array([0, 1, 2, 2, 1, 0])
    predictions = np.array([0, 2, 2, 1, 1, 0])
    out = metrics.classification_metrics(np.eye(3)[predictions], labels, LabelSpec(SINGLE, ("a", "b", "c")))
    # Matrix rows (true) a: [2,0,0], b: [0,1,1], c: [0,1,1]; f1 = 1, 1/2, 1/2.
    assert out["confusion_matrix"]["matrix"] == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["f1_macro"] == pytest.approx(2 / 3) and out["f1"] == out["f1_macro"]
    assert out["f1_weighted"] == pytest.approx(2 / 3)
    # Gorodkin MCC: (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt(24 * 24) = 0.5
    assert out["mcc"] == pytest.approx(0.5)


def test_multi_label_metrics_by_hand() -> None:
    actual = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    predicted = np.array([[1, 0], [1, 0], [0, 1], [1, 0]])
    out = metrics.multi_label_metrics(predicted * 0.8 + 0.1, actual, LabelSpec(MULTI, ("x", "y")))
    # x: tp 2, fp 1, fn 0 -> f1 4/5; y: tp 1, fp 0, fn 1 -> f1 2/3; micro: tp 3, fp 1, fn 1 -> 6/8.
    assert out["per_class"]["x"]["f1"] == pytest.approx(0.8)
    assert out["per_class"]["y"]["f1"] == pytest.approx(2 / 3)
    assert out["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert out["f1_micro"] == pytest.approx(0.75)
    assert out["subset_accuracy"] == 0.5 and out["hamming_accuracy"] == 0.75
    # 6 of 8 cells scored 0.9 where true or 0.1 where false, 2 the other way round.
    assert out["log_loss"] == pytest.approx(-(6 * math.log(0.9) + 2 * math.log(0.1)) / 8)


def test_regression_metrics_by_hand() -> None:
    out = metrics.regression_metrics(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 5]))
    # residuals 0, -1, 1, -1; var(targets) = 8.75 / 4
    assert out["mse"] == 0.75 and out["mae"] == 0.75 and out["rmse"] == pytest.approx(math.sqrt(0.75))
    assert out["r2"] == pytest.approx(1 - 0.75 / 2.1875)
    assert out["pearson"] == pytest.approx(5.5 / math.sqrt(5 * 8.75))
    # ranks 1,2,3,4 vs 1,3,2,4: rho = 1 - 6 * 2 / (4 * 15)
    assert out["spearman"] == pytest.approx(0.8)


def test_probabilities_per_problem_type() -> None:
    logits = np.array([[0.0, math.log(3)]])
    np.testing.assert_allclose(metrics.probabilities(logits, LabelSpec(SINGLE, ("a", "b"))), [[0.25, 0.75]])
    np.testing.assert_allclose(metrics.probabilities(logits, LabelSpec(MULTI, ("a", "b"))), [[0.5, 0.75]])
    np.testing.assert_allclose(metrics.probabilities(np.array([[2.5]]), LabelSpec(REGRESSION)), [2.5])


def test_report_picks_the_right_family() -> None:
    spec = LabelSpec(MULTI, ("a", "b"))
    out = metrics.report(np.array([[3.0, -3.0]]), np.array([[1.0, 0.0]]), spec)
    assert out["subset_accuracy"] == 1.0
    assert set(metrics.scalars(np.array([[3.0, -3.0]]), np.array([[1.0, 0.0]]), spec)) >= {"f1_micro", "f1_macro"}


@pytest.fixture
def no_warnings() -> Iterator[None]:
    """Any warning fails the test: degenerate splits must not spam the job's log."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def random_logits(rows: int, columns: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, columns))


@pytest.mark.usefixtures("no_warnings")
def test_binary_matches_scikit_learn() -> None:
    logits = random_logits(200, 2, seed=1)
    labels = np.random.default_rng(2).integers(0, 2, 200)
    out = metrics.report(logits, labels, LabelSpec(SINGLE, ("neg", "pos")))

    positive = special.expit(logits[:, 1] - logits[:, 0])  # softmax over two logits
    predicted = (positive > 0.5).astype(int)
    assert out["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert out["f1"] == pytest.approx(sk.f1_score(labels, predicted))
    assert out["precision"] == pytest.approx(sk.precision_score(labels, predicted))
    assert out["recall"] == pytest.approx(sk.recall_score(labels, predicted))
    assert out["f1_macro"] == pytest.approx(sk.f1_score(labels, predicted, average="macro"))
    assert out["f1_weighted"] == pytest.approx(sk.f1_score(labels, predicted, average="weighted"))
    assert out["mcc"] == pytest.approx(sk.matthews_corrcoef(labels, predicted))
    assert out["roc_auc"] == pytest.approx(sk.roc_auc_score(labels, positive))
    assert out["roc_auc_macro"] == pytest.approx(out["roc_auc"])  # one-vs-rest of two classes: the same ranking
    assert out["pr_auc"] == pytest.approx(sk.average_precision_score(labels, positive))
    negative_ap = sk.average_precision_score(1 - labels, 1 - positive)
    assert out["pr_auc_macro"] == pytest.approx((out["pr_auc"] + negative_ap) / 2)
    assert out["log_loss"] == pytest.approx(sk.log_loss(labels, positive))
    assert out["per_class"]["neg"]["pr_auc"] == pytest.approx(negative_ap)
    assert out["confusion_matrix"]["matrix"] == sk.confusion_matrix(labels, predicted).tolist()


@pytest.mark.usefixtures("no_warnings")
def test_multiclass_matches_scikit_learn() -> None:
    logits = random_logits(300, 4, seed=3)
    labels = np.random.default_rng(4).integers(0, 4, 300)
    out = metrics.report(logits, labels, LabelSpec(SINGLE, ("a", "b", "c", "d")))

    probs = special.softmax(logits, axis=1)
    predicted = probs.argmax(axis=1)
    assert out["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert out["f1"] == out["f1_macro"] == pytest.approx(sk.f1_score(labels, predicted, average="macro"))
    assert out["recall_weighted"] == pytest.approx(sk.recall_score(labels, predicted, average="weighted"))
    assert out["mcc"] == pytest.approx(sk.matthews_corrcoef(labels, predicted))
    ovr = sk.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert out["roc_auc"] == out["roc_auc_macro"] == pytest.approx(ovr)
    onehot = label_binarize(labels, classes=range(4))
    assert out["pr_auc_macro"] == pytest.approx(sk.average_precision_score(onehot, probs, average="macro"))
    assert out["log_loss"] == pytest.approx(sk.log_loss(labels, probs))
    per_class = sk.roc_auc_score(onehot, probs, average=None)
    assert [out["per_class"][n]["roc_auc"] for n in "abcd"] == pytest.approx(list(per_class))


@pytest.mark.usefixtures("no_warnings")
def test_multi_label_matches_scikit_learn() -> None:
    logits = random_logits(250, 3, seed=5)
    actual = (np.random.default_rng(6).random((250, 3)) < 0.4).astype(np.float32)
    out = metrics.report(logits, actual, LabelSpec(MULTI, ("x", "y", "z")))

    probs = special.expit(logits)
    predicted = (probs > 0.5).astype(int)
    assert out["subset_accuracy"] == pytest.approx(np.mean((predicted == actual).all(axis=1)))
    assert out["hamming_accuracy"] == pytest.approx(np.mean(predicted == actual))
    for average in ("micro", "macro", "weighted"):
        assert out[f"f1_{average}"] == pytest.approx(sk.f1_score(actual, predicted, average=average))
    assert out["precision_micro"] == pytest.approx(sk.precision_score(actual, predicted, average="micro"))
    assert out["roc_auc_macro"] == pytest.approx(sk.roc_auc_score(actual, probs, average="macro"))
    assert out["pr_auc_macro"] == pytest.approx(sk.average_precision_score(actual, probs, average="macro"))
    per_label = [sk.log_loss(actual[:, j], probs[:, j]) for j in range(3)]
    assert out["log_loss"] == pytest.approx(np.mean(per_label))
    assert out["per_class"]["z"]["pr_auc"] == pytest.approx(sk.average_precision_score(actual[:, 2], probs[:, 2]))


@pytest.mark.usefixtures("no_warnings")
def test_regression_matches_scikit_learn_and_scipy() -> None:
    rng = np.random.default_rng(7)
    targets = rng.normal(size=120)
    predictions = targets + rng.normal(scale=0.5, size=120)
    out = metrics.report(predictions[:, None], targets, LabelSpec(REGRESSION))

    assert out["mse"] == pytest.approx(sk.mean_squared_error(targets, predictions))
    assert out["rmse"] == pytest.approx(math.sqrt(out["mse"]))
    assert out["mae"] == pytest.approx(sk.mean_absolute_error(targets, predictions))
    assert out["r2"] == pytest.approx(sk.r2_score(targets, predictions))
    assert out["pearson"] == pytest.approx(stats.pearsonr(targets, predictions).statistic)
    assert out["spearman"] == pytest.approx(stats.spearmanr(targets, predictions).statistic)


@pytest.mark.parametrize(
    ("spec", "columns"),
    [(LabelSpec(SINGLE, ("a", "b")), 2), (LabelSpec(SINGLE, ("a", "b", "c")), 3), (LabelSpec(MULTI, ("a", "b")), 2)],
)
def test_every_catalogued_metric_is_reported(spec: LabelSpec, columns: int) -> None:
    rng = np.random.default_rng(8)
    labels = rng.integers(0, columns, 60) if spec.problem_type == SINGLE else rng.integers(0, 2, (60, columns))
    reported = metrics.scalars(random_logits(60, columns, seed=9), labels, spec)
    assert set(metrics.CATALOGUE[spec.problem_type]) - {"loss"} <= set(reported)  # loss is the Trainer's


def test_regression_reports_every_catalogued_metric() -> None:
    reported = metrics.scalars(random_logits(30, 1, seed=10), np.arange(30.0), LabelSpec(REGRESSION))
    assert set(metrics.CATALOGUE[REGRESSION]) - {"loss"} <= set(reported)


@pytest.mark.usefixtures("no_warnings")
def test_a_class_missing_from_the_split_has_no_auc_and_no_average() -> None:
    labels = np.array([0, 1, 0, 1, 1, 0])  # "c" never occurs
    out = metrics.report(random_logits(6, 3, seed=11), labels, LabelSpec(SINGLE, ("a", "b", "c")))
    assert out["per_class"]["c"]["roc_auc"] is None and out["per_class"]["c"]["pr_auc"] is None
    assert out["per_class"]["a"]["roc_auc"] is not None
    assert out["roc_auc"] is out["roc_auc_macro"] is out["pr_auc_macro"] is None
    assert math.isfinite(out["log_loss"]) and math.isfinite(out["f1_macro"])
    json.dumps(out, allow_nan=False)  # None, never NaN
    assert not {"roc_auc", "roc_auc_macro", "pr_auc", "pr_auc_macro"} & set(
        metrics.scalars(random_logits(6, 3, seed=11), labels, LabelSpec(SINGLE, ("a", "b", "c")))
    )


@pytest.mark.usefixtures("no_warnings")
def test_one_class_binary_and_constant_labels_do_not_warn() -> None:
    out = metrics.report(random_logits(5, 2, seed=12), np.ones(5, int), LabelSpec(SINGLE, ("neg", "pos")))
    assert out["roc_auc"] is None and out["pr_auc"] is None and out["accuracy"] >= 0.0

    always_on = np.array([[1, 0], [1, 1], [1, 0], [1, 1]], dtype=np.float32)  # "x" has no negative row
    out = metrics.report(random_logits(4, 2, seed=13), always_on, LabelSpec(MULTI, ("x", "y")))
    assert out["per_class"]["x"]["roc_auc"] is None and out["roc_auc_macro"] is None
    assert out["per_class"]["y"]["roc_auc"] is not None

    constant = metrics.report(np.full((3, 1), 2.0), np.array([1.0, 2.0, 3.0]), LabelSpec(REGRESSION))
    assert constant["pearson"] == constant["spearman"] == 0.0
    single = metrics.report(np.array([[2.0]]), np.array([1.0]), LabelSpec(REGRESSION))
    assert single["r2"] == 0.0 and single["mse"] == 1.0


def test_no_auc_beyond_the_label_limit() -> None:
    classes = metrics.AUC_MAX_LABELS + 1
    names = tuple(f"c{i}" for i in range(classes))
    labels = np.arange(classes * 2) % classes
    out = metrics.report(random_logits(classes * 2, classes, seed=14), labels, LabelSpec(SINGLE, names))
    assert out["roc_auc_macro"] is None and "roc_auc" not in out["per_class"]["c0"]
    assert math.isfinite(out["log_loss"])


def test_a_best_model_auc_the_split_cannot_have_is_refused() -> None:
    spec = LabelSpec(SINGLE, ("a", "b", "c"))
    lacking_c = np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match="FT_METRIC_FOR_BEST_MODEL=roc_auc_macro is not defined"):
        metrics.require_defined("roc_auc_macro", lacking_c, spec)
    metrics.require_defined("f1_macro", lacking_c, spec)  # defined whatever the labels
    metrics.require_defined("roc_auc_macro", np.array([0, 1, 2, 1]), spec)


def test_new_metrics_are_selectable_with_the_right_direction() -> None:
    assert metrics.best_model_metric("log_loss", MULTI) == "log_loss" and not metrics.greater_is_better("log_loss")
    assert metrics.best_model_metric("pr_auc", SINGLE) == "pr_auc" and metrics.greater_is_better("pr_auc")
    with pytest.raises(ConfigError, match="does not apply to multi_label_classification"):
        metrics.best_model_metric("roc_auc", MULTI)  # multi-label has only the macro average


@pytest.mark.slow
def test_metrics_json_grows_with_the_labels_not_their_square(tmp_path: Path, tiny_model: Path) -> None:
    """3,000 labels: per-class scores stay in metrics.json, the confusion matrix's non-zero
    cells (at most one per validation row) go to their own compact file."""
    labels = [f"topic-{i}" for i in range(3000)]
    folder = tmp_path / "data"
    write(folder / "train.jsonl", [{"text": f"the film {i % 7}", "label": name} for i, name in enumerate(labels)])
    write(folder / "validation.jsonl", [{"text": f"a story {i % 5}", "label": name} for i, name in enumerate(labels)])
    env = ft_env(tmp_path, tiny_model, folder, FT_RUN_ID="many", FT_EPOCHS="1", FT_BATCH_SIZE="64")
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    run = tmp_path / "outputs" / "many"
    document = json.loads((run / "metrics.json").read_text())
    assert (run / "metrics.json").stat().st_size < 1_000_000  # 117 MB before: an indented 3,000 x 3,000 matrix
    assert len(document["validation"]["per_class"]) == 3000
    assert document["validation"]["confusion_matrix"] == {
        "file": "confusion_matrix.json",
        "labels": 3000,
        "format": "sparse",
    }
    matrix = json.loads((run / "confusion_matrix.json").read_text())
    assert matrix["labels"] == sorted(labels) and sum(n for _, _, n in matrix["cells"]) == 3000 >= len(matrix["cells"])
    assert any(e["event"] == "charts.skipped" for e in events) and not (run / "confusion_matrix.png").exists()


@pytest.mark.slow
def test_an_auc_can_pick_the_best_checkpoint(tmp_path: Path, tiny_model: Path) -> None:
    folder = write(tmp_path / "data" / "train.csv", rows("binary", 80)).parent
    env = ft_env(tmp_path, tiny_model, folder, FT_RUN_ID="auc", FT_EPOCHS="2", FT_METRIC_FOR_BEST_MODEL="pr_auc")
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert [e["best_model_metric"] for e in events if e["event"] == "train.started"] == ["pr_auc"]
    document = json.loads((tmp_path / "outputs" / "auc" / "metrics.json").read_text())
    assert document["headline"]["metric"] == "pr_auc"
    assert document["headline"]["value"] == document["validation"]["pr_auc"]
    assert 0.0 <= document["validation"]["roc_auc"] <= 1.0 and document["validation"]["log_loss"] > 0.0


@pytest.mark.slow
def test_an_auc_the_validation_split_lacks_is_refused_before_training(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "data"
    write(folder / "train.jsonl", rows("multiclass", 60))
    lacking = [row for row in rows("multiclass", 30, seed=1) if row["label"] != "tech"]
    write(folder / "validation.jsonl", lacking)
    env = ft_env(tmp_path, tiny_model, folder, FT_RUN_ID="lacking", FT_METRIC_FOR_BEST_MODEL="roc_auc_macro")
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-3000:]
    (error,) = [e for e in events if e["level"] == "error"]
    assert error["event"] == "config.invalid"
    assert "FT_METRIC_FOR_BEST_MODEL=roc_auc_macro is not defined on this validation split" in error["error"]
    assert not any(e["event"] == "train.progress" for e in events)

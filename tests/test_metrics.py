"""Metrics against values worked out by hand (see the comments)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import ft_env, run_cli, write

from job import metrics
from job.labels import MULTI, REGRESSION, SINGLE, LabelSpec


def test_binary_metrics_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    predictions = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    out = metrics.classification_metrics(predictions, labels, ("neg", "pos"))
    # Confusion matrix [[3, 1], [1, 3]]: 6 of 8 right; each class p = r = f1 = 3/4.
    assert out["confusion_matrix"]["matrix"] == [[3, 1], [1, 3]]
    assert out["accuracy"] == 0.75
    assert out["f1"] == out["precision"] == out["recall"] == 0.75
    assert out["f1_macro"] == out["f1_weighted"] == 0.75
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 - 1) / sqrt(4^4) = 0.5
    assert out["mcc"] == pytest.approx(0.5)
    assert out["per_class"]["pos"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}


def test_binary_positive_class_is_label_one() -> None:
    # Every row predicted "pos": pos precision 2/4, recall 1; neg precision 0 (no predictions).
    out = metrics.classification_metrics(np.ones(4, int), np.array([0, 0, 1, 1]), ("neg", "pos"))
    assert out["precision"] == 0.5 and out["recall"] == 1.0 and out["f1"] == pytest.approx(2 / 3)
    assert out["per_class"]["neg"]["precision"] == 0.0  # no division-by-zero warning, just 0
    assert out["mcc"] == 0.0  # undefined (a constant prediction) is reported as 0


def test_multiclass_metrics_by_hand() -> None:
    labels = np.array([0, 1, 2, 2, 1, 0])
    predictions = np.array([0, 2, 2, 1, 1, 0])
    out = metrics.classification_metrics(predictions, labels, ("a", "b", "c"))
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
    out = metrics.multi_label_metrics(predicted, actual, ("x", "y"))
    # x: tp 2, fp 1, fn 0 -> f1 4/5; y: tp 1, fp 0, fn 1 -> f1 2/3; micro: tp 3, fp 1, fn 1 -> 6/8.
    assert out["per_class"]["x"]["f1"] == pytest.approx(0.8)
    assert out["per_class"]["y"]["f1"] == pytest.approx(2 / 3)
    assert out["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert out["f1_micro"] == pytest.approx(0.75)
    assert out["subset_accuracy"] == 0.5 and out["hamming_accuracy"] == 0.75


def test_regression_metrics_by_hand() -> None:
    out = metrics.regression_metrics(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 5]))
    # residuals 0, -1, 1, -1; var(targets) = 8.75 / 4
    assert out["mse"] == 0.75 and out["mae"] == 0.75 and out["rmse"] == pytest.approx(math.sqrt(0.75))
    assert out["r2"] == pytest.approx(1 - 0.75 / 2.1875)
    assert out["pearson"] == pytest.approx(5.5 / math.sqrt(5 * 8.75))
    # ranks 1,2,3,4 vs 1,3,2,4: rho = 1 - 6 * 2 / (4 * 15)
    assert out["spearman"] == pytest.approx(0.8)


def test_spearman_ties_share_their_average_rank() -> None:
    np.testing.assert_allclose(metrics._ranks(np.array([3.0, 1, 1, 2])), [4, 1.5, 1.5, 3])


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

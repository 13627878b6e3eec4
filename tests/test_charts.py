"""Charts: real runs of the tiny model publish PNG charts that the model card shows;
charts drawn from crafted inputs are reproducible, and a chart that cannot be drawn
only warns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import rows, write
from PIL import Image

from job import charts
from job.artifacts import TRAIN_LOG
from job.labels import MULTI, SINGLE, LabelSpec
from job.logs import configure_logging
from job.main import main
from job.results import Prediction
from job.storage import COMPLETE


def dataset(tmp_path: Path, kind: str, n: int = 120) -> Path:
    return write(tmp_path / f"data-{kind}" / "train.jsonl", rows(kind, n)).parent


def assert_png(path: Path) -> tuple[int, int]:
    """A whole PNG with a picture in it, not a blank canvas."""
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20
        return image.size


def train_log(folder: Path, *, evaluations: int = 3, steps_per_epoch: int = 10) -> Path:
    """A train_log.jsonl as ProgressLog writes it: losses every 5 steps, an evaluation per epoch."""
    lines = []
    for step in range(1, evaluations * steps_per_epoch + 1):
        if step == 1 or step % 5 == 0:
            lines.append(
                {"step": step, "loss": 1.0 / step, "learning_rate": 1e-3 * (1 - step / 40), "epoch": step / 10}
            )
        if step % steps_per_epoch == 0:
            lines.append({"step": step, "eval_loss": 0.5 / step, "eval_f1_macro": 0.6 + step / 100, "epoch": step / 10})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TRAIN_LOG).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder / TRAIN_LOG


def classification(n: int = 60, classes: int = 3, seed: int = 0) -> Prediction:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), labels] += 1.5  # mostly right
    return Prediction(logits=logits, labels=labels, index=list(range(n)))


@pytest.mark.slow
def test_a_classification_run_publishes_its_curves_and_confusion_matrix(make_settings, tmp_path: Path) -> None:
    summary = main(make_settings(dataset=str(dataset(tmp_path, "multiclass")), epochs=2))
    run = Path(summary["location"])

    width, height = assert_png(run / charts.TRAINING_CURVES)
    assert width > 2 * height  # three panels side by side: loss, validation f1_macro, learning rate
    assert_png(run / charts.CONFUSION_MATRIX)
    assert not (run / charts.PREDICTION_SCATTER).exists()

    card = (run / "README.md").read_text()
    assert "## Confusion matrix" in card and f"]({charts.CONFUSION_MATRIX})" in card
    assert "## Training curves" in card and f"]({charts.TRAINING_CURVES})" in card
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert {charts.TRAINING_CURVES, charts.CONFUSION_MATRIX} <= set(manifest["files"])
    assert "charts" in manifest["timings_s"]
    listed = {f["path"]: f["size"] for f in json.loads((run / COMPLETE).read_text())["files"]}
    assert listed[charts.CONFUSION_MATRIX] == (run / charts.CONFUSION_MATRIX).stat().st_size


@pytest.mark.slow
def test_a_regression_run_plots_predicted_against_true_instead(make_settings, tmp_path: Path) -> None:
    summary = main(make_settings(dataset=str(dataset(tmp_path, "regression")), epochs=2))
    run = Path(summary["location"])

    assert_png(run / charts.PREDICTION_SCATTER)
    assert_png(run / charts.TRAINING_CURVES)
    assert not (run / charts.CONFUSION_MATRIX).exists()
    card = (run / "README.md").read_text()
    assert f"## Predicted vs true\n\n![Validation predictions against true values]({charts.PREDICTION_SCATTER})" in card
    assert "## Confusion matrix" not in card


@pytest.mark.slow
def test_with_charts_off_nothing_is_drawn_or_linked(make_settings, tmp_path: Path) -> None:
    summary = main(make_settings(dataset=str(dataset(tmp_path, "binary", n=60)), max_steps=4, charts=False))
    run = Path(summary["location"])

    assert not list(run.glob("*.png"))
    card = (run / "README.md").read_text()
    assert "![" not in card and "## Training curves" not in card


def test_the_same_inputs_draw_the_same_bytes(tmp_path: Path) -> None:
    spec = LabelSpec(SINGLE, ("sports", "politics", "a label with a rather long name"))
    drawn = {}
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        train_log(folder)
        written = charts.draw(folder, classification(), spec, metric="f1_macro")
        assert written == [charts.TRAINING_CURVES, charts.CONFUSION_MATRIX]
        drawn[attempt] = {name: (folder / name).read_bytes() for name in written}
    assert drawn["a"] == drawn["b"]

    other = tmp_path / "other"
    train_log(other, evaluations=4)
    charts.draw(other, classification(seed=1), spec, metric="f1_macro")
    for name in drawn["a"]:
        assert (other / name).read_bytes() != drawn["a"][name]  # the pictures do follow the data


def test_a_corrupt_train_log_line_only_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", run_id="charts")
    path = train_log(tmp_path)
    path.write_text(path.read_text() + '{"step": 31, "loss": 0.0\n')  # cut off mid-write

    written = charts.draw(tmp_path, classification(), LabelSpec(SINGLE, ("a", "b", "c")), metric="f1_macro")

    assert written == [charts.CONFUSION_MATRIX]
    assert not (tmp_path / charts.TRAINING_CURVES).exists()
    assert_png(tmp_path / charts.CONFUSION_MATRIX)
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (failed,) = [e for e in events if e["event"] == "charts.failed"]
    assert failed["level"] == "warning" and failed["chart"] == charts.TRAINING_CURVES
    assert f"{TRAIN_LOG} line " in failed["error"] and "is not JSON" in failed["error"]


def test_multi_label_gets_a_matrix_per_label_up_to_a_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", run_id="charts")
    rng = np.random.default_rng(0)

    def prediction(labels: int) -> Prediction:
        actual = (rng.random((50, labels)) < 0.3).astype(np.float32)
        return Prediction(logits=rng.normal(size=(50, labels)) + 2 * actual - 1, labels=actual, index=list(range(50)))

    few, many = tmp_path / "few", tmp_path / "many"
    train_log(few)
    train_log(many)
    names = tuple(f"label-{i}" for i in range(40))
    assert charts.draw(few, prediction(5), LabelSpec(MULTI, names[:5]), metric="f1_macro") == [
        charts.TRAINING_CURVES,
        charts.CONFUSION_MATRIX,
    ]
    width, height = assert_png(few / charts.CONFUSION_MATRIX)
    assert width > height  # five 2 x 2 matrices in a row

    assert charts.draw(many, prediction(40), LabelSpec(MULTI, names), metric="f1_macro") == [charts.TRAINING_CURVES]
    skipped = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "charts.skipped" in line]
    assert skipped and skipped[0]["reason"] == "40 labels, more than 36"


def metric_axis(folder: Path, values: list[float], metric: str = "f1_macro", losses: tuple[float, ...] = ()) -> Any:
    """The validation-metric panel of the training curves drawn from these evaluations, rendered
    (tick labels and offsets exist only once drawn)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    losses = losses or tuple(0.5 - i / 100 for i in range(len(values)))
    lines = [
        {"step": 10 * (i + 1), "loss": loss, "eval_loss": loss, f"eval_{metric}": value}
        for i, (value, loss) in enumerate(zip(values, losses, strict=True))
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TRAIN_LOG).write_text("".join(json.dumps(line) + "\n" for line in lines))
    figure = charts._training_curves(folder / TRAIN_LOG, metric)
    FigureCanvasAgg(figure).draw()
    (axis,) = [a for a in figure.axes if a.get_title() == f"Validation {metric}"]
    return axis


def test_a_change_in_the_fifth_decimal_draws_flat_without_an_offset(tmp_path: Path) -> None:
    axis = metric_axis(tmp_path, [0.800912, 0.800925, 0.800932], losses=(0.300912, 0.300925, 0.300932))
    assert axis.yaxis.get_major_formatter().get_offset() == ""  # was "1e-5+8.009e-1"
    labels = [label.get_text() for label in axis.get_yticklabels()]
    assert labels and not [text for text in labels if "e" in text or "+" in text]
    bottom, top = axis.get_ylim()
    assert top - bottom >= 0.05 - 1e-12 and 0.0 <= bottom < 0.800912 and 0.800932 < top <= 1.0
    (loss_axis,) = [a for a in axis.figure.axes if a.get_title() == "Loss"]
    assert loss_axis.yaxis.get_major_formatter().get_offset() == ""


def test_a_bounded_metric_axis_stays_inside_its_range(tmp_path: Path) -> None:
    assert metric_axis(tmp_path / "top", [0.99995, 1.0]).get_ylim() == pytest.approx((0.95, 1.0))
    assert metric_axis(tmp_path / "bottom", [0.0, 0.001], metric="recall").get_ylim() == pytest.approx((0.0, 0.05))
    bottom, top = metric_axis(tmp_path / "wide", [0.2, 0.9]).get_ylim()
    assert bottom == pytest.approx(0.165) and top == pytest.approx(0.935)  # the data's own span, 5% margins
    bottom, top = metric_axis(tmp_path / "mcc", [-0.9999, -1.0], metric="mcc").get_ylim()
    assert (bottom, top) == pytest.approx((-1.0, -0.95))

"""Batch prediction (`python -m job predict`) with a model the real job trained once."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import ft_env, rows, run_cli, score_tolerance, write
from s3_helpers import objects, upload_folder

from job import cli
from job.errors import ExitCode
from job.files import sha256_of
from job.main import main
from job.predict import PREDICT_MANIFEST, PREDICTIONS, predict
from job.settings import Settings
from job.storage import COMPLETE

LABELS = ("politics", "sports", "tech")
TEST_ROWS = 40


@dataclass(frozen=True)
class Trained:
    run: Path  # the published run folder: model, tokenizer, test_predictions.jsonl
    test_rows: list[dict]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Trained:
    """A multi-class model trained by the job itself, with its own test predictions."""
    root = tmp_path_factory.mktemp("trained")
    test_rows = rows("multiclass", TEST_ROWS, seed=99)
    write(root / "data" / "train.jsonl", rows("multiclass", 240))
    write(root / "data" / "test.jsonl", test_rows)
    with pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(("FT_", "AWS_")):
                env.delenv(name)
        env.setenv("HF_HUB_OFFLINE", "1")
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            model=str(tiny_model),
            dataset=str(root / "data"),
            output=str(root / "runs"),
            cache_dir=root / "cache",
            run_id="trained",
            epochs=6,
            batch_size=16,
            learning_rate=5e-3,
            warmup_ratio=0.0,
            log_format="json",
        )
        run = Path(main(settings)["location"])
    return Trained(run=run, test_rows=test_rows)


def predict_settings(make_settings, trained: Trained, dataset: Path | str, **overrides) -> Settings:
    return make_settings(model=str(trained.run), dataset=str(dataset), run_id="scored", **overrides)


@pytest.mark.slow
def test_cli_scores_unlabelled_rows_like_the_training_run_and_a_rerun_is_a_no_op(
    trained: Trained, tmp_path: Path
) -> None:
    unlabelled = write(tmp_path / "new" / "reviews.csv", [{"text": r["text"]} for r in trained.test_rows])
    env = ft_env(
        tmp_path, trained.run, unlabelled, FT_OUTPUT=str(tmp_path / "predictions"), FT_RUN_ID="nightly",
        FT_PREDICT_ALL_SCORES="true",
    )  # fmt: skip

    def run() -> list[dict]:
        result, events = run_cli("predict", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return events

    events = run()
    out = tmp_path / "predictions" / "nightly"
    summary = events[-1]
    assert summary["event"] == "predict.completed" and summary["location"] == str(out)
    assert summary["rows"] == TEST_ROWS and summary["predictions"] == str(out / PREDICTIONS)

    predictions = read_jsonl(out / PREDICTIONS)
    assert [p["index"] for p in predictions] == list(range(TEST_ROWS))  # every row, in input order
    predicted = {p["label"] for p in predictions}
    assert predicted <= set(LABELS) and len(predicted) > 1  # a real classifier, not one constant answer
    for p in predictions:
        assert list(p["scores"]) == list(LABELS) and sum(p["scores"].values()) == pytest.approx(1, abs=1e-5)
        assert p["score"] == p["scores"][p["label"]] == max(p["scores"].values())
    # The same rows, scored by the training run right after training: same labels, same scores.
    reference = read_jsonl(trained.run / "test_predictions.jsonl")
    assert [p["label"] for p in predictions] == [r["label"] for r in reference]
    manifest = json.loads((out / PREDICT_MANIFEST).read_text())
    trained_in = json.loads((trained.run / "run_manifest.json").read_text())["training"]["precision"]
    tolerance = score_tolerance(manifest["inference"]["precision"], trained_in)
    np.testing.assert_allclose([p["score"] for p in predictions], [r["score"] for r in reference], atol=tolerance)

    assert manifest["model"]["trained_in_run"] == "trained" and manifest["model"]["labels"]["names"] == list(LABELS)
    assert manifest["data"]["rows"] == manifest["data"]["predicted"] == TEST_ROWS
    assert manifest["data"]["split"] == "train" and manifest["metrics"] is None  # a lone csv: its one split
    assert manifest["inference"]["rows_per_second"] > 0 and 0 < manifest["inference"]["padding_efficiency"] <= 1
    complete = json.loads((out / COMPLETE).read_text())
    assert {f["path"] for f in complete["files"]} == {PREDICTIONS, PREDICT_MANIFEST}

    before = sha256_of(out / PREDICTIONS)
    events = run()
    assert events[-1]["event"] == "run.already_complete"
    assert sha256_of(out / PREDICTIONS) == before


@pytest.mark.slow
def test_labelled_rows_get_metrics_and_rows_without_text_keep_their_line(
    make_settings, trained: Trained, tmp_path: Path
) -> None:
    records = [{"doc": f"d{i}", **r} for i, r in enumerate(trained.test_rows)]
    records.insert(5, {"doc": "blank", "text": "", "label": "sports"})
    data = write(tmp_path / "labelled" / "test.jsonl", records)
    summary = predict(predict_settings(make_settings, trained, data.parent, predict_id_column="doc"))

    out = Path(summary["location"])
    predictions = read_jsonl(out / PREDICTIONS)
    assert [p["id"] for p in predictions] == [r["doc"] for r in records]
    assert predictions[5] == {"index": 5, "id": "blank", "label": None, "label_id": None, "score": None,
                              "skipped": "no text"}  # fmt: skip
    scored = predictions[:5] + predictions[6:]
    reference = read_jsonl(trained.run / "test_predictions.jsonl")
    # Without FT_PREDICT_ALL_SCORES a line has the shape of the training run's test predictions.
    assert [{k: v for k, v in p.items() if k not in ("id", "index", "score")} for p in scored] == [
        {k: v for k, v in r.items() if k not in ("index", "score")} for r in reference
    ]

    manifest = json.loads((out / PREDICT_MANIFEST).read_text())
    assert manifest["data"]["skipped_no_text"] == 1 and manifest["data"]["predicted"] == TEST_ROWS
    job_metrics = json.loads((trained.run / "metrics.json").read_text())["test"]
    assert manifest["metrics"]["rows"] == TEST_ROWS
    assert manifest["metrics"]["confusion_matrix"] == job_metrics["confusion_matrix"]
    assert summary["metric"] == "f1_macro" and summary["value"] == pytest.approx(job_metrics["f1_macro"])


@pytest.mark.slow
def test_model_from_s3_and_predictions_to_s3(make_settings, s3, bucket: str, trained: Trained, tmp_path: Path) -> None:
    upload_folder(s3, trained.run, bucket, "models/trained")
    data = write(tmp_path / "src" / "test.csv", [{"text": r["text"]} for r in trained.test_rows])
    upload_folder(s3, data.parent, bucket, "incoming")
    settings = make_settings(
        model=f"s3://{bucket}/models/trained", dataset=f"s3://{bucket}/incoming", output=f"s3://{bucket}/scores"
    )
    summary = predict(settings)
    assert summary["location"] == f"s3://{bucket}/scores/test-run/"

    published = objects(s3, bucket, "scores/test-run/")
    assert set(published) == {PREDICTIONS, PREDICT_MANIFEST, COMPLETE}
    lines = [json.loads(line) for line in published[PREDICTIONS].decode().splitlines()]
    reference = read_jsonl(trained.run / "test_predictions.jsonl")
    assert [p["label"] for p in lines] == [r["label"] for r in reference]
    assert json.loads(published[PREDICT_MANIFEST])["model"]["ref"] == f"s3://{bucket}/models/trained"
    assert predict(settings)["status"] == "already_complete"


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_multi_label_and_regression_heads_give_their_own_shape(
    make_settings, tmp_path: Path, tiny_model: Path, problem_type: str
) -> None:
    """An untrained head is enough to check the shape and the maths: pipeline() is the reference."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    names = LABELS if problem_type != "regression" else ("value",)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_model), num_labels=len(names), id2label=dict(enumerate(names)), problem_type=problem_type
    )
    folder = tmp_path / "classifier"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tiny_model)).save_pretrained(folder)
    texts = [r["text"] for r in rows("multiclass", 12, seed=3)]
    data = write(tmp_path / "rows.csv", [{"text": t} for t in texts])

    out = Path(predict(make_settings(model=str(folder), dataset=str(data)))["location"])
    predictions = read_jsonl(out / PREDICTIONS)
    reference = pipeline("text-classification", model=str(folder), device="cpu", top_k=None)(texts)
    tolerance = score_tolerance(json.loads((out / PREDICT_MANIFEST).read_text())["inference"]["precision"], "no")
    for p, expected in zip(predictions, reference, strict=True):
        scores = {e["label"]: e["score"] for e in expected}
        if problem_type == "regression":
            assert set(p) == {"index", "score"} and p["score"] == pytest.approx(scores["value"], abs=tolerance)
        else:
            assert list(p["scores"]) == list(LABELS)
            np.testing.assert_allclose([p["scores"][n] for n in LABELS], [scores[n] for n in LABELS], atol=tolerance)
            assert p["labels"] == [n for n in LABELS if p["scores"][n] > 0.5]


def not_a_classifier(tmp: Path, trained: Trained, base: Path) -> dict[str, str]:
    return {"FT_MODEL": str(base)}


def head_missing(tmp: Path, trained: Trained, base: Path) -> dict[str, str]:
    copy = Path(shutil.copytree(base, tmp / "claims-a-head"))
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "architectures": ["BertForSequenceClassification"]}))
    return {"FT_MODEL": str(copy)}


def no_text_column(tmp: Path, trained: Trained, base: Path) -> dict[str, str]:
    return {"FT_DATASET": str(write(tmp / "reviews.csv", [{"review": "a goal"}] * 3))}


def unknown_split(tmp: Path, trained: Trained, base: Path) -> dict[str, str]:
    return {"FT_PREDICT_SPLIT": "holdout"}


def unknown_id_column(tmp: Path, trained: Trained, base: Path) -> dict[str, str]:
    return {"FT_PREDICT_ID_COLUMN": "doc_id"}


def output_not_writable(tmp: Path, trained: Trained, base: Path) -> dict[str, str]:
    (tmp / "file").write_text("")
    # A model that would fail too: the output is checked first, before anything is loaded.
    return {"FT_OUTPUT": str(tmp / "file" / "predictions"), "FT_MODEL": str(tmp / "nope")}


CONFIG, DATA, STORAGE = ExitCode.CONFIG, ExitCode.DATA, ExitCode.STORAGE
BAD = {
    "model_does_not_exist": (
        lambda tmp, trained, base: {"FT_MODEL": str(tmp / "nope")},
        CONFIG,
        r"FT_MODEL='.*/nope' does not exist; point it at an existing local model",
    ),
    "base_model_not_a_classifier": (not_a_classifier, CONFIG, r"is a BertModel, not a sequence classifier"),
    "classifier_without_its_head": (head_missing, CONFIG, r"has no trained weights for classifier\.bias"),
    "missing_text_column": (
        no_text_column,
        DATA,
        r"column 'text' is not in split 'train' \(columns: review\); set FT_TEXT_COLUMN",
    ),
    "unknown_split": (unknown_split, DATA, r"split 'holdout' is not in dataset .* \(it has: train\); set FT_PREDICT_"),
    "unknown_id_column": (unknown_id_column, DATA, r"column 'doc_id' is not in split 'train' .*FT_PREDICT_ID_COLUMN"),
    "output_not_writable": (
        output_not_writable,
        STORAGE,
        r"FT_OUTPUT=.*/file/predictions: a part of the path is a file, not a folder",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_error_line_and_the_exit_code(  # noqa: PLR0917 (fixtures)
    case: str,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model: Path,
    trained: Trained,
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup, code, message = BAD[case]
    good = write(tmp_path / "good.csv", [{"text": r["text"]} for r in trained.test_rows])
    defaults = {"FT_OUTPUT": str(tmp_path / "predictions"), "FT_RUN_ID": "bad"}
    values = ft_env(tmp_path, trained.run, good, **{**defaults, **setup(tmp_path, trained, tiny_model)})
    for name, value in values.items():
        clean_env.setenv(name, value)

    assert cli.run(["predict"]) == code
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    errors = [e for e in events if e["level"] == "error"]
    assert len(errors) == 1 and errors[0]["exit_code"] == code and "\n" not in errors[0]["error"]
    assert re.search(message, errors[0]["error"]), errors[0]["error"]
    assert not list(tmp_path.rglob(COMPLETE))

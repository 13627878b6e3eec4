"""The whole job, in process, on the tiny model: one run per problem type."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from conftest import rows, score_tolerance, write
from transformers import pipeline

from job.errors import ConfigError, TrainingError
from job.files import sha256_of
from job.main import main
from job.storage import COMPLETE


def dataset_dir(tmp_path: Path, kind: str, n: int = 240, test: int = 40, suffix: str = ".jsonl") -> Path:
    folder = tmp_path / f"data-{kind}"
    write(folder / f"train{suffix}", rows(kind, n))
    if test:
        write(folder / f"test{suffix}", rows(kind, test, seed=99))
    return folder


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_binary_run_produces_a_complete_verified_model(make_settings, tmp_path: Path) -> None:
    settings = make_settings(dataset=str(dataset_dir(tmp_path, "binary", suffix=".csv")))
    summary = main(settings)
    run = Path(summary["location"])
    assert run == tmp_path / "outputs" / "test-run"

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["headline"]["metric"] == "f1_macro" and metrics["headline"]["value"] >= 0.9  # it learned
    validation = metrics["validation"]
    assert {"accuracy", "f1", "f1_macro", "f1_weighted", "precision", "recall", "mcc", "per_class"} <= set(validation)
    assert sum(map(sum, validation["confusion_matrix"]["matrix"])) == validation["rows"] == 24
    assert metrics["test"]["rows"] == 40 and metrics["test"]["accuracy"] >= 0.9

    config = json.loads((run / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"} and config["problem_type"] == "single_label_classification"
    assert (run / "model.safetensors").is_file() and not list(run.glob("*.bin"))
    assert (run / "tokenizer.json").is_file()
    # The run loaded the tokenizer offline; how it loaded it is not part of the published tokenizer.
    tokenizer_config = json.loads((run / "tokenizer_config.json").read_text())
    assert not {"local_files_only", "is_local", "cache_dir", "token"} & set(tokenizer_config)
    assert tokenizer_config["tokenizer_class"] and tokenizer_config["model_max_length"] == 64

    # Test predictions: one line per test row, in source order, and the saved model agrees.
    predictions = read_jsonl(run / "test_predictions.jsonl")
    assert [p["index"] for p in predictions] == list(range(40))
    texts = [r["text"] for r in rows("binary", 40, seed=99)]
    reloaded = pipeline("text-classification", model=str(run), device="cpu")(texts)
    assert [r["label"] for r in reloaded] == [p["label"] for p in predictions]
    precision = json.loads((run / "run_manifest.json").read_text())["training"]["precision"]  # the reload is fp32
    np.testing.assert_allclose(
        [r["score"] for r in reloaded], [p["score"] for p in predictions], atol=score_tolerance(precision, "no")
    )

    log = read_jsonl(run / "train_log.jsonl")
    progress = [entry for entry in log if "loss" in entry]
    assert progress[0]["step"] == 1 and {"epoch", "learning_rate", "grad_norm", "samples_per_second"} <= set(
        progress[0]
    )
    assert sum("eval_f1_macro" in entry for entry in log) == settings.epochs  # evaluated each epoch

    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["run_id"] == "test-run" and manifest["settings"]["FT_MODEL"] == settings.model
    assert manifest["verification"]["label_mismatches"] == 0 and manifest["verification"]["rows"] == 16
    assert manifest["environment"]["versions"]["transformers"]
    assert manifest["data"]["fingerprint"] and manifest["data"]["rows"] == {"train": 216, "validation": 24, "test": 40}
    assert 0 < manifest["training"]["padding_efficiency"] <= 1
    assert {"prepare", "train_and_evaluate", "verify", "to_first_step"} <= set(manifest["timings_s"])

    card = (run / "README.md").read_text()
    assert "| f1_macro |" in card and f'"text-classification", model="{run}",' in card

    complete = json.loads((run / COMPLETE).read_text())
    listed = {f["path"]: f for f in complete["files"]}
    assert set(listed) == {p.name for p in run.iterdir()} - {COMPLETE}
    assert listed["model.safetensors"]["sha256"] == sha256_of(run / "model.safetensors")
    assert not settings.run_work_dir().joinpath("checkpoints").exists()


def test_rerun_of_a_completed_run_id_is_a_no_op(make_settings, tmp_path: Path) -> None:
    settings = make_settings(dataset=str(dataset_dir(tmp_path, "binary", n=60, test=0)), epochs=1)
    main(settings)
    weights = settings.output + "/test-run/model.safetensors"
    before = sha256_of(Path(weights))
    assert main(settings)["status"] == "already_complete"
    assert sha256_of(Path(weights)) == before


def test_string_labels_and_renamed_columns(make_settings, tmp_path: Path) -> None:
    settings = make_settings(
        dataset=str(dataset_dir(tmp_path, "string")), text_column="review", label_column="sentiment"
    )
    run = Path(main(settings)["location"])
    config = json.loads((run / "config.json").read_text())
    assert config["label2id"] == {"neg": 0, "pos": 1}
    outputs = pipeline("text-classification", model=str(run), device="cpu")(
        ["the film was wonderful", "the film was awful"]
    )
    assert [o["label"] for o in outputs] == ["pos", "neg"]


def test_multiclass(make_settings, tmp_path: Path) -> None:
    settings = make_settings(dataset=str(dataset_dir(tmp_path, "multiclass")), epochs=10, learning_rate=5e-3)
    run = Path(main(settings)["location"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == ["politics", "sports", "tech"]
    assert metrics["validation"]["f1_macro"] >= 0.9
    assert len(metrics["validation"]["confusion_matrix"]["matrix"]) == 3
    assert {p["label"] for p in read_jsonl(run / "test_predictions.jsonl")} <= {"politics", "sports", "tech"}


def test_text_pairs(make_settings, tmp_path: Path) -> None:
    settings = make_settings(
        dataset=str(dataset_dir(tmp_path, "pairs")), text_column="sentence1", text_pair_column="sentence2"
    )
    run = Path(main(settings)["location"])
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["verification"]["rows"] == 16  # the reload check fed real pairs
    card = (run / "README.md").read_text()
    assert '"text_pair": ' in card
    pair = {"text": "the team won the match", "text_pair": "a goal for the team"}
    assert pipeline("text-classification", model=str(run), device="cpu")(pair)["label"] in {"0", "1"}


def test_multi_label(make_settings, tmp_path: Path) -> None:
    settings = make_settings(dataset=str(dataset_dir(tmp_path, "multilabel")), epochs=10, learning_rate=5e-3)
    run = Path(main(settings)["location"])
    config = json.loads((run / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["headline"]["metric"] == "f1_macro" and "subset_accuracy" in metrics["validation"]
    evals = [e["eval_loss"] for e in read_jsonl(run / "train_log.jsonl") if "eval_loss" in e]
    assert evals[-1] < evals[0] * 0.8  # it learned something
    prediction = read_jsonl(run / "test_predictions.jsonl")[0]
    assert set(prediction["scores"]) == {"politics", "sports", "tech"}
    assert set(prediction["labels"]) == {k for k, v in prediction["scores"].items() if v > 0.5}


def test_regression(make_settings, tmp_path: Path) -> None:
    settings = make_settings(dataset=str(dataset_dir(tmp_path, "regression")), epochs=10, learning_rate=2e-3)
    run = Path(main(settings)["location"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["problem_type"] == "regression" and metrics["headline"]["metric"] == "rmse"
    spread = statistics.pstdev(r["label"] for r in rows("regression", 240))
    assert metrics["validation"]["rmse"] < 0.6 * spread  # better than predicting the mean
    assert {"mse", "mae", "r2", "pearson", "spearman"} <= set(metrics["validation"])
    assert isinstance(read_jsonl(run / "test_predictions.jsonl")[0]["score"], float)


def test_early_stopping_ends_training_early(make_settings, tmp_path: Path) -> None:
    settings = make_settings(dataset=str(dataset_dir(tmp_path, "binary", test=0)), epochs=30, early_stopping_patience=2)
    run = Path(main(settings)["location"])
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["training"]["epochs"] < 30


def test_non_finite_loss_stops_the_run_and_publishes_nothing(make_settings, tmp_path: Path) -> None:
    # float32 cannot hold the squared error of a 1e30 target: the loss is inf at step 1.
    records = [{"text": r["text"], "label": 1e30} for r in rows("binary", 40)]
    settings = make_settings(dataset=str(write(tmp_path / "huge.jsonl", records)))
    with pytest.raises(TrainingError, match=r"training loss became (inf|nan) at step 1; lower FT_LEARNING_RATE"):
        main(settings)
    assert not (tmp_path / "outputs" / "test-run").exists()
    assert (settings.run_work_dir() / "model" / "train_log.jsonl").is_file()  # what was written is kept


def test_gradient_accumulation_divides_the_optimizer_steps(make_settings, tmp_path: Path) -> None:
    data = str(dataset_dir(tmp_path, "binary", n=120, test=0))
    plain = main(make_settings(dataset=data, epochs=2, run_id="plain"))
    accumulated = main(make_settings(dataset=data, epochs=2, gradient_accumulation_steps=2, run_id="accum"))
    steps = {}
    for name, summary in (("plain", plain), ("accum", accumulated)):
        steps[name] = json.loads((Path(summary["location"]) / "run_manifest.json").read_text())["training"]["steps"]
    batches = math.ceil(108 / 16)  # 120 rows less the 10% held out, batch 16
    assert steps == {"plain": 2 * batches, "accum": 2 * math.ceil(batches / 2)}


def test_max_length_beyond_the_model_limit_is_refused(make_settings, tmp_path: Path) -> None:
    settings = make_settings(dataset=str(dataset_dir(tmp_path, "binary", n=40, test=0)), max_length=100)
    with pytest.raises(ConfigError, match="FT_MAX_LENGTH=100 is beyond the model's limit of 64 tokens"):
        main(settings)


def test_the_best_checkpoint_is_published_not_the_last(make_settings, tmp_path: Path) -> None:
    # A constant, too-high learning rate makes evaluation scores go up and down. In fp32, so the
    # trajectory is the same on every CPU kind (bf16 on AMX machines reached its best at the end).
    settings = make_settings(
        dataset=str(dataset_dir(tmp_path, "multiclass", test=0)),
        epochs=8,
        learning_rate=0.01,
        lr_scheduler="constant",
        mixed_precision="no",
    )
    run = Path(main(settings)["location"])
    evals = [e["eval_f1_macro"] for e in read_jsonl(run / "train_log.jsonl") if "eval_f1_macro" in e]
    assert max(evals) > evals[-1]  # otherwise this run cannot tell best from last
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["headline"]["value"] == pytest.approx(max(evals), abs=1e-9)

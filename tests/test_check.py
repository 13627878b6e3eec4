"""`python -m job check`: the dry run fails where and how the run would (same error line,
same exit code), reports the data as written, and leaves nothing in FT_OUTPUT or
FT_CHECKPOINT_DIR."""

from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ft_env, rows, run_cli, write
from hub_standin import HubStandIn
from s3_helpers import objects

from job.check import IMBALANCE_RATIO, TRUNCATION_SHARE, check
from job.errors import ExitCode, StorageError


def run_job(
    tmp_path: Path, tiny_model: Path, *command: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list]:
    defaults = {"FT_OUTPUT": str(tmp_path / "new" / "outputs"), "FT_RUN_ID": "check-run", "FT_EPOCHS": "2"}
    settings = ft_env(tmp_path, tiny_model, **{**defaults, "FT_BATCH_SIZE": "16", **env})
    return run_cli(*command, env=settings, cwd=tmp_path)


def token_lengths(tiny_model: Path, records: list[dict[str, Any]]) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    return np.asarray([len(tokenizer(r["text"])["input_ids"]) for r in records])


def test_check_reports_the_data_as_written_and_writes_nothing(tmp_path: Path, tiny_model: Path) -> None:
    pool = rows("binary", 400)
    train = [r for r in pool if r["label"] == 1][:110] + [r for r in pool if r["label"] == 0][:10]
    validation, test = rows("binary", 40, seed=1), rows("binary", 30, seed=2)
    folder = tmp_path / "d"
    write(folder / "train.csv", train)
    write(folder / "validation.csv", validation)
    write(folder / "test.csv", test)
    max_length = 12
    lengths = token_lengths(tiny_model, train)
    # The data must exercise the count: rows cut, and rows exactly at the limit that are not.
    assert (lengths > max_length).any() and (lengths == max_length).any()

    # Truncation, so the plan counts one row per text (test_windows.py checks windows).
    result, events = run_job(
        tmp_path, tiny_model, "check", FT_DATASET=str(folder), FT_MAX_LENGTH=str(max_length), FT_LONG_TEXTS="truncate"
    )

    assert result.returncode == ExitCode.OK, result.stdout[-3000:] + result.stderr[-3000:]
    assert not [e for e in events if e["level"] == "error"]
    found = {e["event"]: e for e in events if e["event"].startswith("check.")}
    assert found["check.data"]["rows"] == {"train": 120, "validation": 40, "test": 30}
    counts = found["check.labels"]["counts"]
    assert counts["train"] == {"0": 10, "1": 110}
    assert counts["validation"] == {str(k): v for k, v in sorted(Counter(r["label"] for r in validation).items())}

    per_split = {e["split"]: e for e in events if e["event"] == "check.lengths"}
    assert set(per_split) == {"train", "validation", "test"}
    for split, records in (("train", train), ("validation", validation), ("test", test)):
        expected = token_lengths(tiny_model, records)
        report = per_split[split]
        assert report["truncated"] == int((expected > max_length).sum()), split
        assert report["max"] == int(expected.max()) and report["max_length"] == max_length
        assert report["p50"] == int(np.percentile(expected, 50, method="higher"))
        assert report["p99"] == int(np.percentile(expected, 99, method="higher"))

    plan = found["check.plan"]
    assert plan["steps_per_epoch"] == math.ceil(120 / 16) and plan["total_steps"] == 2 * math.ceil(120 / 16)
    assert plan["effective_batch_size"] == 16 and plan["world_size"] == 1 and plan["evaluations"] == 2
    estimate = found["check.estimate"]
    assert estimate["device"] == "cpu" and estimate["seconds_per_step"] > 0
    assert estimate["total_s"] >= estimate["train_s"] and "estimate" in estimate["basis"]

    assert IMBALANCE_RATIO <= 110 / 10
    # 11:1 in training: the default (auto) tunes the cut on label 1's probability.
    assert {k: found["check.thresholds"][k] for k in ("setting", "tuned_on_validation", "at_0_5")} == {
        "setting": "auto",
        "tuned_on_validation": ["1"],
        "at_0_5": [],
    }
    expected_warnings = {"check.label_imbalance"}
    if (lengths > max_length).sum() >= TRUNCATION_SHARE * len(train):
        expected_warnings.add("check.truncation")
    assert set(events[-1]["warnings"]) == expected_warnings
    assert events[-1]["event"] == "check.passed" and events[-1]["estimated_total_s"] == estimate["total_s"]

    assert not (tmp_path / "new").exists()  # FT_OUTPUT's missing folders were created to test, then removed
    assert not (tmp_path / "cache" / "checkpoints").exists()
    assert "it/s]" not in result.stderr and "%|" not in result.stderr


def _missing_dataset(tmp_path: Path) -> dict[str, str]:
    return {"FT_DATASET": str(tmp_path / "no-such-data")}


def _missing_label_column(tmp_path: Path) -> dict[str, str]:
    data = write(tmp_path / "d" / "train.csv", rows("string", 40))
    return {"FT_DATASET": str(data.parent), "FT_TEXT_COLUMN": "review"}


def _unwritable_output(tmp_path: Path) -> dict[str, str]:
    data = write(tmp_path / "d" / "train.csv", rows("binary", 40))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return {"FT_DATASET": str(data.parent), "FT_OUTPUT": str(blocker / "outputs")}


@pytest.mark.parametrize(
    ("make_env", "code", "event"),
    [
        (_missing_dataset, ExitCode.CONFIG, "config.invalid"),
        (_missing_label_column, ExitCode.DATA, "data.invalid"),
        (_unwritable_output, ExitCode.STORAGE, "storage.failed"),
    ],
    ids=["missing-dataset", "missing-label-column", "unwritable-output"],
)
def test_check_fails_with_the_runs_error_line_and_exit_code(
    tmp_path: Path, tiny_model: Path, make_env: Any, code: ExitCode, event: str
) -> None:
    env = make_env(tmp_path)
    checked, check_events = run_job(tmp_path, tiny_model, "check", **env)
    assert not (tmp_path / "new").exists()
    ran, run_events = run_job(tmp_path, tiny_model, **env)

    check_errors = [e for e in check_events if e["level"] == "error"]
    run_errors = [e for e in run_events if e["level"] == "error"]
    assert checked.returncode == ran.returncode == code, checked.stdout[-2000:] + ran.stdout[-2000:]
    assert len(check_errors) == len(run_errors) == 1
    assert check_errors[0]["event"] == run_errors[0]["event"] == event
    assert check_errors[0]["error"] == run_errors[0]["error"]
    assert not any(e["event"] == "check.passed" for e in check_events)


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_carved_validation_lengths_add_up_to_the_source(make_settings, tmp_path: Path, tiny_model: Path, kind) -> None:
    records = rows(kind, 90)
    data = write(tmp_path / "d" / "train.jsonl", records)
    summary = check(make_settings(dataset=str(data.parent), max_length=10, epochs=1))

    assert summary["rows"]["train"] + summary["rows"]["validation"] == 90
    expected = token_lengths(tiny_model, records)
    cut = summary["lengths"]["train"]["truncated"] + summary["lengths"]["validation"]["truncated"]
    assert cut == int((expected > 10).sum()) > 0
    if kind == "regression":
        targets = summary["labels"]["targets"]
        assert min(targets["train"]["min"], targets["validation"]["min"]) == min(r["label"] for r in records)
        assert max(targets["train"]["max"], targets["validation"]["max"]) == max(r["label"] for r in records)
    else:
        counts = summary["labels"]["counts"]
        assert sum(counts["train"].values()) + sum(counts["validation"].values()) == 90
        assert "check.label_imbalance" not in summary["warnings"]
    assert not (tmp_path / "outputs").exists()


def test_s3_output_and_checkpoints_are_probed_and_left_empty(make_settings, s3, bucket: str, tmp_path: Path) -> None:
    data = write(tmp_path / "d" / "train.csv", rows("binary", 60))
    settings = make_settings(
        dataset=str(data.parent), output=f"s3://{bucket}/runs", checkpoint_dir=f"s3://{bucket}/checkpoints", epochs=1
    )
    assert check(settings)["status"] == "passed"
    assert objects(s3, bucket, "") == {}

    missing = make_settings(dataset=str(data.parent), output=f"s3://{bucket}-missing/runs")
    with pytest.raises(StorageError, match=f"bucket '{bucket}-missing' does not exist"):
        check(missing)


@pytest.fixture
def hub(clean_env: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    import huggingface_hub.constants

    with HubStandIn() as server:
        clean_env.setenv("HF_ENDPOINT", server.url)
        clean_env.delenv("HF_HUB_OFFLINE")  # the stand-in is local
        clean_env.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield server


def test_hub_rights_are_checked_without_creating_the_repo(make_settings, hub: HubStandIn, tmp_path: Path) -> None:
    data = write(tmp_path / "d" / "train.csv", rows("binary", 60))
    reader = make_settings(dataset=str(data.parent), output="hf://acme/m", hf_token="hf_reader")
    with pytest.raises(StorageError, match=r"token may not write to acme/m \(a read-only token\)"):
        check(reader)

    writer = make_settings(dataset=str(data.parent), output="hf://acme/m", hf_token="hf_writer", epochs=1)
    assert check(writer)["status"] == "passed"
    assert hub.state.repos == {} and not [r for r in hub.state.requests if r.startswith("POST")]


def test_the_estimate_predicts_the_runs_training_time(make_settings, tmp_path: Path) -> None:
    from job.main import main

    data = write(tmp_path / "d" / "train.jsonl", rows("binary", 240))
    # Enough steps (15 a epoch) that the run's step time, not its fixed costs, is measured.
    settings = make_settings(dataset=str(data.parent), epochs=12, charts=False)
    estimate = check(settings)["estimate"]
    run = Path(main(settings)["location"])
    training = json.loads((run / "run_manifest.json").read_text())["training"]
    stepping = training["train_runtime_s"] - training["in_loop_evaluation_s"] - training["in_loop_checkpoint_s"]
    # An estimate from 3 timed steps on a shared 2-core machine: the right size, not to the percent.
    assert stepping / 3 <= estimate["train_s"] <= stepping * 3, (estimate, training)


def test_a_search_is_counted_in_the_estimate(make_settings, tmp_path: Path) -> None:
    data = write(tmp_path / "d" / "train.jsonl", rows("binary", 200))
    # Many epochs cost the check nothing (it times 3 steps) and make the estimates long,
    # so their rounding to 0.1 s does not matter.
    plain = check(make_settings(dataset=str(data.parent), epochs=50))["estimate"]
    searched = check(make_settings(dataset=str(data.parent), epochs=50, search_trials=3, search_epochs="1,100"))
    estimate = searched["estimate"]
    assert plain["search_trials"] == 0 and plain["search_s_at_most"] == 0
    # At most 3 trials of 100 epochs: 6 runs of the 50-epoch plan, which the total includes.
    per_run = estimate["train_s"] + estimate["evaluation_s"]
    assert estimate["search_s_at_most"] == pytest.approx(6 * per_run, rel=0.05)
    assert estimate["total_s"] == pytest.approx(per_run + estimate["test_s"] + estimate["search_s_at_most"], rel=0.05)

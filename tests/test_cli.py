"""The real entrypoint in a subprocess: JSON logs, exit codes, the summary."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ft_env, rows, run_cli, write

from job import cli
from job.errors import ExitCode


def run_job(tmp_path: Path, tiny_model: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    defaults = {"FT_RUN_ID": "cli-run", "FT_EPOCHS": "2", "FT_BATCH_SIZE": "16", "FT_LEARNING_RATE": "3e-3"}
    settings = ft_env(tmp_path, tiny_model, **{**defaults, "FT_LOGGING_STEPS": "5", **env})
    return run_cli(env=settings, cwd=tmp_path)


def test_successful_run_logs_only_json_with_progress_and_summary(tmp_path: Path, tiny_model: Path) -> None:
    data = write(tmp_path / "d" / "train.csv", rows("binary", 120))
    result, events = run_job(tmp_path, tiny_model, FT_DATASET=str(data.parent))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert all(e["run_id"] == "cli-run" and e["rank"] == 0 for e in events)
    progress = [e for e in events if e["event"] == "train.progress"]
    assert progress and {"step", "epoch", "loss", "learning_rate", "samples_per_second", "eta_seconds"} <= set(
        progress[-1]
    )
    summary = events[-1]
    assert summary["event"] == "run.completed" and summary["location"] == str(tmp_path / "outputs" / "cli-run")
    assert summary["metrics"].endswith("metrics.json") and summary["headline_metric"] == "f1_macro"
    assert "it/s]" not in result.stderr and "%|" not in result.stderr  # no progress bars


def test_data_error_exits_3_with_one_error_event(tmp_path: Path, tiny_model: Path) -> None:
    data = write(tmp_path / "d" / "train.csv", rows("string", 40))
    result, events = run_job(tmp_path, tiny_model, FT_DATASET=str(data.parent))
    assert result.returncode == ExitCode.DATA == 3
    errors = [e for e in events if e["level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "data.invalid"
    assert (
        "column 'text' is not in split 'train' (columns: review, sentiment); set FT_TEXT_COLUMN" in errors[0]["error"]
    )
    assert not (tmp_path / "outputs" / "cli-run").exists()


def test_model_that_does_not_exist_exits_2(tmp_path: Path, tiny_model: Path) -> None:
    data = write(tmp_path / "d" / "train.csv", rows("binary", 40))
    result, events = run_job(tmp_path, tiny_model, FT_DATASET=str(data.parent), FT_MODEL=str(tmp_path / "nope"))
    assert result.returncode == ExitCode.CONFIG
    assert events[-1]["error"].startswith(f"FT_MODEL='{tmp_path / 'nope'}' does not exist")


def test_non_finite_loss_exits_4(tmp_path: Path, tiny_model: Path) -> None:
    data = write(tmp_path / "huge.jsonl", [{"text": r["text"], "label": 1e30} for r in rows("binary", 40)])
    result, events = run_job(tmp_path, tiny_model, FT_DATASET=str(data))
    assert result.returncode == ExitCode.TRAINING == 4
    assert events[-1]["event"] == "training.failed" and "loss became" in events[-1]["error"]


def test_unexpected_errors_exit_1_with_a_traceback_event(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch
) -> None:
    # The crash handler is what is under test, so the failure is injected into main.
    import job.main

    def explode(settings: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(job.main, "main", explode)
    for key, value in {"FT_MODEL": "m", "FT_DATASET": "d", "FT_LOG_FORMAT": "json"}.items():
        clean_env.setenv(key, value)
    assert cli.run([]) == ExitCode.INTERNAL == 1
    (event,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert event["event"] == "run.crashed" and event["exit_code"] == 1
    assert event["exception"][0]["exc_value"] == "disk on fire"

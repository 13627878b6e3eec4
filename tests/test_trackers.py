"""FT_REPORT_TO: TensorBoard event files hold what the run logged and are published with
the model, also after a resume; a missing or unknown tracker is one config error line;
trackers' credentials are masked like every other secret."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_environ, ft_env, rows, write

from job import cli, trackers
from job.artifacts import TRAIN_LOG
from job.config import secret_values
from job.errors import ConfigError, ExitCode
from job.logs import configure_logging, get_logger
from job.main import main
from job.storage import COMPLETE


def scalars(folder: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def logged(run: Path, key: str) -> dict[int, float]:
    lines = [json.loads(line) for line in (run / TRAIN_LOG).read_text().splitlines()]
    return {line["step"]: line[key] for line in lines if key in line}


def assert_same_series(events: dict[int, float], log: dict[int, float]) -> None:
    assert events.keys() == log.keys()
    assert all(events[step] == pytest.approx(log[step], rel=1e-6) for step in log)


@pytest.mark.slow
def test_tensorboard_events_hold_the_logged_losses_and_are_published(make_settings, tmp_path: Path) -> None:
    data = write(tmp_path / "data" / "train.jsonl", rows("binary", 120)).parent
    summary = main(make_settings(dataset=str(data), epochs=2, logging_steps=2, report_to="tensorboard"))
    run = Path(summary["location"])

    board = run / trackers.TENSORBOARD_DIR
    assert list(board.glob("events.out.tfevents.*"))
    assert len(logged(run, "loss")) > 3 and len(logged(run, "eval_loss")) == 2
    assert_same_series(scalars(board, "train/loss"), logged(run, "loss"))
    assert_same_series(scalars(board, "eval/loss"), logged(run, "eval_loss"))
    assert_same_series(scalars(board, "eval/f1_macro"), logged(run, "eval_f1_macro"))

    published = {f["path"] for f in json.loads((run / COMPLETE).read_text())["files"]}
    assert any(path.startswith(f"{trackers.TENSORBOARD_DIR}/events.out.tfevents.") for path in published)
    assert f"tensorboard --logdir {trackers.TENSORBOARD_DIR}" in (run / "README.md").read_text()
    assert json.loads((run / "run_manifest.json").read_text())["settings"]["FT_REPORT_TO"] == ["tensorboard"]


@pytest.mark.slow
def test_a_resumed_run_publishes_tensorboard_events_of_the_whole_run(tmp_path: Path, tiny_model: Path) -> None:
    data = write(tmp_path / "data" / "train.jsonl", rows("binary", 100, seed=3)).parent
    env = {
        **clean_environ(),
        **ft_env(
            tmp_path, tiny_model, data, FT_RUN_ID="resumed", FT_EPOCHS="2", FT_BATCH_SIZE="8", FT_LOGGING_STEPS="4",
            FT_REPORT_TO="tensorboard",
        ),
    }  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "job"], env=env, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    for line in first.stdout:
        event = json.loads(line)
        if event["event"] == "train.progress" and event["step"] >= 6:
            first.send_signal(signal.SIGTERM)
            break
    first.communicate(timeout=300)
    assert first.returncode == ExitCode.PREEMPTED

    second = subprocess.run(
        [sys.executable, "-m", "job"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stdout[-3000:]
    assert '"train.resumed"' in second.stdout
    run = tmp_path / "outputs" / "resumed"
    losses = logged(run, "loss")
    assert min(losses) == 1 and max(losses) > 15  # both attempts: 24 steps, stopped after 6
    assert_same_series(scalars(run / trackers.TENSORBOARD_DIR, "train/loss"), losses)
    assert_same_series(scalars(run / trackers.TENSORBOARD_DIR, "eval/loss"), logged(run, "eval_loss"))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_tracker_that_is_not_installed_stops_the_job_before_any_work(tmp_path: Path, tiny_model: Path) -> None:
    env = {
        **clean_environ(),
        **ft_env(tmp_path, tiny_model, tmp_path / "no-data-needed", FT_REPORT_TO="tensorboard,wandb"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "job"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == ExitCode.CONFIG, result.stdout[-2000:] + result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    (error,) = [event for event in events if event["level"] == "error"]
    assert error["event"] == "config.invalid"
    assert error["error"].startswith("FT_REPORT_TO=tensorboard,wandb needs wandb, which is not installed")
    assert "pip install 'ftjob[wandb]'" in error["error"]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "cache").exists()


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_every_missing_tracker_is_named(make_settings) -> None:
    with pytest.raises(ConfigError, match=r"pip install 'ftjob\[mlflow\]'"):
        trackers.check_available(make_settings(dataset="d", report_to="mlflow,tensorboard"))
    trackers.check_available(make_settings(dataset="d", report_to="tensorboard"))  # installed: no error


def test_an_unknown_tracker_is_one_error_line(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in {
        "FT_MODEL": "m",
        "FT_DATASET": "d",
        "FT_LOG_FORMAT": "json",
        "FT_REPORT_TO": "tensorbord",
    }.items():
        clean_env.setenv(key, value)
    assert cli.run([]) == ExitCode.CONFIG
    (line,) = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert event["event"] == "config.invalid"
    assert event["error"] == (
        "FT_REPORT_TO='tensorbord' is invalid; expected comma-separated tracker names: tensorboard, mlflow, wandb "
        "(or none)"
    )


def test_none_or_blank_reports_nowhere(make_settings) -> None:
    assert make_settings(dataset="d", report_to="none").report_to is None
    assert make_settings(dataset="d", report_to="").report_to is None
    settings = make_settings(dataset="d", report_to="WandB, tensorboard,wandb")
    assert settings.report_to == ["wandb", "tensorboard"]
    assert trackers.report_to(settings) == ["wandb"]  # TensorBoard comes as our own callback


def test_tracker_credentials_are_masked_but_reach_the_workers(
    make_settings, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from job.launch import _worker_environment

    wandb_key, mlflow_password = "wandb-key-0123456789abcdef", "mlflow-password-0123"
    clean_env.setenv("WANDB_API_KEY", wandb_key)
    clean_env.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_password)
    clean_env.setenv("HF_TOKEN", "hf_PlantedToken0123456789")
    configure_logging(log_format="json", secrets=secret_values(None))
    get_logger("job.test").error("tracker.failed", error=f"401 for key {wandb_key} and password {mlflow_password}")
    out = capsys.readouterr().out
    assert "401 for key" in out and wandb_key not in out and mlflow_password not in out

    env = _worker_environment(make_settings(dataset="d", report_to="wandb"))
    assert env["WANDB_API_KEY"] == wandb_key  # rank 0, a worker, reports
    assert "HF_TOKEN" not in env

"""Preemption: the real entrypoint in a subprocess, stopped with SIGTERM (or killed) at
several points, then started again with the same run id. Each attempt resumes from
the last complete checkpoint and the run ends where an uninterrupted one does; no
output is ever marked complete while partial.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_environ, ft_env, rows, write

from job.errors import ExitCode
from job.files import sha256_of

pytestmark = pytest.mark.slow

Event = dict[str, Any]


def job_env(root: Path, tiny_model: Path, data: Path, **env: str) -> dict[str, str]:
    defaults = {"FT_RUN_ID": "preempted", "FT_EPOCHS": "2", "FT_BATCH_SIZE": "8", "FT_LEARNING_RATE": "3e-3"}
    settings = ft_env(root, tiny_model, data, **{**defaults, "FT_LOGGING_STEPS": "1", "FT_SAVE_STEPS": "10", **env})
    return {**clean_environ(keep_aws=True), **settings}


def attempt(
    env: dict[str, str], stop_when: Callable[[Event], bool] | None = None, sig: int = signal.SIGTERM
) -> tuple[int, list[Event], int | None]:
    """Run the job; send `sig` after the first event matching `stop_when`.
    Returns the exit code, the events and the index of that event."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "job"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    events: list[Event] = []
    sent_at = None
    assert proc.stdout is not None
    for line in proc.stdout:
        events.append(json.loads(line))
        if sent_at is None and stop_when is not None and stop_when(events[-1]):
            proc.send_signal(sig)
            sent_at = len(events) - 1
    stderr = proc.stderr.read() if proc.stderr else ""
    returncode = proc.wait(timeout=300)
    assert returncode in (0, ExitCode.PREEMPTED) or sig == signal.SIGKILL, stderr[-3000:]
    return returncode, events, sent_at


def assert_never_partial_and_complete(run: Path) -> None:
    """Whenever the completion manifest exists, every file it lists is there, whole."""
    manifest = run / "_COMPLETE.json"
    if manifest.is_file():
        for entry in json.loads(manifest.read_text())["files"]:
            assert sha256_of(run / entry["path"]) == entry["sha256"], entry["path"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Enough rows for hundreds of steps, so a signal lands mid-epoch; a large validation
    # split scored one row at a time, so one lands mid-evaluation.
    folder = tmp_path_factory.mktemp("data")
    write(folder / "train.jsonl", rows("binary", 1600, seed=1))
    write(folder / "validation.jsonl", rows("binary", 600, seed=2))
    return folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, dataset: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("uninterrupted")
    code, _, _ = attempt(job_env(root, tiny_model, dataset))
    assert code == 0
    return json.loads((root / "outputs" / "preempted" / "metrics.json").read_text())


def progress_at(step: int) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "train.progress" and e["step"] >= step


POINTS = {
    "early": progress_at(1),
    "mid_epoch": progress_at(37),
    # The last step of epoch 1 is logged just before its evaluation starts.
    "during_evaluation": lambda e: e["event"] == "train.progress" and e["epoch"] >= 1.0,
}


@pytest.mark.parametrize("point", list(POINTS))
def test_sigterm_saves_a_checkpoint_and_the_restart_finishes_the_same_run(
    tmp_path: Path, tiny_model: Path, dataset: Path, uninterrupted: dict[str, Any], point: str
) -> None:
    slow_evaluation = {"FT_EVAL_BATCH_SIZE": "1"} if point == "during_evaluation" else {}
    env = job_env(tmp_path, tiny_model, dataset, **slow_evaluation)
    code, events, sent_at = attempt(env, POINTS[point])
    assert sent_at is not None and code == ExitCode.PREEMPTED
    names = [e["event"] for e in events]
    assert names[-1] == "run.preempted" and "run again with FT_RUN_ID=preempted" in events[-1]["error"]
    saved = [e for e in events if e["event"] == "checkpoint.saved"]
    stopped_at = saved[-1]["step"]
    # Stops soon after the signal (how many steps later depends on how busy the machine is).
    assert events[sent_at]["step"] <= stopped_at < uninterrupted["train"]["steps"]
    if point == "during_evaluation":
        # The signal arrived before that evaluation finished; it completed, then the stop.
        first_eval = names.index("eval.completed")
        assert names.index("run.stop_requested") < first_eval and sent_at < first_eval
    run = tmp_path / "outputs" / "preempted"
    assert not run.exists()  # nothing published, not even partially

    code, events, _ = attempt(env)
    assert code == 0
    resumed = next(e for e in events if e["event"] == "train.resumed")
    assert resumed["step"] == stopped_at
    assert_never_partial_and_complete(run)
    final = json.loads((run / "metrics.json").read_text())
    assert final["train"]["steps"] == uninterrupted["train"]["steps"]
    assert abs(final["validation"]["accuracy"] - uninterrupted["validation"]["accuracy"]) <= 0.05
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == final["train"]["steps"]  # the whole history, once


def test_killed_during_publish_is_never_complete_and_the_restart_publishes(
    tmp_path: Path, tiny_model: Path, dataset: Path
) -> None:
    env = job_env(tmp_path, tiny_model, dataset, FT_EPOCHS="1")
    code, events, sent_at = attempt(env, lambda e: e["event"] == "verify.passed", sig=signal.SIGKILL)
    assert sent_at is not None and code == -signal.SIGKILL
    run = tmp_path / "outputs" / "preempted"
    assert_never_partial_and_complete(run)
    code, events, _ = attempt(env)
    assert code == 0 and events[-1]["event"] in ("run.completed", "run.already_complete")
    assert_never_partial_and_complete(run)
    assert (run / "_COMPLETE.json").is_file()
    # Published: the checkpoints are gone with the scratch space.
    assert not any((tmp_path / "cache" / "checkpoints").glob("preempted/checkpoint-*"))


def test_checkpoints_in_s3_resume_on_a_fresh_machine(
    tmp_path: Path, tiny_model: Path, dataset: Path, s3: Any, bucket: str
) -> None:
    env = job_env(tmp_path, tiny_model, dataset, FT_CHECKPOINT_DIR=f"s3://{bucket}/checkpoints")
    code, events, _ = attempt(env, progress_at(25))
    assert code == ExitCode.PREEMPTED
    stopped_at = [e for e in events if e["event"] == "checkpoint.saved"][-1]["step"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="checkpoints/preempted/")["Contents"]]
    assert f"checkpoints/preempted/checkpoint-{stopped_at}/ftjob-checkpoint.json" in keys

    shutil.rmtree(tmp_path / "cache")  # a new pod: nothing local survives
    code, events, _ = attempt(env)
    assert code == 0
    assert next(e for e in events if e["event"] == "train.resumed")["step"] == stopped_at
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="checkpoints/preempted/")  # cleaned up


def test_two_ranks_stop_at_the_same_step_when_only_the_launcher_is_signalled(
    tmp_path: Path, tiny_model: Path, dataset: Path
) -> None:
    # As on Kubernetes: SIGTERM reaches the container's first process alone.
    env = job_env(tmp_path, tiny_model, dataset, FT_PROCS_PER_NODE="2", FT_EPOCHS="1")
    code, events, _ = attempt(env, progress_at(20))
    assert code == ExitCode.PREEMPTED
    saved = [e for e in events if e["event"] == "checkpoint.saved"]
    preempted = [e for e in events if e["event"] == "run.preempted"]
    assert {e["rank"] for e in preempted} >= {0, 1}  # both workers stopped on request
    stopped_at = saved[-1]["step"]
    code, events, _ = attempt(env)
    assert code == 0
    assert next(e for e in events if e["event"] == "train.resumed")["step"] == stopped_at
    metrics = json.loads((tmp_path / "outputs" / "preempted" / "metrics.json").read_text())
    assert metrics["train"]["steps"] == -(-1600 // (2 * 8))

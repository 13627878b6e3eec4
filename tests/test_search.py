"""Hyperparameter search: real trials of the tiny model through the real entrypoint, the
best values carried into the final run and its record, resume after SIGTERM on a fresh
machine, and the refusals (bad ranges, several nodes, no optuna)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PINNED_SCHEDULE, clean_environ, ft_env, rows, run_cli, write

from job import cli
from job.errors import ConfigError, ExitCode
from job.main import main

Event = dict[str, Any]

SEARCH = {
    "FT_SEARCH_TRIALS": "3",
    "FT_SEARCH_LEARNING_RATE": "3e-3,3e-2",
    "FT_SEARCH_BATCH_SIZE": "8,16",
    "FT_SEARCH_EPOCHS": "1,2",
    "FT_SEARCH_WARMUP_RATIO": "0,0.1",
    "FT_SEARCH_WEIGHT_DECAY": "0,0.1",
}
SETTING = {
    "learning_rate": "FT_LEARNING_RATE",
    "batch_size": "FT_BATCH_SIZE",
    "epochs": "FT_EPOCHS",
    "warmup_ratio": "FT_WARMUP_RATIO",
    "weight_decay": "FT_WEIGHT_DECAY",
}


def job_env(root: Path, tiny_model: Path, data: Path, **env: str) -> dict[str, str]:
    return {**clean_environ(keep_aws=True), **settings_env(root, tiny_model, data, **env)}


def settings_env(root: Path, tiny_model: Path, data: Path, **env: str) -> dict[str, str]:
    return ft_env(root, tiny_model, data, **{"FT_LOGGING_STEPS": "5", "HF_HUB_OFFLINE": "1", **SEARCH, **env})


def attempt(env: dict[str, str], stop_when: Callable[[Event], bool] | None = None) -> tuple[int, list[Event], str]:
    """Run the job; SIGTERM after the first event matching `stop_when`. Exit code, events, stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "job"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    events: list[Event] = []
    sent = False
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        events.append(json.loads(line))  # fails on any line that is not JSON (Optuna's own output)
        if not sent and stop_when is not None and stop_when(events[-1]):
            proc.send_signal(signal.SIGTERM)
            sent = True
    stderr = proc.stderr.read()
    code = proc.wait(timeout=300)
    assert code in (0, ExitCode.PREEMPTED), stderr[-3000:] + json.dumps(events[-3:])
    assert stop_when is None or sent
    return code, events, stderr


def named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e["event"] == name]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    # Just enough steps for the trials to score differently.
    write(folder / "train.jsonl", rows("binary", 160, seed=1))
    write(folder / "validation.jsonl", rows("binary", 40, seed=2))
    return folder


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, dataset: Path) -> tuple[Path, list[Event]]:
    """The job through its CLI, in this process (no interpreter start-up): three trials, then the final run."""
    root = tmp_path_factory.mktemp("searched")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(out):
        for name in [n for n in os.environ if n.startswith("FT_") or n == "HF_TOKEN"]:
            env.delenv(name)
        for name, value in settings_env(root, tiny_model, dataset, FT_RUN_ID="searched").items():
            env.setenv(name, value)
        env.chdir(root)
        code = cli.run([])
    events = [json.loads(line) for line in out.getvalue().splitlines()]  # fails on any line that is not JSON
    assert code == 0, events[-3:]
    return root, events


@pytest.mark.slow
def test_every_trial_is_logged_and_the_best_values_train_the_final_model(searched: tuple[Path, list[Event]]) -> None:
    root, events = searched
    trials = named(events, "search.trial")
    assert [t["number"] for t in trials] == [0, 1, 2]
    for trial in trials:
        params = trial["params"]
        assert trial["state"] == "complete" and 0 <= trial["value"] <= 1 and trial["seconds"] > 0
        assert 3e-3 <= params["learning_rate"] <= 3e-2 and params["batch_size"] in (8, 16)
        assert params["epochs"] in (1, 2) and 0 <= params["warmup_ratio"] <= 0.1 and 0 <= params["weight_decay"] <= 0.1
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 3  # three different proposals
    best = max(trials, key=lambda t: t["value"])  # f1_macro: higher is better
    completed = named(events, "search.completed")[0]
    assert completed["best_trial"] == best["number"] and completed["best_params"] == best["params"]

    # Each trial trained on its own; the final run once more, with the best values.
    started = named(events, "train.started")
    assert [e.get("search_trial") for e in started] == [0, 1, 2, None]
    final = started[-1]
    assert final["batch_size"] == best["params"]["batch_size"] and final["epochs"] == best["params"]["epochs"]
    assert events.index(completed) < events.index(final)

    run = root / "outputs" / "searched"
    manifest = json.loads((run / "run_manifest.json").read_text())
    record = manifest["search"]
    assert record["best"] == {"number": best["number"], "params": best["params"], "value": best["value"]}
    assert [t["params"] for t in record["trials"]] == [t["params"] for t in trials]
    assert record["metric"] == "f1_macro" and record["direction"] == "maximize" and record["seed"] == 42
    for name, value in best["params"].items():
        assert manifest["settings"][SETTING[name]] == value, name
    assert manifest["training"]["epochs"] == best["params"]["epochs"]
    assert "search" in manifest["timings_s"]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert sum("eval_f1_macro" in entry for entry in log) == best["params"]["epochs"]  # one evaluation per epoch
    lines = (run / "search_trials.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == record["trials"]

    card = (run / "README.md").read_text()
    section = card.split("## Hyperparameter search", 1)[1]
    assert f"| **{best['number']}** (best) |" in section and f"{best['value']:.4f}" in section
    assert sum(line.startswith(("| 0 |", "| 1 |", "| 2 |", "| **")) for line in section.splitlines()) == 3
    assert f"| batch size | 8, 16 | {best['params']['batch_size']} |" in section

    # Trials checkpoint in their scratch folders, the final run in the run's checkpoint home;
    # both are gone once the run is published.
    for saved in named(events, "checkpoint.saved"):
        if "search_trial" in saved:
            assert f"/runs/searched/search/trial-{saved['search_trial']}/checkpoints/" in saved["path"]
        else:
            assert saved["path"].startswith(str(root / "cache" / "checkpoints" / "searched"))
    assert not (root / "cache" / "runs" / "searched").exists()
    assert not (root / "cache" / "checkpoints" / "searched").exists()


@pytest.mark.slow
def test_with_no_epochs_searched_each_trial_gets_the_epochs_its_batch_size_needs(
    tmp_path: Path, tiny_model: Path
) -> None:
    data = tmp_path / "data"
    write(data / "train.jsonl", rows("binary", 800, seed=1))
    write(data / "validation.jsonl", rows("binary", 40, seed=2))
    only_batch = {name: "" for name in SEARCH if name not in ("FT_SEARCH_TRIALS", "FT_SEARCH_BATCH_SIZE")}
    env = settings_env(
        tmp_path, tiny_model, data, FT_RUN_ID="run", FT_SEARCH_TRIALS="1", FT_SEARCH_BATCH_SIZE="16", **only_batch
    )
    env = {k: v for k, v in env.items() if k not in ("FT_EPOCHS", "FT_BATCH_SIZE")}
    assert "FT_LEARNING_RATE" in PINNED_SCHEDULE and env["FT_LEARNING_RATE"]  # the rate stays pinned: fewer defaults

    checked, check_events = run_cli("check", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout[-3000:]
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]

    # 800 rows: the default batch of 8 gives 100 steps per epoch and 3 epochs; a trial at 16 gets
    # 50 steps per epoch, so 6 epochs to make 300 steps, and so does the final run with its values.
    assert named(check_events, "defaults.chosen")[0]["FT_EPOCHS"] == 3
    started = named(events, "train.started")
    assert [(e.get("search_trial"), e["batch_size"], e["epochs"]) for e in started] == [(0, 16, 6), (None, 16, 6)]
    manifest = json.loads((tmp_path / "outputs" / "run" / "run_manifest.json").read_text())
    assert manifest["settings"]["FT_EPOCHS"] == 6 and manifest["training"]["steps"] == 300
    estimate = named(check_events, "check.estimate")[0]
    per_run = estimate["train_s"] + estimate["evaluation_s"]  # at the default batch's 3 epochs
    assert estimate["search_s_at_most"] == pytest.approx(per_run * 6 / 3, rel=0.1, abs=0.3)


@pytest.fixture
def env_with_s3_checkpoints(tmp_path: Path, tiny_model: Path, dataset: Path, bucket: str) -> dict[str, str]:
    return job_env(tmp_path, tiny_model, dataset, FT_RUN_ID="stopped", FT_CHECKPOINT_DIR=f"s3://{bucket}/checkpoints")


@pytest.mark.slow
def test_a_stopped_search_and_final_training_resume_on_fresh_machines_with_the_same_values(
    tmp_path: Path, env_with_s3_checkpoints: dict[str, str], searched: tuple[Path, list[Event]], s3: Any, bucket: str
) -> None:
    env = env_with_s3_checkpoints
    # 1. Stopped after the first trial.
    code, events, _ = attempt(env, lambda e: e["event"] == "search.trial")
    assert code == ExitCode.PREEMPTED and events[-1]["event"] == "run.preempted"
    assert "run again with FT_RUN_ID=stopped" in events[-1]["error"]
    first = named(events, "search.trial")
    assert [t["number"] for t in first] == [0]
    stored = s3.get_object(Bucket=bucket, Key="checkpoints/stopped/search.json")["Body"].read()
    assert [t["params"] for t in json.loads(stored)["trials"]] == [first[0]["params"]]

    # 2. On a new pod (nothing local survives): the other trials, then stopped in the final training.
    shutil.rmtree(tmp_path / "cache")
    code, events, stderr = attempt(env, lambda e: e["event"] == "train.progress" and "search_trial" not in e)
    assert code == ExitCode.PREEMPTED
    assert "[I " not in stderr and "[W " not in stderr  # Optuna's own handler stayed off
    assert named(events, "search.started")[0]["already_done"] == 1
    assert [t["number"] for t in named(events, "search.trial")] == [1, 2]  # trial 0 is not trained again
    chosen = named(events, "search.completed")[0]["best_params"]
    stopped_at = named(events, "checkpoint.saved")[-1]["step"]

    # 3. On another new pod: the final training resumes with the recorded choice, no new search.
    shutil.rmtree(tmp_path / "cache")
    code, events, _ = attempt(env)
    assert code == 0
    assert named(events, "search.reused") and not named(events, "search.trial")
    assert named(events, "train.resumed")[0]["step"] == stopped_at
    manifest = json.loads((tmp_path / "outputs" / "stopped" / "run_manifest.json").read_text())
    assert manifest["search"]["best"]["params"] == chosen
    assert {name: manifest["settings"][SETTING[name]] for name in chosen} == chosen
    recorded = manifest["search"]["trials"][0]
    assert recorded == {k: v for k, v in first[0].items() if k in recorded}  # as trained before the stop
    # Same seed, same data: the same proposals as the uninterrupted search of the other run.
    uninterrupted = [t["params"] for t in named(searched[1], "search.trial")]
    assert [t["params"] for t in manifest["search"]["trials"]] == uninterrupted
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="checkpoints/stopped/")  # cleaned up


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"FT_SEARCH_LEARNING_RATE": "1e-3,1e-5"}, "FT_SEARCH_LEARNING_RATE='1e-3,1e-5' is invalid: the low end"),
        ({"FT_SEARCH_WEIGHT_DECAY": "x,0.1"}, "FT_SEARCH_WEIGHT_DECAY='x,0.1' is invalid: 'x' is not a number"),
        ({"FT_SEARCH_BATCH_SIZE": "16,0"}, "FT_SEARCH_BATCH_SIZE='16,0' is invalid: each batch size"),
        ({"FT_SEARCH_EPOCHS": "3"}, "FT_SEARCH_EPOCHS='3' is invalid: give two values"),
        ({"FT_MAX_STEPS": "5"}, "FT_SEARCH_EPOCHS has no effect when FT_MAX_STEPS is set"),
    ],
)
def test_a_bad_search_setting_is_one_config_error(
    tmp_path: Path, tiny_model: Path, variables: dict[str, str], message: str
) -> None:
    env = job_env(tmp_path, tiny_model, tmp_path / "data", **variables)
    result = subprocess.run(
        [sys.executable, "-m", "job"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == ExitCode.CONFIG, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["config.invalid"]
    assert events[0]["error"].startswith(message) and "\n" not in events[0]["error"]
    assert not (tmp_path / "outputs").exists()


def test_a_search_over_several_nodes_is_refused_before_any_work(make_settings, tmp_path: Path) -> None:
    settings = make_settings(
        dataset=str(tmp_path / "data"), search_trials=2, num_nodes=2, node_rank=0, master_addr="10.0.0.1"
    )
    with pytest.raises(ConfigError, match=r"FT_SEARCH_TRIALS=2 runs on one node .* this run has 2 nodes"):
        main(settings)
    assert not (tmp_path / "outputs").exists()


def test_without_optuna_the_search_names_the_extra_to_install(
    make_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an install without the extra looks like to `import`
    settings = make_settings(dataset=str(tmp_path / "data"), search_trials=2)
    with pytest.raises(ConfigError, match=r"FT_SEARCH_TRIALS needs optuna.*pip install 'ftjob\[hpo\]'"):
        main(settings)
    assert not (tmp_path / "outputs").exists()

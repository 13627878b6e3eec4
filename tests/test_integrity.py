"""Run integrity, tried as operators break it, through the real entrypoint in real processes
against real folders and moto's S3 server: one owner per run id, resume only on identical
inputs, locations that must not overlap, exact inputs, weights loaded as stated, and a
promotion that is never lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_environ, ft_env, rows, run_cli, write
from fault_proxy import FaultProxy
from s3_helpers import objects, upload_folder

from job.errors import ExitCode, StorageError
from job.files import sha256_of
from job.settings import Settings
from job.storage import COMPLETE, open_output

pytestmark = pytest.mark.slow

Event = dict[str, Any]


def errors(events: list[Event]) -> list[Event]:
    return [e for e in events if e["level"] == "error"]


def one_error(result: subprocess.CompletedProcess[str], events: list[Event], code: int) -> str:
    """The single error line of a failed command, after checking its exit code."""
    found = errors(events)
    assert result.returncode == code, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(found) == 1 and "\n" not in found[0]["error"], found
    assert not any(e["event"] == "run.crashed" for e in events)
    return found[0]["error"]


def same_failure_in_check_and_run(env: dict[str, str], cwd: Path, code: int) -> str:
    checked, check_events = run_cli("check", env=env, cwd=cwd)
    ran, run_events = run_cli(env=env, cwd=cwd)
    line = one_error(ran, run_events, code)
    assert one_error(checked, check_events, code) == line
    assert errors(check_events)[0]["event"] == errors(run_events)[0]["event"]
    return line


class Started:
    """`python -m job` in the background, its log events read as they come."""

    def __init__(self, env: dict[str, str], cwd: Path, prefix: list[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "job"],
            env={**clean_environ(keep_aws=True), **env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: the launcher and its workers, for pause()
        )
        self.events: list[Event] = []

    def pause(self) -> None:
        """SIGSTOP to the launcher and its workers: the run holds its lock and lease but makes no progress."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def until(self, event: str) -> Event:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))
            if self.events[-1]["event"] == event:
                return self.events[-1]
        raise AssertionError(
            f"the run ended without {event}: {self.proc.stderr.read()[-3000:] if self.proc.stderr else ''}"
        )

    def finish(self, timeout: float = 300) -> int:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write(folder / "train.jsonl", rows("binary", 400, seed=1))
    write(folder / "validation.jsonl", rows("binary", 60, seed=2))
    return folder


def slow_env(tmp_path: Path, tiny_model: Path, data: Path, **extra: str) -> dict[str, str]:
    """A run of a few hundred steps."""
    defaults = {"FT_RUN_ID": "shared", "FT_EPOCHS": "3", "FT_BATCH_SIZE": "4", "FT_LOGGING_STEPS": "5"}
    return ft_env(tmp_path, tiny_model, data, **{**defaults, **extra})


def with_aws(env: dict[str, str]) -> dict[str, str]:
    """The S3 fixture's endpoint and credentials, which run_cli leaves out of a clean environment."""
    return {**{k: v for k, v in os.environ.items() if k.startswith("AWS_")}, **env}


# --- one owner per run id -----------------------------------------------------------


@pytest.mark.parametrize("where", ["this-machine", "shared-filesystem", "s3"])
def test_a_second_process_with_the_same_run_id_stops_at_once_and_the_first_completes(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path, where: str
) -> None:
    data = write(tmp_path / "long" / "train.jsonl", rows("binary", 400, seed=1)).parent
    first_env = slow_env(tmp_path, tiny_model, data, FT_EPOCHS="2", FT_BATCH_SIZE="8", FT_LOGGING_STEPS="50")
    second_env = dict(first_env)
    if where != "this-machine":  # another machine: its own cache, the same durable checkpoints
        shared = str(tmp_path / "shared-checkpoints")
        if where == "s3":
            request.getfixturevalue("s3")  # the server and its credentials, in this process's environment
            shared = f"s3://{request.getfixturevalue('bucket')}/checkpoints"
        first_env["FT_CHECKPOINT_DIR"] = second_env["FT_CHECKPOINT_DIR"] = shared
        second_env["FT_CACHE_DIR"] = str(tmp_path / "other-machine-cache")
    first = Started(first_env, tmp_path)
    first.until("train.started")
    # Paused, so it is still training when the second one starts, however fast this machine is
    # (a fast core finished all its steps during the second one's start-up); well inside its
    # lease's 60 s.
    first.pause()
    try:
        result, events = run_cli(env=with_aws(second_env), cwd=tmp_path, timeout=120)
    finally:
        first.resume()
    line = one_error(result, events, ExitCode.RUN_IN_USE)
    assert errors(events)[0]["event"] == "run.in_use" and "FT_RUN_ID=shared is in use by another" in line
    assert ("on this machine" in line) if where == "this-machine" else ("lease at" in line)
    assert not any(e["event"] in ("data.prepared", "data.cache_hit", "train.started") for e in events)

    assert first.finish() == 0, first.proc.stderr.read() if first.proc.stderr else ""
    run = tmp_path / "outputs" / "shared"
    manifest = json.loads((run / COMPLETE).read_text())
    assert all(sha256_of(run / f["path"]) == f["sha256"] for f in manifest["files"])  # whole, and untouched


def test_a_killed_owner_on_this_machine_is_taken_over_at_once(tmp_path: Path, tiny_model: Path, data: Path) -> None:
    env = slow_env(tmp_path, tiny_model, data, FT_SAVE_STEPS="5")
    first = Started(env, tmp_path)
    first.until("checkpoint.saved")
    first.proc.kill()
    first.proc.wait()

    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    names = [e["event"] for e in events]
    assert "lease.taken_over" in names and "train.resumed" in names


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="a second hostname needs root's unshare")
def test_a_dead_owners_lease_elsewhere_is_taken_over_once_it_expires(
    s3: Any, bucket: str, tmp_path: Path, tiny_model: Path, data: Path
) -> None:
    lease_seconds = 60
    env = slow_env(tmp_path, tiny_model, data, FT_CHECKPOINT_DIR=f"s3://{bucket}/checkpoints")
    env["FT_LEASE_SECONDS"] = str(lease_seconds)
    # The owner runs on "another machine": another hostname, another cache.
    elsewhere = {**env, "FT_CACHE_DIR": str(tmp_path / "elsewhere-cache")}
    owner = Started(
        elsewhere, tmp_path, prefix=["unshare", "--uts", "sh", "-c", 'hostname other-host && exec "$@"', "-"]
    )
    owner.until("train.started")
    owner.proc.kill()  # a lost node: nothing is released
    owner.proc.wait()

    # Its last renewal set by hand, not left to the clock: however slowly the next process starts
    # on a loaded machine, it finds the lease renewed under a renewal period ago (30 s), then
    # not renewed for longer than it lasts.
    set_lease_age(s3, bucket, 0.0, lease_seconds)
    result, events = run_cli(env=with_aws(env), cwd=tmp_path)  # renewed a moment ago: it may still be alive
    line = one_error(result, events, ExitCode.RUN_IN_USE)
    assert "other-host" in line and "lease at s3://" in line

    set_lease_age(s3, bucket, lease_seconds + 1.0, lease_seconds)
    result, events = run_cli(env=with_aws(env), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    names = [e["event"] for e in events]
    # Taken over before training (the waiting for a stale lease is timed exactly in test_ownership.py).
    assert names.index("lease.taken_over") < names.index("train.started")
    assert objects(s3, bucket, "checkpoints/") == {}  # checkpoints cleaned up, the lease released


def set_lease_age(s3: Any, bucket: str, age: float, lease_seconds: int) -> None:
    """Rewrite the one lease under checkpoints/ as last renewed `age` seconds ago."""
    (key,) = ["checkpoints/" + k for k in objects(s3, bucket, "checkpoints/") if k.endswith(".lease.json")]
    record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    renewed = time.time() - age
    record.update(renewed_at=renewed, expires_at=renewed + lease_seconds)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode())


# --- resume only on identical inputs --------------------------------------------------


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A run stopped by SIGTERM after its first checkpoints: data, cache and checkpoints under one root."""
    root = tmp_path_factory.mktemp("interrupted")
    write(root / "data" / "train.jsonl", rows("binary", 400, seed=1))
    write(root / "data" / "validation.jsonl", rows("binary", 60, seed=2))
    started = Started(slow_env(root, tiny_model, root / "data", FT_SAVE_STEPS="4"), root)
    started.until("checkpoint.saved")
    started.proc.send_signal(signal.SIGTERM)
    assert started.finish() == ExitCode.PREEMPTED
    return root


def change_batch_size(root: Path, env: dict[str, str]) -> str:
    env["FT_BATCH_SIZE"] = "8"
    return "FT_BATCH_SIZE 4 -> 8"


def change_epochs(root: Path, env: dict[str, str]) -> str:
    env["FT_EPOCHS"] = "5"
    return "FT_EPOCHS 3.0 -> 5.0"


def change_data(root: Path, env: dict[str, str]) -> str:
    with (root / "data" / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({"text": "a wonderful film", "label": 1}) + "\n")
    return "the dataset"


def change_long_texts(root: Path, env: dict[str, str]) -> str:
    env["FT_LONG_TEXTS"] = "truncate"
    return "FT_LONG_TEXTS 'auto' -> 'truncate'"


def change_model(root: Path, env: dict[str, str]) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    copy = root / "other-model"
    shutil.copytree(env["FT_MODEL"], copy)
    weights = load_file(copy / "model.safetensors")
    save_file({k: v + 0.01 * torch.randn_like(v) for k, v in weights.items()}, copy / "model.safetensors")
    env["FT_MODEL"] = str(copy)
    return "the model's weights"


def change_labels(root: Path, env: dict[str, str]) -> str:
    env["FT_LABELS"] = "1,0"
    return "the labels"


@pytest.mark.parametrize(
    "change",
    [change_batch_size, change_epochs, change_data, change_long_texts, change_model, change_labels],
    ids=lambda f: f.__name__,
)
def test_a_restart_with_other_inputs_stops_naming_them(
    interrupted: Path, tmp_path: Path, tiny_model: Path, change: Any
) -> None:
    root = tmp_path / "run"
    shutil.copytree(interrupted, root)
    env = slow_env(root, tiny_model, root / "data", FT_SAVE_STEPS="4")
    expected = change(root, env)
    line = same_failure_in_check_and_run(env, root, ExitCode.CONFIG)
    assert "FT_RUN_ID=shared: its checkpoint-" in line and "was made with other inputs" in line
    assert expected in line and "FT_CHANGED_INPUTS=discard" in line
    assert not (root / "outputs" / "shared").exists()


def test_discarding_changed_checkpoints_trains_from_scratch_on_the_new_inputs(
    interrupted: Path, tmp_path: Path, tiny_model: Path
) -> None:
    root = tmp_path / "run"
    shutil.copytree(interrupted, root)
    env = slow_env(root, tiny_model, root / "data", FT_BATCH_SIZE="8", FT_CHANGED_INPUTS="discard")
    result, events = run_cli(env=env, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:]
    names = [e["event"] for e in events]
    assert "checkpoint.discarded" in names and "train.resumed" not in names
    manifest = json.loads((root / "outputs" / "shared" / "run_manifest.json").read_text())
    assert manifest["settings"]["FT_BATCH_SIZE"] == 8 and manifest["training"]["steps"] == 3 * 400 // 8


def test_an_unchanged_restart_resumes(interrupted: Path, tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "run"
    shutil.copytree(interrupted, root)
    result, events = run_cli(env=slow_env(root, tiny_model, root / "data", FT_SAVE_STEPS="4"), cwd=root)
    assert result.returncode == 0 and any(e["event"] == "train.resumed" for e in events)


# --- locations that must not overlap ---------------------------------------------------


def _checkpoints_are_the_output(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    return {"FT_OUTPUT": str(tmp / "models"), "FT_CHECKPOINT_DIR": str(tmp / "models")}


def _s3_checkpoints_are_the_output(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    request.getfixturevalue("s3")
    bucket = request.getfixturevalue("bucket")
    return {"FT_OUTPUT": f"s3://{bucket}/models/", "FT_CHECKPOINT_DIR": f"s3://{bucket}/models"}


def _output_inside_the_cache(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    return {"FT_OUTPUT": str(tmp / "cache" / "published"), "FT_CACHE_DIR": str(tmp / "cache")}


def _checkpoints_in_the_cache_runs(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    return {"FT_CHECKPOINT_DIR": str(tmp / "cache" / "runs"), "FT_CACHE_DIR": str(tmp / "cache")}


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        (_checkpoints_are_the_output, "is the same folder as FT_OUTPUT's folder for this run"),
        (_s3_checkpoints_are_the_output, "is the same folder as FT_OUTPUT's folder for this run"),
        (_output_inside_the_cache, "is inside FT_CACHE_DIR"),
        (_checkpoints_in_the_cache_runs, "is inside the cache's runs/ folder"),
    ],
    ids=["checkpoints=output", "s3-checkpoints=output", "output-in-cache", "checkpoints-in-cache-runs"],
)
def test_overlapping_locations_are_refused_by_check_and_run_alike(  # noqa: PLR0917 (fixtures)
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path, data: Path, overlap: Any, expected: str
) -> None:
    env = with_aws(ft_env(tmp_path, tiny_model, data, **{"FT_RUN_ID": "r", **overlap(tmp_path, request)}))
    line = same_failure_in_check_and_run(env, tmp_path, ExitCode.CONFIG)
    assert expected in line and "point them at separate folders" in line
    assert not (tmp_path / "models").exists() and not (tmp_path / "cache" / "published").exists()


# --- exact inputs ---------------------------------------------------------------------


def test_an_object_deleted_from_an_s3_dataset_is_not_read_from_the_mirror(
    s3: Any, bucket: str, tmp_path: Path, tiny_model: Path, data: Path
) -> None:
    upload_folder(s3, data, bucket, "sets/reviews")
    env = with_aws(ft_env(tmp_path, tiny_model, f"s3://{bucket}/sets/reviews", FT_RUN_ID="r"))
    result, events = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 0
    assert next(e for e in events if e["event"] == "check.data")["source_splits"]["validation"] == "validation"

    s3.delete_object(Bucket=bucket, Key="sets/reviews/validation.jsonl")
    result, events = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 0
    report = next(e for e in events if e["event"] == "check.data")
    assert report["source_splits"]["validation"] == "train (held-out 10%)"
    assert not list((tmp_path / "cache" / "s3").rglob("validation.jsonl"))


def test_a_stray_file_beside_the_split_files_stops_the_run(tmp_path: Path, tiny_model: Path, data: Path) -> None:
    write(data / "train_2023_old.jsonl", rows("binary", 30, seed=9))
    env = ft_env(tmp_path, tiny_model, data, FT_RUN_ID="r")
    line = same_failure_in_check_and_run(env, tmp_path, ExitCode.DATA)
    assert "data files that name no split: train_2023_old.jsonl" in line and "FT_DATA_FILES" in line


def test_shards_join_their_split_and_every_file_read_is_recorded(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "data"
    write(folder / "train-00000-of-00002.jsonl", rows("binary", 80, seed=1))
    write(folder / "train-00001-of-00002.jsonl", rows("binary", 70, seed=2))
    write(folder / "validation.jsonl", rows("binary", 30, seed=3))
    (folder / "README.md").write_text("not data")
    env = ft_env(tmp_path, tiny_model, folder, FT_RUN_ID="r", FT_EPOCHS="1")
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    logged = next(e for e in events if e["event"] == "data.files")
    assert logged["train"] == ["train-00000-of-00002.jsonl", "train-00001-of-00002.jsonl"]
    manifest = json.loads((tmp_path / "outputs" / "r" / "run_manifest.json").read_text())
    assert manifest["data"]["rows"]["train"] == 150
    recorded = manifest["data"]["files"]
    assert {f["path"]: f["sha256"] for fs in recorded.values() for f in fs} == {
        name: sha256_of(folder / name)
        for name in ("train-00000-of-00002.jsonl", "train-00001-of-00002.jsonl", "validation.jsonl")
    }


# --- weights loaded as stated ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "delta", "tensor"),
    [("vocab_size", 10, "bert.embeddings.word_embeddings.weight"), ("hidden_size", 16, "bert.embeddings")],
)
def test_a_config_that_does_not_match_its_weights_stops_the_run(  # noqa: PLR0917 (fixtures)
    tmp_path: Path, tiny_model: Path, data: Path, field: str, delta: int, tensor: str
) -> None:
    model = tmp_path / "mismatched"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config[field] += delta
    (model / "config.json").write_text(json.dumps(config))
    env = ft_env(tmp_path, model, data, FT_RUN_ID="r", FT_EPOCHS="1")
    line = same_failure_in_check_and_run(env, tmp_path, ExitCode.CONFIG)
    assert "pretrained weight(s) would not load as stated" in line and tensor in line
    assert "config.json does not match its weights" in line
    assert not (tmp_path / "outputs" / "r").exists()


# --- promotion --------------------------------------------------------------------------


def test_a_promotion_lost_after_publishing_is_finished_by_the_rerun(  # noqa: PLR0917 (fixtures)
    s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path, tiny_model: Path, data: Path
) -> None:
    env = with_aws(
        ft_env(tmp_path, tiny_model, data, FT_RUN_ID="first", FT_EPOCHS="1", FT_OUTPUT=f"s3://{bucket}/runs")
    )
    with FaultProxy(s3_endpoint, rate=0, timeout_s=1, persistent=lambda m, p: m == "PUT" and "latest.json" in p) as px:
        result, events = run_cli(env={**env, "AWS_ENDPOINT_URL": px.endpoint, "FT_S3_MAX_ATTEMPTS": "1"}, cwd=tmp_path)
    line = one_error(result, events, ExitCode.STORAGE)
    assert "re-run with FT_RUN_ID=first to finish the promotion" in line
    assert COMPLETE in objects(s3, bucket, "runs/first/") and "latest.json" not in objects(s3, bucket, "runs/")

    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0 and [e["event"] for e in events].count("promotion.finished") == 1
    assert json.loads(objects(s3, bucket, "runs/")["latest.json"])["run_id"] == "first"

    # A run promoted after it stays latest when the older one is run again.
    assert run_cli(env={**env, "FT_RUN_ID": "second"}, cwd=tmp_path)[0].returncode == 0
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0 and not any(e["event"] == "promotion.finished" for e in events)
    assert json.loads(objects(s3, bucket, "runs/")["latest.json"])["run_id"] == "second"


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [("{not json", "latest.json is not valid JSON"), ('{"run_id": 3}', "missing or wrong: run_id, location, metric")],
    ids=["not-json", "wrong-fields"],
)
def test_a_corrupt_promotion_pointer_stops_the_run_before_training(
    tmp_path: Path, tiny_model: Path, data: Path, pointer: str, expected: str
) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "latest.json").write_text(pointer)
    env = ft_env(tmp_path, tiny_model, data, FT_RUN_ID="r", FT_EPOCHS="1")
    line = same_failure_in_check_and_run(env, tmp_path, ExitCode.STORAGE)
    assert expected in line and "delete it to let the next run become latest" in line
    assert not (tmp_path / "cache" / "prepared").exists()  # before any data was prepared


# --- a published run is never replaced ------------------------------------------------------


@pytest.fixture
def published_twice(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "s3":
        request.getfixturevalue("s3")
        output = f"s3://{request.getfixturevalue('bucket')}/runs"
    else:
        request.getfixturevalue("clean_env")
        output = str(tmp_path / "runs")
    settings = Settings(_env_file=None, model="m", dataset="d", output=output, run_id="r", cache_dir=tmp_path / "c")  # type: ignore[call-arg]
    yield open_output(settings)


@pytest.mark.parametrize("published_twice", ["local", "s3"], indirect=True)
def test_a_completed_run_is_never_replaced(published_twice: Any, tmp_path: Path) -> None:
    output = published_twice
    for attempt in ("first", "second"):
        staging = tmp_path / f"staging-{attempt}"
        staging.mkdir()
        (staging / "model.safetensors").write_text(attempt)
        if attempt == "first":
            output.publish(staging, message="first")
        else:
            with pytest.raises(StorageError, match="a completed run is already there; it is never replaced"):
                output.publish(staging, message="second")
    assert output.is_complete() and json.loads(output.read_published(COMPLETE))["message"] == "first"
    assert output.read_published("model.safetensors") == b"first"

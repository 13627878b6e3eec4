"""A real two-process run of the whole job: the launcher starts two CPU ranks with
`accelerate launch` (gloo), exactly as it starts one rank per GPU; and the job started by
torchrun, whose processes are the ranks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_environ, ft_env, rows, write

from job.errors import TrainingError
from job.main import main
from job.storage import COMPLETE

BATCH = 16


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_ranks_share_the_work_and_rank_zero_alone_writes(make_settings, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write(folder / "train.jsonl", rows("binary", 200))
    write(folder / "validation.jsonl", rows("binary", 37, 1))  # odd: the last batch is padded across ranks
    write(folder / "test.jsonl", rows("binary", 21, 2))
    settings = make_settings(dataset=str(folder), procs_per_node=2, epochs=3, batch_size=BATCH)
    run = Path(main(settings)["location"])
    manifest = json.loads((run / "run_manifest.json").read_text())
    training = manifest["training"]
    assert training["world_size"] == 2

    # Disjoint shards: together the ranks see each row once per epoch, each about half;
    # the only repeats fill the last, short batch so both ranks take the same steps.
    per_rank = training["samples_per_rank"]
    seen = 200 * settings.epochs
    assert len(per_rank) == 2 and abs(per_rank[0] - per_rank[1]) <= BATCH
    assert seen <= sum(per_rank) < seen + 2 * BATCH * settings.epochs
    assert training["steps"] == settings.epochs * math.ceil(200 / (2 * BATCH))

    # Evaluation is gathered over both ranks: every row exactly once, none duplicated.
    metrics = json.loads((run / "metrics.json").read_text())
    assert (
        metrics["validation"]["rows"] == 37 and sum(map(sum, metrics["validation"]["confusion_matrix"]["matrix"])) == 37
    )
    assert metrics["test"]["rows"] == 21
    assert [p["index"] for p in read_jsonl(run / "test_predictions.jsonl")] == list(range(21))

    # Rank 0 alone wrote the log: each step once. The loss is per sample, not times the
    # world size (a 2-class loss starts near ln 2 = 0.69, not 1.39).
    log = [e for e in read_jsonl(run / "train_log.jsonl") if "loss" in e]
    assert len({e["step"] for e in log}) == len(log)
    assert log[0]["loss"] < 1.0
    assert manifest["verification"]["label_mismatches"] == 0
    assert not (settings.run_work_dir() / "failures").exists()


def test_a_failing_rank_fails_the_run_with_its_exit_code(make_settings, tmp_path: Path) -> None:
    records = [{"text": r["text"], "label": 1e30} for r in rows("binary", 64)]
    settings = make_settings(dataset=str(write(tmp_path / "huge.jsonl", records)), procs_per_node=2)
    with pytest.raises(TrainingError, match=r"^rank 0: training loss became (inf|nan) at step 1; .*\(1 more rank"):
        main(settings)
    assert not (tmp_path / "outputs" / "test-run").exists()


@pytest.mark.slow
def test_started_by_torchrun_each_process_is_a_rank_and_the_run_is_published_once(
    tmp_path: Path, tiny_model: Path
) -> None:
    folder = tmp_path / "d"
    write(folder / "train.jsonl", rows("binary", 200))
    write(folder / "validation.jsonl", rows("binary", 37, 1))
    env = {**clean_environ(), **ft_env(tmp_path, tiny_model, folder, FT_EPOCHS="2", FT_RUN_ID="under-torchrun")}
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "job"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    modes = [e for e in events if e["event"] == "launch.mode"]
    assert sorted(e["rank"] for e in modes) == [0, 1] and {e["mode"] for e in modes} == {"rank of a torchrun launch"}
    assert not [e for e in events if e["event"] == "launch.workers"]  # no launch nested in torchrun's
    assert [e["rank"] for e in events if e["event"] == "rank.finished"] == [1]
    (completed,) = [e for e in events if e["event"] == "run.completed"]  # rank 0's duties, once

    run = tmp_path / "outputs" / "under-torchrun"
    assert completed["location"] == str(run)
    assert [p.name for p in (tmp_path / "outputs").iterdir() if p.is_dir()] == [run.name]
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["training"]["world_size"] == 2 and len(manifest["training"]["samples_per_rank"]) == 2
    assert manifest["verification"]["label_mismatches"] == 0
    listing = json.loads((run / COMPLETE).read_text())["files"]
    assert {f["path"] for f in listing} == {p.name for p in run.iterdir()} - {COMPLETE}

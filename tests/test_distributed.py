"""A real two-process run of the whole job: the launcher starts two CPU ranks with
`accelerate launch` (gloo), exactly as it starts one rank per GPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import rows, write

from job.errors import TrainingError
from job.main import main

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

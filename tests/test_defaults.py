"""Training defaults chosen from the data and the model (job/defaults.py): the rule on the row
counts and widths users bring, and a real run that sets none of them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import PINNED_SCHEDULE, clean_environ, ft_env, rows, run_cli, write

from job.defaults import Defaults, choose
from job.search import most_trial_epochs

SCHEDULE = ("batch_size", "epochs", "learning_rate")


def chosen(make_settings: Any, rows_: int, hidden: int | None, *, world: int = 1, **given: Any) -> tuple:
    settings = make_settings(dataset="unused", **{**{name: None for name in SCHEDULE}, **given})
    picked = choose(settings, train_rows=rows_, hidden_size=hidden, world_size=world)
    return picked.batch_size, picked.epochs, picked.learning_rate


@pytest.mark.parametrize(
    ("train_rows", "hidden", "world", "accumulation", "expected"),
    [
        # The notebook's 1,000 rows less 10% held out, on MiniLM: 113 steps of 8 rows per epoch.
        (900, 384, 1, 1, (8, 3.0, 1e-4)),
        # 100 steps per epoch at 32 rows: the largest batch; 3 epochs already make 300 steps.
        (3_200, 768, 1, 1, (32, 3.0, 5e-5)),
        (1_600, 1024, 1, 1, (16, 3.0, 2e-5)),
        # 25 steps per epoch even at 8 rows: 12 epochs would reach 300 steps, capped at 10.
        (200, None, 1, 1, (8, 10.0, 5e-5)),
        # Two processes accumulating two batches: 4 batches per step, so 3,200 rows need batches of 8.
        (3_200, 384, 2, 2, (8, 3.0, 1e-4)),
        # A large dataset: the largest batch, the usual 3 epochs.
        (100_000, 768, 8, 1, (32, 3.0, 5e-5)),
    ],
)
def test_the_schedule_follows_the_row_count_and_the_rate_the_width(  # noqa: PLR0917 (parameters)
    make_settings: Any, train_rows: int, hidden: int | None, world: int, accumulation: int, expected: tuple
) -> None:
    got = chosen(make_settings, train_rows, hidden, world=world, gradient_accumulation_steps=accumulation)
    assert got == expected


def test_explicit_settings_win_and_the_rest_follow_them(make_settings: Any) -> None:
    # A batch of 64 given: 15 steps per epoch over 900 rows, so epochs rise to the cap.
    assert chosen(make_settings, 900, 384, batch_size=64) == (64, 10.0, 1e-4)
    assert chosen(make_settings, 900, 384, epochs=1.5, learning_rate=3e-5) == (8, 1.5, 3e-5)
    everything = make_settings(dataset="unused", batch_size=4, epochs=2, learning_rate=1e-3)
    assert choose(everything, train_rows=900, hidden_size=384, world_size=1) is everything


def test_a_search_trials_values_count_as_given_and_the_defaults_follow_them(make_settings: Any) -> None:
    requested = make_settings(dataset="unused", batch_size=None, epochs=None, learning_rate=None)
    chosen = Defaults(requested, train_rows=900, hidden_size=384, world_size=1)
    plain = chosen.settings()
    assert (plain.batch_size, plain.epochs) == (8, 3.0)  # 113 steps per epoch
    # A trial at batch 32: 29 steps per epoch, so 10 epochs (the cap), not the 3 chosen for batch 8.
    trial = chosen.settings({"batch_size": 32, "learning_rate": 3e-4})
    assert (trial.batch_size, trial.epochs, trial.learning_rate) == (32, 10.0, 3e-4)
    assert chosen.settings({"batch_size": 32, "epochs": 2}).epochs == 2.0  # a searched epoch count wins
    given = Defaults(requested.model_copy(update={"epochs": 4.0}), train_rows=900, hidden_size=384, world_size=1)
    assert given.settings({"batch_size": 32}).epochs == 4.0  # and so does one the user set

    searching = plain.model_copy(update={"search_trials": 2, "search_batch_size": (8, 32), "search_epochs": None})
    assert most_trial_epochs(searching, chosen) == 10.0
    assert most_trial_epochs(searching.model_copy(update={"search_batch_size": None}), chosen) == 3.0
    assert most_trial_epochs(searching.model_copy(update={"search_epochs": (1, 6)}), chosen) == 6.0


@pytest.mark.slow
def test_a_run_that_sets_no_schedule_trains_with_the_chosen_one(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "data"
    write(data / "train.jsonl", rows("binary", 80, seed=1))
    write(data / "validation.jsonl", rows("binary", 24, seed=2))
    env = {k: v for k, v in ft_env(tmp_path, tiny_model, data, FT_RUN_ID="auto").items() if k not in PINNED_SCHEDULE}
    env = {**clean_environ(), **env}

    checked, check_events = run_cli("check", env=env, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout[-3000:]
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]

    # 80 rows: 10 steps of 8 per epoch; 30 steps would be too few, so 10 epochs (the cap).
    steps_per_epoch, epochs = math.ceil(80 / 8), 10
    for found in (check_events, events):
        picked = next(e for e in found if e["event"] == "defaults.chosen")
        assert (picked["FT_BATCH_SIZE"], picked["FT_EPOCHS"], picked["FT_LEARNING_RATE"]) == (8, epochs, 1e-4)
    plan = next(e for e in check_events if e["event"] == "check.plan")
    assert plan["total_steps"] == epochs * steps_per_epoch and plan["effective_batch_size"] == 8
    manifest = json.loads((tmp_path / "outputs" / "auto" / "run_manifest.json").read_text())
    assert manifest["settings"]["FT_BATCH_SIZE"] == 8 and manifest["settings"]["FT_LEARNING_RATE"] == 1e-4
    assert manifest["training"]["steps"] == plan["total_steps"]  # the training process used them

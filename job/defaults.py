"""Training settings the user left unset, chosen from the data and the model before training.

A fixed batch of 32 for 3 epochs gives a 1,000-row dataset 87 optimizer steps, four times fewer
than the notebook recipe it replaces (batch 8), and small models such as MiniLM learn too
slowly at BERT-base's 5e-5: on data nobody had tuned for, that cost up to 12 points of accuracy
(issue 19). So the steps follow the row count and the learning rate the model's width:

- FT_BATCH_SIZE: the largest of 32, 16 and 8 that still gives every epoch at least 100
  optimizer steps (counted over all processes and accumulated batches); 8 below that.
- FT_EPOCHS: 3, or more on small data so that training takes at least 300 optimizer steps,
  at most 10 (the best epoch's checkpoint is kept, so extra epochs cannot make the model worse
  on validation).
- FT_LEARNING_RATE: 1e-4 for models up to 384 wide (MiniLM, small BERTs), 5e-5 up to 768
  (BERT-base), 2e-5 above (BERT-large).

Any setting given explicitly is kept as given. The chosen values are the run's settings from
here on: logged (`defaults.chosen`), recorded in run_manifest.json and the checkpoints'
fingerprint, and handed to the training processes. A search trial's parameters count as
given: the defaults are chosen again for each trial (a trial at batch 32 gets the epochs that
batch needs, not those chosen for the default batch of 8).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from job.logs import get_logger
from job.settings import Settings, env_name

BATCH_SIZES = (32, 16, 8)  # largest first: the biggest batch that keeps enough steps per epoch
MIN_STEPS_PER_EPOCH = 100
MIN_STEPS = 300
EPOCHS = 3
MAX_EPOCHS = 10
# (widest hidden size, learning rate), narrowest first
LEARNING_RATES = ((384, 1e-4), (768, 5e-5))
WIDE_LEARNING_RATE = 2e-5

log = get_logger("job.defaults")


@dataclass(frozen=True)
class Defaults:
    """The settings as given, and what their unset training defaults are chosen from."""

    requested: Settings
    train_rows: int
    hidden_size: int | None
    world_size: int

    def settings(self, params: Mapping[str, Any] | None = None, *, announce: bool = True) -> Settings:
        """The settings as given with `params` (a search trial's, as given too) over them, and
        the defaults still unset chosen for that combination; `announce`: log the choice."""
        update = dict(params or {})
        if "epochs" in update:
            update["epochs"] = float(update["epochs"])
        given = self.requested.model_copy(update=update) if update else self.requested
        return choose(
            given,
            train_rows=self.train_rows,
            hidden_size=self.hidden_size,
            world_size=self.world_size,
            announce=announce,
        )


def choose(
    settings: Settings, *, train_rows: int, hidden_size: int | None, world_size: int, announce: bool = True
) -> Settings:
    """`settings` with every unset training default filled in; logs what was chosen and why."""
    chosen: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    per_step = settings.gradient_accumulation_steps * world_size  # batches per optimizer step

    batch = settings.batch_size
    if batch is None:
        batch = next(
            (b for b in BATCH_SIZES if _steps_per_epoch(train_rows, b * per_step) >= MIN_STEPS_PER_EPOCH),
            BATCH_SIZES[-1],
        )
        chosen["batch_size"] = batch
    steps_per_epoch = _steps_per_epoch(train_rows, batch * per_step)
    if "batch_size" in chosen:
        reasons["batch_size"] = f"{steps_per_epoch} steps per epoch over {train_rows} training rows"
    if settings.epochs is None:
        epochs = min(MAX_EPOCHS, max(EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))
        chosen["epochs"] = float(epochs)
        reasons["epochs"] = (
            "FT_MAX_STEPS is set; epochs do not count"
            if settings.max_steps is not None
            else f"{epochs * steps_per_epoch} optimizer steps in all"
        )
    if settings.learning_rate is None:
        rate = learning_rate(hidden_size)
        chosen["learning_rate"] = rate
        reasons["learning_rate"] = f"hidden size {hidden_size}" if hidden_size else "model width unknown"
    if not chosen:
        return settings
    if announce:
        _announce(chosen, reasons, world_size)
    return settings.model_copy(update=chosen)


def _announce(chosen: dict[str, Any], reasons: dict[str, str], world_size: int) -> None:
    log.info(
        "defaults.chosen",
        **{env_name(name): value for name, value in chosen.items()},
        reasons={env_name(name): why for name, why in reasons.items()},
        world_size=world_size,  # `check` on a login node plans for its own processes, not the cluster's
        effect="set these variables to choose otherwise",
    )


def learning_rate(hidden_size: int | None) -> float:
    if hidden_size is None:
        return LEARNING_RATES[-1][1]  # BERT-base's: the common case when a config names no width
    return next((rate for width, rate in LEARNING_RATES if hidden_size <= width), WIDE_LEARNING_RATE)


def _steps_per_epoch(rows: int, rows_per_step: int) -> int:
    return max(1, math.ceil(rows / rows_per_step))

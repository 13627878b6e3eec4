"""What determines a training run, recorded in every checkpoint it saves: a run resumes only
from checkpoints made with the same inputs, and says which ones changed otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from job.errors import ConfigError
from job.modeling import tokenizer_fingerprint, weights_fingerprint
from job.prepare import SHAPING_SETTINGS, PreparedData
from job.settings import Settings, env_name

# The settings that change what training computes.
TRAINING_SETTINGS = (
    "epochs", "max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "weight_decay",
    "warmup_ratio", "lr_scheduler", "max_grad_norm", "seed", "group_by_length", "eval_steps",
    "metric_for_best_model", "early_stopping_patience", "class_weights",
)  # fmt: skip
# The settings that shape the data, named when the data's fingerprint (which covers them,
# the files, the tokenizer and the resolved max length) differs.
DATA_SETTINGS = tuple(name for name in (*SHAPING_SETTINGS, "max_length") if name not in TRAINING_SETTINGS)
_WHAT = {
    "data": "the dataset (its files' contents or the settings that shape it)",
    "model": "the model's weights or config (FT_MODEL)",
    "tokenizer": "the tokenizer",
    "labels": "the labels",
    "world_size": "the number of training processes",
    "precision": "the precision (FT_MIXED_PRECISION on this hardware)",
}


def of_run(
    settings: Settings,
    prepared: PreparedData,
    model_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    world_size: int,
    precision: str,
) -> dict[str, Any]:
    return {
        "settings": of_settings(settings),
        "data_settings": of_settings(settings, DATA_SETTINGS),
        "data": prepared.fingerprint,
        "model": weights_fingerprint(model_path),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "labels": prepared.labels.to_json(),
        "world_size": world_size,
        "precision": precision,
    }


def of_settings(settings: Settings, names: tuple[str, ...] = TRAINING_SETTINGS) -> dict[str, Any]:
    return {env_name(name): getattr(settings, name) for name in names}


def changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs, in words: each setting with its old and new value, then the other inputs."""
    found = _differing(recorded.get("settings") or {}, current["settings"])
    # A record from before data settings were kept names the dataset alone.
    if recorded.get("data") != current["data"] and "data_settings" in recorded:
        found += _differing(recorded["data_settings"], current["data_settings"])
    found += [_WHAT[key] for key in _WHAT if recorded.get(key) != current[key]]
    return found


def _differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{name} {old.get(name)!r} -> {value!r}" for name, value in new.items() if old.get(name) != value]


def check_resumable(recorded: dict[str, Any] | None, current: dict[str, Any], *, run_id: str, what: str) -> None:
    """ConfigError naming every change when `what` (a checkpoint, the search record) was made
    with other inputs than this run has; a record without a fingerprint cannot be trusted either."""
    if recorded is None:
        raise ConfigError(
            f"FT_RUN_ID={run_id}: {what} does not record the inputs it was made with (an older ftjob); {_WAYS_OUT}"
        )
    differing = changes(recorded, current)
    if differing:
        raise ConfigError(f"FT_RUN_ID={run_id}: {what} was made with other inputs: {'; '.join(differing)}; {_WAYS_OUT}")


_WAYS_OUT = (
    "restore them to resume, start a new FT_RUN_ID, or set FT_CHANGED_INPUTS=discard to delete this run id's "
    "checkpoints and train from scratch"
)

"""What a checkpoint records of its inputs: every training setting that changes what training
computes is in it, so a restart that changes one is refused by name (test_integrity.py
restarts real runs; this covers every setting, not only the few those runs change)."""

from __future__ import annotations

from typing import Any

import pytest

from job.errors import ConfigError
from job.fingerprint import TRAINING_SETTINGS, changes, check_resumable, of_settings
from job.settings import Settings, env_name

# Training settings that cannot change the trained weights, each with the reason.
NOT_TRAINING = {
    "eval_batch_size": "evaluation only; scores move by rounding, not the weights",
    "mixed_precision": "recorded as the precision actually used (the fingerprint's `precision`)",
    "decision_thresholds": "applied after training, from the final model's validation scores",
    "logging_steps": "how often the loss is logged",
    "dataloader_workers": "how batches are loaded, not which",
}

# A value other than the default for each recorded setting.
CHANGED: dict[str, Any] = {
    "epochs": 5.0, "max_steps": 7, "batch_size": 8, "gradient_accumulation_steps": 2, "learning_rate": 1e-3,
    "weight_decay": 0.1, "warmup_ratio": 0.3, "lr_scheduler": "cosine", "max_grad_norm": 0.5, "seed": 7,
    "group_by_length": False, "eval_steps": 5, "metric_for_best_model": "accuracy", "early_stopping_patience": 2,
    "class_weights": "balanced",
}  # fmt: skip


def training_fields() -> set[str]:
    return {n for n, f in Settings.model_fields.items() if (f.json_schema_extra or {}).get("group") == "training"}


def test_every_training_setting_is_recorded_or_exempt_for_a_reason() -> None:
    assert set(TRAINING_SETTINGS) | set(NOT_TRAINING) == training_fields()
    assert not set(TRAINING_SETTINGS) & set(NOT_TRAINING)
    assert set(CHANGED) == set(TRAINING_SETTINGS)


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_a_changed_training_setting_is_named_with_both_values(make_settings: Any, name: str) -> None:
    before = make_settings(dataset="unused")
    after = before.model_copy(update={name: CHANGED[name]})
    recorded, current = {"settings": of_settings(before)}, {"settings": of_settings(after)}
    for key in ("data", "model", "tokenizer", "labels", "world_size", "precision"):
        recorded[key] = current[key] = "same"
    assert changes(recorded, current) == [f"{env_name(name)} {getattr(before, name)!r} -> {CHANGED[name]!r}"]
    with pytest.raises(ConfigError, match=f"{env_name(name)} .* -> .*FT_CHANGED_INPUTS=discard"):
        check_resumable(recorded, current, run_id="r", what="its checkpoint-4")
    assert changes(recorded, recorded) == []

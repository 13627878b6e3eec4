"""What a checkpoint records of its inputs: every training setting that changes what training
computes is in it, so a restart that changes one is refused by name (test_integrity.py
restarts real runs; this covers every setting, not only the few those runs change)."""

from __future__ import annotations

from typing import Any

import pytest

from job.errors import ConfigError
from job.fingerprint import DATA_SETTINGS, TRAINING_SETTINGS, changes, check_resumable, of_settings
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


# Data and model settings that need no name of their own in a checkpoint, each with the reason.
NOT_SHAPING = {
    "model": "the weights and config are fingerprinted (`model`)",
    "model_revision": "the weights and config are fingerprinted (`model`)",
    "trust_remote_code": "whether a model may load, not what it computes",
    "allow_pickle_weights": "whether a model may load, not what it computes",
    "hf_token": "access, not content",
    "dataset": "which files: their contents are in the data's fingerprint",
    "dataset_config": "which files: their contents are in the data's fingerprint",
    "dataset_revision": "which files: their contents are in the data's fingerprint",
    "data_files": "which files: their contents are in the data's fingerprint",
    "data_format": "how the files parse: the rows are in the data's fingerprint",
}

# A value other than the default for each data setting a checkpoint names.
CHANGED_DATA: dict[str, Any] = {
    "train_split": "all", "eval_split": "dev", "test_split": "holdout", "text_column": "body",
    "text_pair_column": "hypothesis", "label_column": "target", "labels": ["b", "a"],
    "problem_type": "multi_label_classification", "label_separator": ";", "validation_fraction": 0.2,
    "max_train_samples": 100, "max_eval_samples": 10, "max_test_samples": 10, "max_length": 64,
    "long_texts": "truncate", "window_overlap": 8, "max_windows": 2,
}  # fmt: skip


def fields_of(*groups: str) -> set[str]:
    return {n for n, f in Settings.model_fields.items() if (f.json_schema_extra or {}).get("group") in groups}


def training_fields() -> set[str]:
    return fields_of("training")


def test_every_data_and_model_setting_is_named_or_exempt_for_a_reason() -> None:
    assert set(DATA_SETTINGS) | set(NOT_SHAPING) | {"seed"} >= fields_of("data", "model")
    assert set(CHANGED_DATA) == set(DATA_SETTINGS)


@pytest.mark.parametrize("name", sorted(CHANGED_DATA))
def test_a_changed_data_setting_is_named_when_the_data_differs(make_settings: Any, name: str) -> None:
    before = make_settings(dataset="unused")
    after = before.model_copy(update={name: CHANGED_DATA[name]})
    recorded = {"settings": of_settings(before), "data_settings": of_settings(before, DATA_SETTINGS)}
    current = {"settings": of_settings(after), "data_settings": of_settings(after, DATA_SETTINGS)}
    for key in ("model", "tokenizer", "labels", "world_size", "precision"):
        recorded[key] = current[key] = "same"
    recorded["data"], current["data"] = "before", "after"
    assert changes(recorded, current) == [
        f"{env_name(name)} {getattr(before, name)!r} -> {CHANGED_DATA[name]!r}",
        "the dataset (its files' contents or the settings that shape it)",
    ]
    # A setting that shapes nothing here (the data came out the same) is no change.
    current["data"] = "before"
    assert changes(recorded, current) == []


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

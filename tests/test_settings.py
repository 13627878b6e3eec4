"""Settings: validation, one-line errors naming the variable, env files, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from job.config import load_settings
from job.errors import ConfigError, ExitCode
from job.settings import Settings, redacted

REQUIRED = {"FT_MODEL": "some/model", "FT_DATASET": "some/dataset"}


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in {**REQUIRED, **env}.items():
        monkeypatch.setenv(key, value)
    return load_settings()[0]


def error_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, **env)
    message = caught.value.message
    assert "\n" not in message
    return message


def test_defaults_are_valid(clean_env: pytest.MonkeyPatch) -> None:
    settings = load(clean_env)
    # Left for job/defaults.py to choose from the data and the model (test_defaults.py).
    assert settings.epochs is None and settings.batch_size is None and settings.learning_rate is None
    assert settings.warmup_ratio == 0.1 and settings.weight_decay == 0.01 and settings.seed == 42
    assert settings.group_by_length and settings.mixed_precision == "auto"
    assert not settings.trust_remote_code


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FT_EPOCHS": "abc"}, "FT_EPOCHS='abc' is invalid; expected a number > 0 and <= 1000"),
        ({"FT_EPOCHS": "0"}, "FT_EPOCHS='0' is invalid; expected a number > 0 and <= 1000"),
        ({"FT_BATCH_SIZE": "0"}, "FT_BATCH_SIZE='0' is invalid; expected an integer >= 1 and <= 65536"),
        ({"FT_BATCH_SIZE": "8.5"}, "FT_BATCH_SIZE='8.5' is invalid; expected an integer >= 1"),
        ({"FT_LEARNING_RATE": "-1e-5"}, "FT_LEARNING_RATE='-1e-5' is invalid; expected a number > 0 and <= 1"),
        ({"FT_WARMUP_RATIO": "1"}, "FT_WARMUP_RATIO='1' is invalid; expected a number >= 0 and < 1"),
        ({"FT_VALIDATION_FRACTION": "0.9"}, "FT_VALIDATION_FRACTION='0.9' is invalid; expected a number > 0"),
        ({"FT_MAX_LENGTH": "4"}, "FT_MAX_LENGTH='4' is invalid; expected an integer >= 8"),
        ({"FT_MAX_TRAIN_SAMPLES": "none"}, "FT_MAX_TRAIN_SAMPLES='none' is invalid; expected an integer >= 1"),
        ({"FT_SEED": "-1"}, "FT_SEED='-1' is invalid; expected an integer >= 0"),
        ({"FT_LOG_FORMAT": "xml"}, "FT_LOG_FORMAT='xml' is invalid; expected one of auto, json, console"),
        ({"FT_MIXED_PRECISION": "fp8"}, "FT_MIXED_PRECISION='fp8' is invalid; expected one of auto, no, bf16, fp16"),
        ({"FT_PROBLEM_TYPE": "ranking"}, "FT_PROBLEM_TYPE='ranking' is invalid; expected one of auto,"),
        ({"FT_GROUP_BY_LENGTH": "maybe"}, "FT_GROUP_BY_LENGTH='maybe' is invalid; expected true or false"),
        ({"FT_TRUST_REMOTE_CODE": "2"}, "FT_TRUST_REMOTE_CODE='2' is invalid; expected true or false"),
        ({"FT_RUN_ID": "../escape"}, "FT_RUN_ID='../escape' is invalid; expected 1-64 letters, digits"),
        ({"FT_RUN_ID": "x" * 65}, "FT_RUN_ID="),
        ({"FT_DATA_FILES": "train"}, "FT_DATA_FILES='train' is invalid: 'train' is not of the form split=path"),
        ({"FT_MODEL": ""}, "FT_MODEL='' is invalid; expected a Hub model id (org/name) or a local model folder"),
        ({"FT_TEXT_PAIR_COLUMN": "text"}, "FT_TEXT_PAIR_COLUMN must differ from FT_TEXT_COLUMN"),
        ({"FT_LABEL_COLUMN": "text"}, "FT_LABEL_COLUMN 'text' is also used as a text column"),
        ({"FT_LABELS": "a,b,a"}, "FT_LABELS lists a label twice"),
        ({"FT_METRIC_FOR_BEST_MODEL": "auc"}, "FT_METRIC_FOR_BEST_MODEL='auc' is not a metric the job computes"),
    ],
)
def test_bad_values_give_one_line_naming_the_variable(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    assert expected in error_for(clean_env, **env)


def test_missing_required_setting_says_what_to_set(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FT_DATASET", "imdb")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message == "FT_MODEL is not set; set it to a Hub model id (org/name) or a local model folder"


def test_several_bad_values_are_all_named_on_one_line(clean_env: pytest.MonkeyPatch) -> None:
    message = error_for(clean_env, FT_EPOCHS="x", FT_BATCH_SIZE="-2")
    assert "FT_EPOCHS='x'" in message and "FT_BATCH_SIZE='-2'" in message


def test_token_is_hidden_in_redacted_settings_and_repr(clean_env: pytest.MonkeyPatch) -> None:
    settings = load(clean_env, HF_TOKEN="hf_secretvalue123")
    assert settings.hf_token is not None and settings.hf_token.get_secret_value() == "hf_secretvalue123"
    assert "hf_secretvalue123" not in json.dumps(redacted(settings))
    assert "hf_secretvalue123" not in repr(settings)


def test_blank_optional_values_mean_unset(clean_env: pytest.MonkeyPatch) -> None:
    settings = load(clean_env, FT_MAX_LENGTH="", FT_EVAL_SPLIT=" ", HF_TOKEN="")
    assert settings.max_length is None and settings.eval_split is None and settings.hf_token is None


def test_lists_and_mappings_parse(clean_env: pytest.MonkeyPatch) -> None:
    settings = load(clean_env, FT_LABELS="neg, pos", FT_DATA_FILES="train=a/*.csv, validation=b.csv")
    assert settings.labels == ["neg", "pos"]
    assert settings.data_files == {"train": "a/*.csv", "validation": "b.csv"}


def test_env_file_is_read_and_environment_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "profile.env"
    env_file.write_text("FT_MODEL=from-file\nFT_DATASET=imdb\nFT_EPOCHS=7\nFT_BATCH_SIZE=4\n")
    clean_env.setenv("FT_BATCH_SIZE", "9")
    settings, _ = load_settings(env_file)
    assert (settings.model, settings.epochs, settings.batch_size) == ("from-file", 7, 9)


def test_dot_env_in_working_directory_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FT_MODEL=m\nFT_DATASET=d\nFT_SEED=7\n")
    assert load_settings()[0].seed == 7


def test_missing_env_file_is_a_config_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"env file .*nope.env' does not exist"):
        load_settings(tmp_path / "nope.env")


def test_misspelt_variable_gets_a_suggestion(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in REQUIRED.items():
        clean_env.setenv(key, value)
    clean_env.setenv("FT_LEARNIG_RATE", "1e-4")
    clean_env.setenv("FT_ZZZ", "1")
    _, warnings = load_settings()
    assert "FT_LEARNIG_RATE is not a setting and is ignored; did you mean FT_LEARNING_RATE?" in warnings
    assert "FT_ZZZ is not a setting and is ignored" in warnings


def test_cli_config_error_is_one_json_line_with_exit_code_2(tmp_path: Path) -> None:
    result, _ = run_cli(env={**REQUIRED, "FT_BATCH_SIZE": "lots", "FT_LOG_FORMAT": "json"}, cwd=tmp_path, timeout=120)
    assert result.returncode == ExitCode.CONFIG == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    event = json.loads(lines[0])
    assert event["event"] == "config.invalid" and event["exit_code"] == 2
    assert event["error"].startswith("FT_BATCH_SIZE='lots' is invalid")
    assert "Traceback" not in result.stdout + result.stderr


def test_print_config_redacts_the_token(tmp_path: Path) -> None:
    env = {**REQUIRED, "HF_TOKEN": "hf_plantedsecret42", "FT_LOG_FORMAT": "json"}
    result, _ = run_cli("--print-config", env=env, cwd=tmp_path, timeout=120, log_lines=False)
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.loads(result.stdout)
    assert config["HF_TOKEN"] == "**********" and config["FT_MODEL"] == "some/model"
    assert "hf_plantedsecret42" not in result.stdout + result.stderr
    assert set(config) == {
        ("HF_TOKEN" if name == "hf_token" else f"FT_{name.upper()}") for name in Settings.model_fields
    }

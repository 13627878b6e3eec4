"""Bad input, through the real entrypoint: each case stops with ONE error line that names
the cause and the fix, the documented exit code, and nothing that looks complete.

The entrypoint runs in process (`cli.run`, as `python -m job` calls it) so that the
whole table stays fast; tests/test_cli.py covers the same path in subprocesses.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import VOCAB, ft_env, rows, write

from job import cli
from job.errors import ExitCode

CONFIG, DATA, STORAGE = ExitCode.CONFIG, ExitCode.DATA, ExitCode.STORAGE
Setup = Callable[[Path, Path], dict[str, str]]  # (tmp_path, tiny model) -> variables


def env(**values: str) -> Setup:
    return lambda tmp, model: values


def data_file(records: list[dict[str, Any]], name: str = "train.jsonl", **values: str) -> Setup:
    def setup(tmp: Path, model: Path) -> dict[str, str]:
        return {"FT_DATASET": str(write(tmp / "bad-data" / name, records).parent), **values}

    return setup


def non_utf8(tmp: Path, model: Path) -> dict[str, str]:
    folder = tmp / "latin1"
    folder.mkdir()
    lines = ["text,label"] + [f"caf\xe9 {w},{i % 2}" for i, w in enumerate(VOCAB * 3)]
    (folder / "train.csv").write_bytes("\n".join(lines).encode("latin-1"))
    return {"FT_DATASET": str(folder)}


def model_without_weights(tmp: Path, model: Path) -> dict[str, str]:
    copy = Path(shutil.copytree(model, tmp / "no-weights"))
    (copy / "model.safetensors").unlink()
    return {"FT_MODEL": str(copy)}


def foreign_tokenizer(tmp: Path, model: Path) -> dict[str, str]:
    from transformers import BertTokenizerFast

    copy = Path(shutil.copytree(model, tmp / "foreign-tokenizer"))
    vocab = tmp / "bigger-vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB, *(f"w{i}" for i in range(50))]))
    BertTokenizerFast(vocab=str(vocab), model_max_length=64).save_pretrained(copy)
    return {"FT_MODEL": str(copy)}


def s3_case(values: dict[str, str]) -> Setup:
    def setup(tmp: Path, model: Path) -> dict[str, str]:
        return {"_S3": "1", **values}

    return setup


TWO_CLASSES = rows("binary", 60)
CASES: dict[str, tuple[Setup, int, str]] = {
    # settings, one or more per group
    "run_id_characters": (env(FT_RUN_ID="my run!"), CONFIG, r"FT_RUN_ID='my run!' is invalid; expected 1-64 letters"),
    "log_format_choice": (env(FT_LOG_FORMAT="xml"), CONFIG, r"FT_LOG_FORMAT='xml' is invalid; expected one of"),
    "max_length_range": (env(FT_MAX_LENGTH="4"), CONFIG, r"FT_MAX_LENGTH='4' is invalid; expected an integer >= 8"),
    "validation_fraction_range": (env(FT_VALIDATION_FRACTION="1.5"), CONFIG, r"FT_VALIDATION_FRACTION='1.5'"),
    "batch_size_type": (env(FT_BATCH_SIZE="lots"), CONFIG, r"FT_BATCH_SIZE='lots' is invalid; expected an integer"),
    "learning_rate_range": (env(FT_LEARNING_RATE="-1"), CONFIG, r"FT_LEARNING_RATE='-1' is invalid"),
    "master_port_range": (env(FT_MASTER_PORT="70000"), CONFIG, r"FT_MASTER_PORT='70000' is invalid"),
    "addressing_style_choice": (env(FT_S3_ADDRESSING_STYLE="sideways"), CONFIG, r"FT_S3_ADDRESSING_STYLE="),
    "save_total_limit_range": (env(FT_SAVE_TOTAL_LIMIT="0"), CONFIG, r"FT_SAVE_TOTAL_LIMIT='0' is invalid"),
    "promote_min_type": (env(FT_PROMOTE_MIN="high"), CONFIG, r"FT_PROMOTE_MIN='high' is invalid; expected a number"),
    "verify_samples_range": (env(FT_VERIFY_SAMPLES="0"), CONFIG, r"FT_VERIFY_SAMPLES='0' is invalid"),
    "duplicate_labels": (env(FT_LABELS="pos,neg,pos"), CONFIG, r"FT_LABELS lists a label twice"),
    # locations
    "dataset_scheme": (env(FT_DATASET="ftp://host/data"), CONFIG, r"FT_DATASET='ftp://host/data' uses the unsupported"),
    "output_scheme": (env(FT_OUTPUT="gs://bucket/runs"), CONFIG, r"FT_OUTPUT='gs://bucket/runs' uses the unsupported"),
    "checkpoint_scheme": (
        env(FT_CHECKPOINT_DIR="gs://b/c"),
        CONFIG,
        r"FT_CHECKPOINT_DIR='gs://b/c' uses the unsupported",
    ),
    "missing_dataset_path": (env(FT_DATASET="./nowhere"), CONFIG, r"FT_DATASET='./nowhere' does not exist"),
    # data
    "missing_column": (
        data_file([{"review": "great", "label": 1}] * 4),
        DATA,
        r"column 'text' is not in split 'train' \(columns: review, label\); set FT_TEXT_COLUMN",
    ),
    "null_labels": (data_file([*TWO_CLASSES, {"text": "great film", "label": None}]), DATA, r"have no label"),
    "mostly_empty_texts": (
        data_file([*TWO_CLASSES[:10], *({"text": "  ", "label": i % 2} for i in range(30))]),
        DATA,
        r"30 of 40 rows of split 'train' have empty text in column 'text'; check FT_TEXT_COLUMN",
    ),
    "only_empty_texts": (data_file([{"text": " ", "label": i % 2} for i in range(20)]), DATA, r"no rows with text"),
    "single_class": (
        data_file([{"text": "great film", "label": 1}] * 20),
        DATA,
        r"has 1 label value\(s\) in column 'label' \(1\); classification needs at least two",
    ),
    "eval_label_unseen": (
        lambda tmp, model: {
            "FT_DATASET": str(write(tmp / "u" / "train.jsonl", TWO_CLASSES).parent),
            **{"_extra": str(write(tmp / "u" / "validation.jsonl", [{"text": "great", "label": 7}] * 5))},
        },
        DATA,
        r"split 'validation' has label\(s\) not seen in training: '7'; add them",
    ),
    "non_utf8_file": (non_utf8, DATA, r"is not UTF-8 text .*; re-encode the file as UTF-8"),
    "no_data_files": (
        lambda tmp, model: {"FT_DATASET": str(Path(tmp / "empty").mkdir() or tmp / "empty")},
        DATA,
        r"holds no csv, json, jsonl or parquet files; set FT_DATASET",
    ),
    # model
    "max_length_beyond_model": (env(FT_MAX_LENGTH="128"), CONFIG, r"FT_MAX_LENGTH=128 is beyond the model's limit"),
    "model_without_weights": (model_without_weights, CONFIG, r"FT_MODEL=.*model.safetensors"),
    "tokenizer_of_another_model": (foreign_tokenizer, CONFIG, r"the tokenizer files do not belong to this model"),
    # storage
    "missing_bucket": (
        s3_case({"FT_DATASET": "s3://no-such-bucket/data"}),
        STORAGE,
        r"FT_DATASET=s3://no-such-bucket/data: bucket 'no-such-bucket' does not exist",
    ),
    "checkpoint_dir_not_writable": (
        lambda tmp, model: {"FT_CHECKPOINT_DIR": str(Path(tmp / "ro").write_text("") or tmp / "ro" / "sub")},
        STORAGE,
        r"FT_CHECKPOINT_DIR=.*/ro/sub/bad: a part of the path is a file, not a folder; remove that file or point "
        r"FT_CHECKPOINT_DIR elsewhere",
    ),
    "no_credentials": (
        s3_case({"FT_OUTPUT": "s3://some-bucket/runs", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}),
        STORAGE,
        r"FT_OUTPUT=s3://some-bucket/runs/bad/: no AWS credentials found",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_the_exit_code_and_nothing_complete(  # noqa: PLR0917 (fixtures)
    case: str,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    setup, code, message = CASES[case]
    good = write(tmp_path / "good" / "train.jsonl", TWO_CLASSES).parent
    values = ft_env(tmp_path, tiny_model, good, FT_RUN_ID="bad", FT_EPOCHS="1")
    values.update(setup(tmp_path, tiny_model))
    if values.pop("_S3", None):
        request.getfixturevalue("s3")  # the local S3 server and its credentials
    values.pop("_extra", None)
    for name, value in values.items():
        if value == "":
            clean_env.delenv(name, raising=False)
        else:
            clean_env.setenv(name, value)

    assert cli.run([]) == code
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    errors = [e for e in events if e["level"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["exit_code"] == code and "\n" not in errors[0]["error"]
    assert re.search(message, errors[0]["error"]), errors[0]["error"]
    assert not list((tmp_path / "outputs").rglob("_COMPLETE.json"))  # nothing that looks complete


def test_misspelt_setting_is_named_with_a_suggestion(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("FT_MODEL", str(tiny_model))
    clean_env.setenv("FT_DATASET", str(write(tmp_path / "d" / "train.jsonl", [{"review": "x", "label": 1}]).parent))
    clean_env.setenv("FT_EPOCS", "3")
    clean_env.setenv("FT_LOG_FORMAT", "json")
    clean_env.setenv("FT_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.run([]) == DATA
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    warning = next(e for e in events if e["event"] == "config.unknown_variable")
    assert "FT_EPOCS" in warning["detail"] and "FT_EPOCHS" in warning["detail"]


def test_pickle_weights_load_only_when_allowed(make_settings, tmp_path: Path, tiny_model: Path) -> None:
    import torch
    from transformers import AutoModel

    from job.errors import ConfigError
    from job.labels import LabelSpec
    from job.modeling import load_model

    pickled = Path(shutil.copytree(tiny_model, tmp_path / "pickled"))
    (pickled / "model.safetensors").unlink()
    model = AutoModel.from_pretrained(str(tiny_model))
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    labels = LabelSpec("single_label_classification", ("neg", "pos"))
    with pytest.raises(ConfigError, match=r"FT_ALLOW_PICKLE_WEIGHTS=true"):
        load_model(pickled, make_settings(model=str(pickled), dataset="unused"), labels)
    loaded = load_model(pickled, make_settings(model=str(pickled), dataset="unused", allow_pickle_weights=True), labels)
    assert torch.equal(loaded.bert.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)

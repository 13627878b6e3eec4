"""Texts longer than the model's limit: windows in training, pooled scores in evaluation,
the reload check and `predict`; truncation as the setting that turns it off."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FILLER, NEGATIVE, POSITIVE, ft_env, run_cli, write
from transformers import AutoTokenizer

from job.errors import ConfigError
from job.tokenization import LENGTH, texts_of, tokenize
from job.windows import WINDOW, Windowing, pool, resolve

MAX_LENGTH = 16  # 14 text tokens a window: the deciding word at each text's end is far beyond


def test_long_texts_keep_every_window_up_to_the_cap_then_spread_from_first_to_last() -> None:
    windowing = Windowing(max_length=16, overlap=3, max_windows=3)
    texts = [0, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert windowing.keep(texts) == [0, 1, 2, 3, 6, 9]  # text 2: its 1st, 4th and 7th (last) windows
    assert Windowing(16, 3, max_windows=1).keep(texts) == [0, 1, 3]


def test_pooling_averages_each_texts_windows_in_the_order_texts_first_appear() -> None:
    logits = np.array([[1.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 2.0]])
    pooled, index, labels = pool(logits, [7, 3, 7, 5], np.array([1, 0, 1, 1]))
    assert index == [7, 3, 5]
    np.testing.assert_allclose(pooled, [[2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    assert labels is not None and labels.tolist() == [1, 0, 1]
    whole, same, _ = pool(logits, [4, 1, 2, 0])
    assert whole is logits and same == [4, 1, 2, 0]  # one row per text: unchanged


def test_an_overlap_of_more_than_half_a_window_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"FT_WINDOW_OVERLAP=8 .*half of the 14 text tokens"):
        resolve("windows", 8, 8, max_length=16, special_tokens=2, pairs=False)
    assert resolve("auto", None, 8, max_length=16, special_tokens=2, pairs=False).overlap == 3
    assert not resolve("auto", None, 8, max_length=16, special_tokens=2, pairs=True).active  # pairs are cut
    assert not resolve("truncate", None, 8, max_length=16, special_tokens=2, pairs=False).active


def test_a_long_row_becomes_overlapping_windows_that_carry_its_columns(tiny_model: Path) -> None:
    from datasets import Dataset

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    words = [FILLER[i % len(FILLER)] for i in range(30)]
    dataset = Dataset.from_dict({"text": [" ".join(words), "great film"], "label": [1, 0], "index": [0, 1]})
    windowed = tokenize(
        dataset, tokenizer, text_column="text", pair_column=None, windowing=Windowing(16, 3, 8), keep_text=True
    )
    ids = windowed["input_ids"]
    assert windowed["index"] == [0, 0, 0, 1] and windowed["label"] == [1, 1, 1, 0]
    assert windowed[WINDOW] == [0, 1, 2, 0] and windowed["text"][1] == " ".join(words)
    assert [len(i) for i in ids[:2]] == [16, 16] and windowed[LENGTH][:2] == [16, 16]
    assert ids[0][-4:-1] == ids[1][1:4]  # consecutive windows share 3 tokens
    body = [t for window in ids[:3] for t in window[1:-1]]
    assert len(body) - 3 * 2 == 30  # every word is in a window, the overlaps counted once
    assert len(texts_of(windowed)) == 2
    cut = tokenize(
        dataset, tokenizer, text_column="text", pair_column=None, windowing=Windowing(16, None, 8), keep_text=False
    )
    assert len(cut) == 2 and cut[WINDOW] == [0, 0] and "text" not in cut.column_names


def _long_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Long filler texts whose label is decided by their last three words alone."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        positive = i % 2 == 0
        words = [rng.choice(FILLER) for _ in range(rng.randint(24, 36))]
        verdict = rng.sample(POSITIVE if positive else NEGATIVE, 3)
        out.append({"text": " ".join([*words, *verdict]), "label": int(positive)})
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def long_texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("long-texts")
    write(data / "train.jsonl", _long_rows(240, seed=1))
    write(data / "validation.jsonl", _long_rows(60, seed=2))
    write(data / "test.jsonl", _long_rows(60, seed=3))
    return data


def _train(root: Path, model: Path, data: Path, mode: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    env = ft_env(
        root,
        model,
        data,
        FT_RUN_ID=mode,
        FT_MAX_LENGTH=str(MAX_LENGTH),
        FT_LONG_TEXTS=mode,
        FT_EPOCHS="8",
        FT_LEARNING_RATE="1e-2",
        FT_WARMUP_RATIO="0",
        FT_CHARTS="false",
    )
    result, events = run_cli(env=env, cwd=root)
    assert result.returncode == 0, [str(e)[:1500] for e in events if e["level"] == "error"]
    return json.loads((root / "outputs" / mode / "metrics.json").read_text()), events


@pytest.fixture(scope="module")
def windowed_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, long_texts: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("windows")
    metrics, events = _train(root, tiny_model, long_texts, "windows")
    return {"root": root, "metrics": metrics, "events": events}


@pytest.mark.slow
def test_windows_learn_a_label_decided_by_the_end_of_the_text_and_truncation_cannot(
    tmp_path: Path, tiny_model: Path, long_texts: Path, windowed_run: dict[str, Any]
) -> None:
    cut, _ = _train(tmp_path, tiny_model, long_texts, "truncate")
    windowed = windowed_run["metrics"]
    assert windowed["test"]["accuracy"] >= 0.9, windowed["test"]
    assert cut["test"]["accuracy"] <= 0.7, cut["test"]  # the first 14 tokens say nothing
    verified = next(e for e in windowed_run["events"] if e["event"] == "verify.passed")
    assert verified["windowed"] == verified["rows"] > 0  # the reload check pooled windows too
    manifest = json.loads((windowed_run["root"] / "outputs" / "windows" / "run_manifest.json").read_text())
    assert manifest["data"]["long_texts"] == {"mode": "windows", "max_length": 16, "overlap": 3, "max_windows": 8}
    assert manifest["data"]["token_lengths"]["train"]["texts"] == 240
    assert manifest["data"]["token_lengths"]["train"]["texts_in_windows"] == 240
    card = (windowed_run["root"] / "outputs" / "windows" / "README.md").read_text()
    assert "split into windows of 16 tokens that overlap by 3" in card


@pytest.mark.slow
def test_predict_scores_long_texts_by_their_windows_as_the_model_was_trained(
    tmp_path: Path, long_texts: Path, windowed_run: dict[str, Any]
) -> None:
    model = windowed_run["root"] / "outputs" / "windows"
    env = ft_env(tmp_path, model, long_texts / "test.jsonl", FT_RUN_ID="scored")
    result, events = run_cli("predict", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "outputs" / "scored" / "predictions.jsonl").open()]
    assert len(lines) == 60 and [line["index"] for line in lines] == list(range(60))
    done = next(e for e in events if e["event"] == "predict.completed")
    assert done["value"] == pytest.approx(windowed_run["metrics"]["test"]["f1_macro"], abs=0.02)
    manifest = json.loads((tmp_path / "outputs" / "scored" / "predict_manifest.json").read_text())
    assert manifest["data"]["long_texts"]["mode"] == "windows" and manifest["data"]["windows"] > 60

    env["FT_LONG_TEXTS"], env["FT_RUN_ID"] = "truncate", "cut"
    result, events = run_cli("predict", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    cut = next(e for e in events if e["event"] == "predict.completed")
    assert cut["value"] < done["value"] - 0.2  # the first window alone does not decide


@pytest.mark.slow
def test_check_says_how_many_texts_need_windows(tmp_path: Path, tiny_model: Path, long_texts: Path) -> None:
    env = ft_env(tmp_path, tiny_model, long_texts, FT_MAX_LENGTH=str(MAX_LENGTH), FT_CHARTS="false")
    result, events = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    said = next(e for e in events if e["event"] == "check.windows")
    assert said["texts_longer"] == 240 and said["windows"] > 240
    lengths = next(e for e in events if e["event"] == "check.lengths" and e["split"] == "train")
    assert lengths["rows"] == 240 and lengths["truncated"] == 240 and lengths["p50"] > MAX_LENGTH
    env["FT_LONG_TEXTS"] = "truncate"
    result, events = run_cli("check", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = next(e for e in events if e["event"] == "check.truncation")
    assert "FT_LONG_TEXTS=windows" in warned["effect"]

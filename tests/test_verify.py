"""The reload check catches a saved folder that does not reproduce the predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rows, write
from transformers import AutoTokenizer, DataCollatorWithPadding

from job.errors import VerificationError
from job.modeling import load_model
from job.prepare import prepare
from job.results import Prediction
from job.verify import verify_saved_model


@pytest.fixture
def saved(make_settings, tmp_path: Path, tiny_model: Path):
    settings = make_settings(dataset=str(write(tmp_path / "d" / "train.csv", rows("binary", 80))), verify_samples=8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prepared = prepare(settings, tokenizer, 64)
    model = load_model(tiny_model, settings, prepared.labels).eval()
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    features = prepared.validation.remove_columns(["text", "index", "labels", "length"])
    batch = DataCollatorWithPadding(tokenizer)([features[i] for i in range(len(features))])
    with torch.no_grad():
        logits = model(**batch).logits.numpy()
    prediction = Prediction(
        logits=logits, labels=np.array(prepared.validation["labels"]), index=prepared.validation["index"]
    )
    return settings, prepared, folder, prediction


def test_a_faithful_save_passes(saved) -> None:
    settings, prepared, folder, prediction = saved
    result = verify_saved_model(folder, prepared, prediction, settings, precision="no")
    assert result["rows"] == 8 and result["max_abs_diff"] < 1e-5 and result["label_mismatches"] == 0


def test_predictions_that_differ_fail(saved) -> None:
    settings, prepared, folder, prediction = saved
    shifted = Prediction(
        logits=prediction.logits + np.array([0.0, 0.1]), labels=prediction.labels, index=prediction.index
    )
    with pytest.raises(VerificationError, match="does not reproduce the evaluated predictions"):
        verify_saved_model(folder, prepared, shifted, settings, precision="no")


def test_a_swapped_label_map_fails(saved) -> None:
    settings, prepared, folder, prediction = saved
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "1", "1": "0"}
    config["label2id"] = {"1": 0, "0": 1}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(VerificationError, match="does not reproduce"):
        verify_saved_model(folder, prepared, prediction, settings, precision="no")


def test_a_missing_tokenizer_fails(saved) -> None:
    settings, prepared, folder, prediction = saved
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(VerificationError, match="tokenizes 8 of 8 rows differently from training"):
        verify_saved_model(folder, prepared, prediction, settings, precision="no")

"""Prove the saved folder works: reload it the way users will, and compare.

The saved model and tokenizer are loaded through `pipeline("text-classification")`
and must reproduce the evaluated predictions on a sample of validation rows.
Catches a missing tokenizer file, wrong label maps, unsaved weights, or a head
that did not load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from transformers import pipeline

from job import metrics
from job.errors import VerificationError
from job.labels import REGRESSION
from job.logs import get_logger
from job.prepare import PreparedData
from job.results import Prediction
from job.settings import Settings

log = get_logger("job.verify")


def verify_saved_model(
    model_dir: Path, prepared: PreparedData, validation: Prediction, settings: Settings, *, precision: str
) -> dict[str, Any]:
    spec = prepared.labels
    positions = _sample(len(validation.index), settings.verify_samples)
    rows = prepared.validation.select(positions)
    if settings.text_pair_column:
        inputs: list[Any] = [
            {"text": a, "text_pair": b}
            for a, b in zip(rows[settings.text_column], rows[settings.text_pair_column], strict=True)
        ]
    else:
        inputs = list(rows[settings.text_column])

    try:
        classifier = pipeline("text-classification", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
        outputs = classifier(inputs, top_k=None, truncation=True, max_length=prepared.max_length, batch_size=8)
    except Exception as exc:
        raise VerificationError(
            f"the saved model in {model_dir} does not load with pipeline('text-classification'): "
            f"{str(exc).splitlines()[0][:300]}; nothing was published"
        ) from None

    # A folder missing its tokenizer files still "loads" (as a near-empty vocabulary),
    # and an input-insensitive model can hide that; compare the token ids directly.
    texts = [settings.text_column] + ([settings.text_pair_column] if settings.text_pair_column else [])
    reloaded = classifier.tokenizer(*(list(rows[c]) for c in texts), truncation=True, max_length=prepared.max_length)
    differing = sum(a != b for a, b in zip(reloaded["input_ids"], list(rows["input_ids"]), strict=True))
    if differing:
        raise VerificationError(
            f"the tokenizer saved in {model_dir} tokenizes {differing} of {len(inputs)} rows differently from "
            "training; the tokenizer files are missing or wrong — nothing was published"
        )

    # Scores are placed by the label names the job trained with, so a saved config
    # with the wrong id2label shows up as a mismatch.
    order = {name: i for i, name in spec.id2label.items()}
    actual = np.zeros((len(inputs), spec.num_labels))
    for r, scores in enumerate(outputs):
        for item in scores:
            if item["label"] not in order:
                raise VerificationError(
                    f"the model saved in {model_dir} predicts label '{item['label']}', which is not one of the "
                    f"trained labels ({', '.join(order)}); its config.json label map is wrong — nothing was published"
                )
            actual[r, order[item["label"]]] = item["score"]
    expected = metrics.probabilities(validation.logits[positions], spec).reshape(len(inputs), -1)

    # Mixed precision evaluates in bf16/fp16; the reload runs in fp32.
    # Batch composition alone moves fp32 probabilities by ~1e-5.
    tolerance = 1e-3 if precision == "no" else 3e-2
    close = np.isclose(actual, expected, rtol=tolerance, atol=tolerance)
    flipped = 0
    if spec.problem_type != REGRESSION and spec.num_labels > 1:
        top2 = np.sort(expected, axis=1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > tolerance
        flipped = int(((actual.argmax(1) != expected.argmax(1)) & decisive).sum())
    max_diff = float(np.abs(actual - expected).max())
    result = {"rows": len(inputs), "max_abs_diff": max_diff, "tolerance": tolerance, "label_mismatches": flipped}
    if not close.all() or flipped:
        raise VerificationError(
            f"the model reloaded from {model_dir} does not reproduce the evaluated predictions "
            f"(max difference {max_diff:.2e} > {tolerance:g}, {flipped} of {len(inputs)} labels differ); "
            "nothing was published — report this with the run manifest"
        )
    log.info("verify.passed", **result)
    return result


def _sample(total: int, wanted: int) -> list[int]:
    """Evenly spaced rows of the (length-sorted) split: long and short inputs alike."""
    count = min(total, wanted)
    return sorted({int(i) for i in np.linspace(0, total - 1, count)})

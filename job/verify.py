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
from datasets import Dataset
from transformers import pipeline

from job import inference, metrics, windows
from job.data import INDEX
from job.errors import VerificationError
from job.labels import REGRESSION, LabelSpec
from job.logs import get_logger
from job.prepare import PreparedData
from job.results import Prediction
from job.settings import Settings
from job.tokenization import tokenize
from job.windows import WINDOW

log = get_logger("job.verify")


def verify_saved_model(
    model_dir: Path, prepared: PreparedData, validation: Prediction, settings: Settings, *, precision: str
) -> dict[str, Any]:
    spec = prepared.labels
    positions = _sample(len(validation.index), settings.verify_samples)
    texts = [validation.index[p] for p in positions]
    split = prepared.validation
    rows_of = _rows_by_text(split)
    rows = split.select([rows_of[t][0] for t in texts])  # every window row carries its text
    windowed = [len(rows_of[t]) > 1 for t in texts]

    try:
        classifier = pipeline("text-classification", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
    except Exception as exc:
        raise VerificationError(
            f"the saved model in {model_dir} does not load with pipeline('text-classification'): "
            f"{str(exc).splitlines()[0][:300]}; nothing was published"
        ) from None

    # A folder missing its tokenizer files still "loads" (as a near-empty vocabulary),
    # and an input-insensitive model can hide that; compare the token ids directly.
    windowing = windows.Windowing.of_record(prepared.meta["long_texts"])
    retokenized = tokenize(
        rows.select_columns([c for c in (settings.text_column, settings.text_pair_column, INDEX) if c]),
        classifier.tokenizer,
        text_column=settings.text_column,
        pair_column=settings.text_pair_column,
        windowing=windowing,
        keep_text=False,
    )
    trained_ids = [split[i]["input_ids"] for t in texts for i in rows_of[t]]
    differing = len(retokenized) != len(trained_ids) or sum(
        a != b for a, b in zip(retokenized["input_ids"], trained_ids, strict=True)
    )
    if differing:
        raise VerificationError(
            f"the tokenizer saved in {model_dir} tokenizes {int(differing)} of {len(texts)} rows differently from "
            "training; the tokenizer files are missing or wrong — nothing was published"
        )

    # Texts that fit one window are scored the way users will, through the pipeline; longer
    # ones as `predict` scores them, by pooling their windows through the reloaded model.
    actual = np.zeros((len(texts), spec.num_labels))
    whole = [r for r, w in enumerate(windowed) if not w]
    if whole:
        outputs = _pipeline_scores(classifier, rows.select(whole), settings, prepared.max_length)
        for r, scores in zip(whole, outputs, strict=True):
            actual[r] = _placed(scores, spec, model_dir)
    long = [r for r, w in enumerate(windowed) if w]
    if long:
        actual[long] = _pooled_scores(classifier, retokenized, [texts[r] for r in long], spec, model_dir)
    expected = metrics.probabilities(validation.logits[positions], spec).reshape(len(texts), -1)

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
    result = {
        "rows": len(texts),
        "windowed": int(sum(windowed)),
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "label_mismatches": flipped,
    }
    if not close.all() or flipped:
        raise VerificationError(
            f"the model reloaded from {model_dir} does not reproduce the evaluated predictions "
            f"(max difference {max_diff:.2e} > {tolerance:g}, {flipped} of {len(texts)} labels differ); "
            "nothing was published — report this with the run manifest"
        )
    log.info("verify.passed", **result)
    return result


def _rows_by_text(split: Dataset) -> dict[int, list[int]]:
    """Each text's rows in the split, in window order."""
    found: dict[int, list[tuple[int, int]]] = {}
    for row, (text, window) in enumerate(zip(split[INDEX], split[WINDOW], strict=True)):
        found.setdefault(int(text), []).append((int(window), row))
    return {text: [row for _, row in sorted(rows)] for text, rows in found.items()}


def _pipeline_scores(classifier: Any, rows: Dataset, settings: Settings, max_length: int) -> list[Any]:
    if settings.text_pair_column:
        inputs: list[Any] = [
            {"text": a, "text_pair": b}
            for a, b in zip(rows[settings.text_column], rows[settings.text_pair_column], strict=True)
        ]
    else:
        inputs = list(rows[settings.text_column])
    return classifier(inputs, top_k=None, truncation=True, max_length=max_length, batch_size=8)


def _placed(scores: list[dict[str, Any]], spec: LabelSpec, model_dir: Path) -> np.ndarray:
    """Scores placed by the label names the job trained with, so a saved config with the
    wrong id2label shows up as a mismatch."""
    order = {name: i for i, name in spec.id2label.items()}
    placed = np.zeros(spec.num_labels)
    for item in scores:
        if item["label"] not in order:
            raise VerificationError(
                f"the model saved in {model_dir} predicts label '{item['label']}', which is not one of the "
                f"trained labels ({', '.join(order)}); its config.json label map is wrong — nothing was published"
            )
        placed[order[item["label"]]] = item["score"]
    return placed


def _pooled_scores(
    classifier: Any, retokenized: Dataset, texts: list[int], spec: LabelSpec, model_dir: Path
) -> np.ndarray:
    wanted = set(texts)
    chosen = retokenized.filter(lambda row: row[INDEX] in wanted)
    scored = inference.score(chosen, classifier.model, classifier.tokenizer, batch_size=8, precision="no", workers=0)
    logits, order, _ = windows.pool(scored.logits, chosen[INDEX])
    probabilities = metrics.probabilities(logits, spec).reshape(len(order), -1)
    names = classifier.model.config.id2label
    by_text = {
        text: _placed([{"label": names[i], "score": p} for i, p in enumerate(row)], spec, model_dir)
        for text, row in zip(order, probabilities, strict=True)
    }
    return np.stack([by_text[t] for t in texts])


def _sample(total: int, wanted: int) -> list[int]:
    """Evenly spaced rows of the (length-sorted) split: long and short inputs alike."""
    count = min(total, wanted)
    return sorted({int(i) for i in np.linspace(0, total - 1, count)})

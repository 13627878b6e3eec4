"""Tokenize without padding; batches are padded later, only to their own longest row."""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from job.windows import WINDOW, Windowing

LENGTH = "length"


def tokenize(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    text_column: str,
    pair_column: str | None,
    windowing: Windowing,
    keep_text: bool,
) -> Dataset:
    """Adds input ids, attention mask (and token types) plus each row's token count. With
    windows, a row longer than the max length becomes several rows, one per window, each
    with the source row's other columns and its window's position."""
    max_length = windowing.max_length
    drop = [] if keep_text else [c for c in (text_column, pair_column) if c]

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pairs = batch[pair_column] if pair_column else None
        if not windowing.active:
            encoded = dict(tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length))
            encoded[WINDOW] = [0] * len(encoded["input_ids"])
        else:
            encoded = dict(
                tokenizer(
                    batch[text_column],
                    truncation=True,
                    max_length=max_length,
                    stride=windowing.overlap,
                    return_overflowing_tokens=True,
                )
            )
            sources = encoded.pop("overflow_to_sample_mapping")
            kept = windowing.keep(sources)
            encoded = {name: [values[i] for i in kept] for name, values in encoded.items()}
            sources = [sources[i] for i in kept]
            encoded[WINDOW] = _positions(sources)
            for column in batch:
                if column not in drop:
                    encoded[column] = [batch[column][s] for s in sources]
        encoded[LENGTH] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    # Windows change the number of rows, so every source column is rebuilt by `encode`.
    remove = dataset.column_names if windowing.active else drop
    return dataset.map(encode, batched=True, batch_size=1000, remove_columns=remove, desc="tokenize")


def texts_of(dataset: Dataset) -> Dataset:
    """One row per text: each text's first window (the dataset itself when nothing was split)."""
    if WINDOW not in dataset.column_names:
        return dataset
    positions = np.asarray(dataset[WINDOW])
    if not positions.any():
        return dataset
    return dataset.select(np.flatnonzero(positions == 0).tolist())


def _positions(sources: list[int]) -> list[int]:
    positions: list[int] = []
    for i, source in enumerate(sources):
        positions.append(positions[-1] + 1 if i and sources[i - 1] == source else 0)
    return positions


def length_stats(dataset: Dataset, max_length: int) -> dict[str, Any]:
    lengths = np.asarray(dataset[LENGTH])
    if lengths.size == 0:
        return {"rows": 0}
    return {
        "rows": int(lengths.size),
        "tokens": int(lengths.sum()),
        "mean": round(float(lengths.mean()), 1),
        "p50": int(np.percentile(lengths, 50)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        # Rows that reached the limit were (almost always) cut short, or are a long text's windows.
        "at_max_length": int((lengths >= max_length).sum()),
        **_window_counts(dataset),
    }


def _window_counts(dataset: Dataset) -> dict[str, int]:
    if WINDOW not in dataset.column_names:
        return {}
    positions = np.asarray(dataset[WINDOW])
    return {"texts": int((positions == 0).sum()), "texts_in_windows": int((positions == 1).sum())}

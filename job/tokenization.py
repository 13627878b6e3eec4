"""Tokenize without padding; batches are padded later, only to their own longest row."""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

LENGTH = "length"


def tokenize(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    text_column: str,
    pair_column: str | None,
    max_length: int,
    keep_text: bool,
) -> Dataset:
    """Adds input ids, attention mask (and token types) plus each row's token count."""

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pairs = batch[pair_column] if pair_column else None
        encoded = tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)
        encoded[LENGTH] = [len(ids) for ids in encoded["input_ids"]]
        return dict(encoded)

    drop = [] if keep_text else [c for c in (text_column, pair_column) if c]
    return dataset.map(encode, batched=True, batch_size=1000, remove_columns=drop, desc="tokenize")


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
        # Rows that reached the limit were (almost always) cut short.
        "at_max_length": int((lengths >= max_length).sum()),
    }

"""Texts longer than the model's limit: split into overlapping windows, each trained on
with its text's label, and a text scored by the mean of its windows' logits.

Training, evaluation, the reload check and `predict` share these rules, so a text is
seen the same way everywhere. Truncation (the first window only) stays a setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from job.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from job.settings import Settings

WINDOW = "window"  # a row's position among its text's windows, 0 for the first


@dataclass(frozen=True)
class Windowing:
    """How texts beyond `max_length` tokens are handled; `overlap` is None when they are cut."""

    max_length: int
    overlap: int | None
    max_windows: int

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> Windowing:
        """The windowing that `record()` wrote."""
        return cls(int(record["max_length"]), record.get("overlap"), int(record.get("max_windows", 1)))

    @property
    def active(self) -> bool:
        return self.overlap is not None

    def record(self) -> dict[str, Any]:
        if not self.active:
            return {"mode": "truncate", "max_length": self.max_length}
        return {
            "mode": "windows",
            "max_length": self.max_length,
            "overlap": self.overlap,
            "max_windows": self.max_windows,
        }

    def keep(self, texts: list[int]) -> list[int]:
        """Of the windows of a tokenizer batch (`texts`: each window's text), the positions
        to keep: every window of a text that has at most `max_windows`, else that many,
        evenly spaced from its first to its last (the end of a text often decides its label)."""
        kept: list[int] = []
        start = 0
        while start < len(texts):
            end = start
            while end < len(texts) and texts[end] == texts[start]:
                end += 1
            count = end - start
            if count <= self.max_windows:
                kept.extend(range(start, end))
            elif self.max_windows == 1:
                kept.append(start)
            else:
                step = (count - 1) / (self.max_windows - 1)
                kept.extend(sorted({start + round(i * step) for i in range(self.max_windows)}))
            start = end
        return kept


def of_settings(
    settings: Settings,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    mode: str | None = None,
    overlap: int | None = None,
) -> Windowing:
    """The run's windowing: FT_LONG_TEXTS (or `mode`), FT_WINDOW_OVERLAP (when unset, `overlap`,
    else a quarter of a window), FT_MAX_WINDOWS."""
    windowing = resolve(
        mode or settings.long_texts,
        settings.window_overlap if settings.window_overlap is not None else overlap,
        settings.max_windows,
        max_length=max_length,
        special_tokens=tokenizer.num_special_tokens_to_add(pair=False),
        pairs=settings.text_pair_column is not None,
    )
    if windowing.active and not tokenizer.is_fast:
        raise ConfigError(
            "FT_LONG_TEXTS=windows needs a fast (Rust) tokenizer, and FT_MODEL's loads only a slow one; "
            "set FT_LONG_TEXTS=truncate or add a tokenizer.json to the model folder"
        )
    return windowing


def resolve(
    mode: str, overlap: int | None, max_windows: int, *, max_length: int, special_tokens: int, pairs: bool
) -> Windowing:
    """The windowing for these settings. `auto` means windows; text pairs are always cut,
    because which of the two texts to split is the task's business, not the job's."""
    if mode == "truncate" or pairs:
        return Windowing(max_length, None, max_windows)
    room = max_length - special_tokens
    if overlap is not None and overlap > room // 2:
        raise ConfigError(
            f"FT_WINDOW_OVERLAP={overlap} must be at most half of the {room} text tokens a window holds "
            f"at FT_MAX_LENGTH={max_length}; lower it (default: a quarter, {room // 4})"
        )
    return Windowing(max_length, room // 4 if overlap is None else overlap, max_windows)


def pool(
    logits: np.ndarray, texts: list[int] | np.ndarray, labels: np.ndarray | None = None
) -> tuple[np.ndarray, list[int], np.ndarray | None]:
    """One row per text: the mean of its windows' logits, its label, its index, in the order
    the texts first appear. Rows that are whole texts come back unchanged."""
    index = np.asarray(texts)
    unique, first, inverse = np.unique(index, return_index=True, return_inverse=True)
    if len(unique) == len(index):
        return logits, index.tolist(), labels
    logits = np.asarray(logits, dtype=np.float64)
    sums = np.zeros((len(unique), *logits.shape[1:]))
    np.add.at(sums, inverse, logits)
    counts = np.bincount(inverse, minlength=len(unique)).reshape(-1, *([1] * (logits.ndim - 1)))
    order = np.argsort(first, kind="stable")
    pooled = (sums / counts)[order].astype(np.float32)
    return pooled, unique[order].tolist(), None if labels is None else np.asarray(labels)[first[order]]

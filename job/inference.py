"""Score tokenized rows fast: longest rows first, each batch padded only to its own
longest row, no autograd, bf16/fp16 autocast (bf16 also on CPUs with bf16 instructions).

One process on one device; spreading rows over several GPUs is a follow-up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase

from job import device
from job.errors import Preempted, TrainingError
from job.logs import get_logger
from job.tokenization import LENGTH

PROGRESS_EVERY_S = 30.0

log = get_logger("job.inference")


@dataclass
class Scored:
    logits: np.ndarray  # one row per dataset row, in the dataset's order
    stats: dict[str, Any] = field(default_factory=dict)


def score(
    dataset: Dataset,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int,
    precision: str,
    workers: int,
    stop: Callable[[], bool] = lambda: False,
) -> Scored:
    """Logits for every row of `dataset` (tokenized, with a length column). `stop` is asked
    between batches: a stop request ends the scoring with Preempted (nothing is published)."""
    target = device.device()
    cuda = target.type == "cuda"
    lengths = np.asarray(dataset[LENGTH], dtype=np.int64)
    # Longest first: neighbours have about the same length, so batches carry little
    # padding, and memory peaks on the very first batch (an OOM shows at once).
    order = np.argsort(-lengths, kind="stable")
    inputs = [c for c in tokenizer.model_input_names if c in dataset.column_names]
    loader = DataLoader(
        dataset.select_columns(inputs).select(order),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=device.pad_multiple()),
        num_workers=workers,
        pin_memory=cuda,
    )
    done_tokens = np.cumsum(lengths[order])
    total_tokens = int(done_tokens[-1]) if len(done_tokens) else 0
    dtype = device.autocast_dtype(precision)
    autocast = torch.autocast(target.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    model.eval().to(target)
    outputs: list[torch.Tensor] = []
    processed = batches = rows_done = 0
    started = last_report = time.monotonic()
    try:
        with torch.inference_mode(), autocast:
            for padded in loader:
                if stop():
                    raise Preempted(
                        f"stopped on request after scoring {rows_done} of {len(order)} rows; nothing was published — "
                        "run again with the same FT_RUN_ID"
                    )
                batch = {k: v.to(target, non_blocking=True) for k, v in padded.items()}
                outputs.append(model(**batch).logits.float())  # stays on the device: no sync per batch
                processed += int(batch["input_ids"].numel())
                batches += 1
                rows_done += int(batch["input_ids"].shape[0])
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY_S:
                    last_report = now
                    _progress(rows_done, len(order), int(done_tokens[rows_done - 1]), total_tokens, now - started)
            logits_sorted = torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0, model.config.num_labels))
    except torch.OutOfMemoryError:
        raise TrainingError(
            f"out of memory predicting batches of {batch_size} rows of up to {int(lengths.max())} tokens; "
            "lower FT_EVAL_BATCH_SIZE or FT_MAX_LENGTH"
        ) from None
    seconds = time.monotonic() - started

    logits = np.empty_like(logits_sorted)
    logits[order] = logits_sorted  # back to the dataset's order
    stats = {
        "device": device.device_name(),
        "precision": precision,
        "batch_size": batch_size,
        "batches": batches,
        "rows": len(order),
        "seconds": round(seconds, 3),
        "rows_per_second": round(len(order) / seconds, 1) if seconds else None,
        "real_tokens": total_tokens,
        "processed_tokens": processed,
        "real_tokens_per_second": round(total_tokens / seconds, 1) if seconds else None,
        "padding_efficiency": round(total_tokens / processed, 4) if processed else None,
    }
    return Scored(logits=logits, stats=stats)


def _progress(rows_done: int, rows: int, tokens_done: int, tokens: int, elapsed: float) -> None:
    # Rows get shorter as the run goes on, so the ETA comes from tokens, not rows.
    rate = tokens_done / elapsed if elapsed else 0.0
    log.info(
        "predict.progress",
        rows_done=rows_done,
        rows=rows,
        rows_per_second=round(rows_done / elapsed, 1) if elapsed else None,
        eta_seconds=round((tokens - tokens_done) / rate, 1) if rate else None,
    )

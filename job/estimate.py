"""`check`'s step plan and duration estimate: the run's own TrainingArguments turned into
steps and evaluations, and a few real training and evaluation steps timed on this device."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase, TrainingArguments

from job import device
from job.modeling import load_model
from job.prepare import PreparedData
from job.sampling import LengthBucketSampler
from job.settings import Settings
from job.tokenization import LENGTH
from job.training import out_of_memory

# One untimed step on the longest batch (warm-up, and the memory peak the run's first
# step will hit), then a few timed ones on batches of typical size.
TIMED_STEPS = 3


def plan(args: TrainingArguments, settings: Settings, train_rows: int, world: int) -> dict[str, Any]:
    """The Trainer's own arithmetic on the run's arguments: each process gets every
    world_size-th batch, and an optimizer step takes gradient_accumulation_steps batches
    (a short last one too)."""
    batch, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    batches = math.ceil(math.ceil(train_rows / batch) / world)
    steps_per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    # evaluation (and a checkpoint) per epoch, or every eval_steps
    every = args.eval_steps if args.eval_strategy == "steps" and args.eval_steps else steps_per_epoch
    warmup = args.warmup_steps
    return {
        "train_rows": train_rows,
        "world_size": world,
        "batch_size_per_device": batch,
        "gradient_accumulation_steps": accumulation,
        "effective_batch_size": batch * accumulation * world,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "epochs": round(total / steps_per_epoch, 2),
        "warmup_steps": math.ceil(warmup * total) if warmup < 1 else int(warmup),  # below 1: a share of the steps
        "evaluations": math.ceil(total / every),
        "eval_batch_size_per_device": args.per_device_eval_batch_size,
        "early_stopping_patience": settings.early_stopping_patience,
    }


def estimate(
    settings: Settings,
    prepared: PreparedData,
    *,
    model_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    precision: str,
    planned: dict[str, Any],
    trial_epochs: float | None = None,
) -> dict[str, Any]:
    """`trial_epochs`: with a search, the most epochs one of its trials can train."""
    torch.manual_seed(settings.seed)
    bench = _Bench(settings, load_model(model_path, settings, prepared.labels), tokenizer, precision)
    eval_batch_size = planned["eval_batch_size_per_device"]
    try:
        train_s_per_step = _train_step_seconds(settings, prepared, bench)
        eval_s_per_token = _eval_seconds_per_token(prepared.validation, eval_batch_size, bench)
    except torch.OutOfMemoryError:
        raise out_of_memory(settings, prepared.max_length) from None
    finally:
        bench.release()

    def prediction_pass(split: Dataset) -> float:  # each process predicts its share of the batches
        tokens = sum(_padded_batches(split, eval_batch_size, bench.pad_multiple))
        return eval_s_per_token * tokens / planned["world_size"]

    train_s = train_s_per_step * planned["total_steps"]
    # Every in-loop evaluation, and the final prediction of the validation split.
    evaluation_s = prediction_pass(prepared.validation) * (planned["evaluations"] + 1)
    test_s = prediction_pass(prepared.test) if prepared.test is not None else 0.0
    total = train_s + evaluation_s + test_s
    search_s = _search_seconds(settings, per_run=train_s + evaluation_s, epochs=planned["epochs"], most=trial_epochs)
    total += search_s
    return {
        "device": device.device_name(),
        "precision": precision,
        "timed_steps": TIMED_STEPS,
        "seconds_per_step": round(train_s_per_step, 4),
        "train_s": round(train_s, 1),
        "evaluation_s": round(evaluation_s, 1),
        "test_s": round(test_s, 1),
        "search_trials": settings.search_trials,
        "search_s_at_most": round(search_s, 1),
        "total_s": round(total, 1),
        "duration": human(total),
        "basis": "an estimate from a few timed steps on this device: training and evaluation only (not loading, "
        "checkpoints, verification or publishing, nor multi-GPU communication); early stopping ends sooner",
    }


def human(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


class _Bench:
    """The model on the device the run would use, fed batches the way the run's collator
    builds them, with its optimizer and precision."""

    def __init__(
        self, settings: Settings, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, precision: str
    ) -> None:
        self.cuda = device.cuda()
        self.device = device.device()
        self.model = model.to(self.device)
        self.accepted = set(inspect.signature(model.forward).parameters)
        self.pad_multiple = device.pad_multiple()
        self.collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=self.pad_multiple)
        dtype = device.autocast_dtype(precision)
        self.autocast = lambda: torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)
        # The Trainer's default optimizer on this torch: AdamW, fused.
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay, fused=True
        )
        self.max_grad_norm = settings.max_grad_norm

    def batch(self, dataset: Dataset, rows: np.ndarray) -> dict[str, torch.Tensor]:
        chosen = dataset.select(rows.tolist())
        features = chosen.select_columns([c for c in chosen.column_names if c in self.accepted]).to_list()
        return {k: v.to(self.device) for k, v in self.collator(features).items()}

    def timed(self, work: Callable[[], Any]) -> float:
        self._sync()
        start = time.perf_counter()
        work()
        self._sync()
        return time.perf_counter() - start

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> None:
        self.model.train()
        with self.autocast():
            loss = self.model(**batch).loss
        loss.backward()

    def optimizer_step(self) -> None:
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def forward(self, batch: dict[str, torch.Tensor]) -> None:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            self.model(**batch)

    def release(self) -> None:
        del self.model, self.optimizer
        if self.cuda:
            torch.cuda.empty_cache()

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def _search_seconds(settings: Settings, *, per_run: float, epochs: float, most: float | None) -> float:
    """At most: every trial a whole run at the most epochs a trial can train (`most`). An epoch
    costs about the same at any batch size (the same rows), so the batch sizes count only
    through the epochs the defaults choose for them."""
    if not settings.search_trials:
        return 0.0
    return settings.search_trials * per_run * (most or epochs) / epochs


def _train_step_seconds(settings: Settings, prepared: PreparedData, bench: _Bench) -> float:
    """Seconds per optimizer step, from forward+backward passes on training batches of
    the typical padded size (the run's own batching) and real optimizer steps."""
    lengths = np.asarray(prepared.train[LENGTH], dtype=np.int64)
    torch.manual_seed(settings.seed)
    if settings.group_by_length:
        order = LengthBucketSampler(lengths.tolist(), settings.batch_size).order().numpy()
    else:
        order = torch.randperm(len(lengths)).numpy()
    batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    sizes = [_padded(lengths[b], bench.pad_multiple) for b in batches]
    longest = int(np.argmax(sizes))

    bench.forward_backward(bench.batch(prepared.train, batches[longest]))
    bench.optimizer_step()  # the first one also allocates the optimizer's state
    passes, steps = [], []
    for index in _typical(sizes, avoid=longest):
        batch = bench.batch(prepared.train, batches[index])
        passes.append(bench.timed(lambda b=batch: bench.forward_backward(b)))
        steps.append(bench.timed(bench.optimizer_step))
    return settings.gradient_accumulation_steps * float(np.mean(passes)) + float(np.mean(steps))


def _eval_seconds_per_token(validation: Dataset, batch_size: int, bench: _Bench) -> float:
    """Seconds per padded token of a forward pass without gradients, on validation
    batches as the run cuts them (the split is sorted longest first)."""
    sizes = _padded_batches(validation, batch_size, bench.pad_multiple)
    bench.forward(bench.batch(validation, np.arange(min(batch_size, len(validation)))))  # warm-up
    seconds, tokens = 0.0, 0
    for index in _typical(sizes, avoid=0):
        rows = np.arange(index * batch_size, min((index + 1) * batch_size, len(validation)))
        batch = bench.batch(validation, rows)
        seconds += bench.timed(lambda b=batch: bench.forward(b))
        tokens += sizes[index]
    return seconds / tokens


def _padded(lengths: np.ndarray, multiple: int | None) -> int:
    """Tokens the device computes for a batch of rows of these lengths."""
    width = int(lengths.max())
    if multiple:
        width = math.ceil(width / multiple) * multiple
    return len(lengths) * width


def _padded_batches(split: Dataset, batch_size: int, multiple: int | None) -> list[int]:
    """Padded size of each batch of a split cut in order (evaluation does not shuffle)."""
    lengths = np.asarray(split[LENGTH], dtype=np.int64)
    return [_padded(lengths[i : i + batch_size], multiple) for i in range(0, len(lengths), batch_size)]


def _typical(sizes: list[int], *, avoid: int) -> list[int]:
    """TIMED_STEPS batches whose padded size is nearest the mean (repeats when there are few)."""
    mean = float(np.mean(sizes))
    ranked = sorted(range(len(sizes)), key=lambda i: abs(sizes[i] - mean))
    chosen = [i for i in ranked if i != avoid][:TIMED_STEPS] or [avoid]
    return (chosen * TIMED_STEPS)[:TIMED_STEPS]

"""`python -m job check`: a dry run. It takes the run's own first steps, so it fails where
and how the run would (the same error line, the same exit code), then reports what the
run would do and about how long it would take, one event per finding:

    check.settings   the run: model, data, output, topology
    check.output     FT_OUTPUT and FT_CHECKPOINT_DIR are writable (probed, nothing left)
    check.model      the model folder, its tokenizer, the effective max length
    check.data       rows per split and where each split comes from
    check.tokens     the share of unknown tokens in a sample of training rows
    check.labels     rows per label in each split
    check.lengths    token-length percentiles of a split, rows the max length cuts
    check.plan       steps per epoch, total steps, effective batch size, evaluations
    check.estimate   seconds per step from a few real training steps on this device,
                     and the run's training and evaluation time from them (with
                     FT_SEARCH_TRIALS, the search's at most)
    check.passed     the summary: warnings, estimated duration

Warnings (the run would go ahead, but look): `check.already_complete`,
`check.unknown_tokens`, `check.label_imbalance`, `check.labels_missing`,
`check.truncation`. They leave the exit code at 0.

It writes nothing to FT_OUTPUT or FT_CHECKPOINT_DIR. Like a run it fills FT_CACHE_DIR
(downloads, the tokenized splits), so the run that follows starts sooner.
"""

from __future__ import annotations

import inspect
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase

from job import data, labels
from job.data import INDEX
from job.labels import LABELS, REGRESSION
from job.logs import get_logger
from job.main import load_inputs, preflight
from job.modeling import load_model
from job.prepare import TEST, TRAIN, VALIDATION, PreparedData
from job.sampling import LengthBucketSampler
from job.settings import Settings
from job.tokenization import LENGTH
from job.topology import Topology, discover
from job.training import best_model_metric, out_of_memory, resolve_precision

# Largest class over smallest (training rows) from which the imbalance is worth a warning:
# at 10:1 a model that never predicts the small class still scores over 90% accuracy.
IMBALANCE_RATIO = 10.0
# Share of training rows cut by FT_MAX_LENGTH from which the lost text is worth a warning.
TRUNCATION_SHARE = 0.05
# Share of unknown tokens from which the tokenizer probably does not fit the text
# (wrong tokenizer files, another language or script).
UNKNOWN_TOKEN_SHARE = 0.05
TOKEN_SAMPLE_ROWS = 1000
# One untimed step on the longest batch (warm-up, and the memory peak the run's first
# step will hit), then a few timed ones on batches of typical size.
TIMED_STEPS = 3

log = get_logger("job.check")


def check(settings: Settings) -> dict[str, Any]:
    """Run the checks; returns the summary it logs. Raises the run's JobError on failure."""
    started = time.monotonic()
    warnings: list[str] = []

    def warn(event: str, **fields: Any) -> None:
        warnings.append(event)
        log.warning(event, **fields)

    topology = discover(settings)
    log.info(
        "check.settings",
        model=settings.model,
        dataset=settings.dataset,
        output=settings.output,
        topology=topology.source,
        nnodes=topology.nnodes,
        procs_per_node=topology.procs_per_node,
        world_size=topology.world_size,
    )

    output, saved = preflight(settings, topology, dry_run=True)
    complete = output.is_complete()
    log.info(
        "check.output",
        location=output.location,
        checkpoints=saved.durable,
        access_checked=topology.is_main_node,  # other nodes never write: the run checks only on the first
        already_complete=complete,
    )
    if complete:
        warn(
            "check.already_complete",
            location=output.location,
            effect=f"a run with FT_RUN_ID={settings.run_id} would do nothing; set a new FT_RUN_ID",
        )

    model_path, tokenizer, prepared = load_inputs(settings)
    log.info(
        "check.model",
        path=str(model_path),
        tokenizer=type(tokenizer).__name__,
        vocab_size=len(tokenizer),
        max_length=prepared.max_length,
        problem_type=prepared.labels.problem_type,
        labels=list(prepared.labels.names),
    )
    rows = {name: len(split) for name, split in prepared.splits.items()}
    log.info(
        "check.data",
        rows=rows,
        source=prepared.meta["source"],
        source_splits=prepared.meta["source_splits"],
        dropped_empty_text=prepared.meta["dropped_empty_text"],
        test_scored=prepared.test_scored,
    )

    tokens = _unknown_tokens(prepared.train, tokenizer)
    log.info("check.tokens", **tokens)
    if tokens["unknown_share"] is not None and tokens["unknown_share"] >= UNKNOWN_TOKEN_SHARE:
        warn(
            "check.unknown_tokens",
            unknown_share=tokens["unknown_share"],
            effect="the tokenizer does not know much of this text (wrong tokenizer files, another language?); "
            "check FT_MODEL",
        )

    label_report = _labels(prepared)
    log.info("check.labels", problem_type=prepared.labels.problem_type, **label_report)
    for event, fields in _label_warnings(label_report):
        warn(event, **fields)

    lengths = _lengths(settings, tokenizer, prepared)
    for name, stats in lengths.items():
        log.info("check.lengths", split=name, **stats)
    cut = lengths[TRAIN]
    if cut["rows"] and cut["truncated"] >= TRUNCATION_SHARE * cut["rows"]:
        warn(
            "check.truncation",
            split=TRAIN,
            truncated=cut["truncated"],
            share=cut["truncated_share"],
            max_length=prepared.max_length,
            effect="those rows lose their ends; raise FT_MAX_LENGTH (up to the model's limit) if the ends matter",
        )

    # What the training step would reject before its first batch.
    precision = resolve_precision(settings.mixed_precision)
    best_model_metric(settings, prepared.labels)

    plan = _plan(settings, prepared, topology)
    log.info("check.plan", **plan)
    estimate = _estimate(settings, prepared, model_path=model_path, tokenizer=tokenizer, precision=precision, plan=plan)
    log.info("check.estimate", **estimate)

    summary = {
        "status": "passed",
        "warnings": warnings,
        "rows": rows,
        "labels": label_report,
        "lengths": lengths,
        "plan": plan,
        "estimate": estimate,
        "check_seconds": round(time.monotonic() - started, 1),
    }
    log.info(
        "check.passed",
        warnings=warnings,
        estimated_duration=estimate["duration"],
        estimated_total_s=estimate["total_s"],
        check_seconds=summary["check_seconds"],
    )
    return summary


# --- data ---------------------------------------------------------------------------


def _unknown_tokens(train: Dataset, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    sample = train.select(range(min(len(train), TOKEN_SAMPLE_ROWS)))
    unknown_id = tokenizer.unk_token_id
    if unknown_id is None:  # byte-level tokenizers have no unknown token
        return {"sample_rows": len(sample), "unknown_share": None}
    ids = np.fromiter(itertools.chain.from_iterable(sample["input_ids"]), dtype=np.int64)
    special = np.asarray(sorted(set(tokenizer.all_special_ids) - {unknown_id}), dtype=np.int64)
    text_tokens = ids[~np.isin(ids, special)]
    share = float((text_tokens == unknown_id).mean()) if text_tokens.size else 0.0
    return {"sample_rows": len(sample), "unknown_share": round(share, 4)}


def _labels(prepared: PreparedData) -> dict[str, Any]:
    spec = prepared.labels
    scored = {name: split for name, split in prepared.splits.items() if name != TEST or prepared.test_scored}
    if spec.problem_type == REGRESSION:
        stats = {}
        for name, split in scored.items():
            values = np.asarray(split[LABELS], dtype=np.float64)
            stats[name] = {
                "min": float(values.min()),
                "mean": round(float(values.mean()), 4),
                "std": round(float(values.std()), 4),
                "max": float(values.max()),
            }
        return {"targets": stats}
    # Multi-label: rows carrying each label.
    return {"counts": {name: labels.class_counts(split, spec) for name, split in scored.items()}}


def _label_warnings(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if "counts" not in report:
        return []
    found = []
    train = {name: n for name, n in report["counts"][TRAIN].items() if n}  # absent ones: labels.unused
    largest = max(train, key=train.__getitem__, default=None)
    smallest = min(train, key=train.__getitem__, default=None)
    if largest is not None and smallest is not None and train[largest] / train[smallest] >= IMBALANCE_RATIO:
        ratio = train[largest] / train[smallest]
        found.append(
            (
                "check.label_imbalance",
                {
                    "split": TRAIN,
                    "largest": {largest: train[largest]},
                    "smallest": {smallest: train[smallest]},
                    "ratio": round(ratio, 1),
                    "threshold": IMBALANCE_RATIO,
                    "effect": "the small classes are learned poorly and accuracy flatters the model; add rows of "
                    "the small classes, or judge by f1_macro (the default best-model metric)",
                },
            )
        )
    missing = [name for name, n in report["counts"][VALIDATION].items() if not n]
    if missing:
        found.append(
            (
                "check.labels_missing",
                {
                    "split": VALIDATION,
                    "labels": missing,
                    "effect": "their validation metrics are undefined; validation data should hold every label",
                },
            )
        )
    return found


def _lengths(settings: Settings, tokenizer: PreTrainedTokenizerBase, prepared: PreparedData) -> dict[str, Any]:
    """Token counts before truncation. The prepared splits hold them cut at the max
    length, so only rows at the limit are tokenized again, from the source text."""
    raw: data.RawSplits | None = None
    out = {}
    for name, split in prepared.splits.items():
        lengths = np.asarray(split[LENGTH], dtype=np.int64)
        at_limit = np.flatnonzero(lengths >= prepared.max_length)
        if at_limit.size:
            if raw is None:
                raw = data.load_splits(settings)
            carved = raw.eval is None  # validation rows then come from the training split
            source = {TRAIN: raw.train, VALIDATION: raw.train if carved else raw.eval, TEST: raw.test}[name]
            assert source is not None  # a prepared test split comes from a source one
            rows = source.select(split.select(at_limit.tolist())[INDEX])
            lengths[at_limit] = _untruncated(tokenizer, rows, settings)
        out[name] = _length_stats(lengths, prepared.max_length)
    return out


def _untruncated(tokenizer: PreTrainedTokenizerBase, rows: Dataset, settings: Settings) -> list[int]:
    texts = rows[settings.text_column]
    pairs = rows[settings.text_pair_column] if settings.text_pair_column else None
    counts: list[int] = []
    for start in range(0, len(texts), 1000):
        chunk = slice(start, start + 1000)
        # verbose=False: the "longer than the maximum" warning is what is being measured.
        encoded = tokenizer(texts[chunk], pairs[chunk] if pairs else None, truncation=False, verbose=False)
        counts.extend(len(ids) for ids in encoded["input_ids"])
    return counts


def _length_stats(lengths: np.ndarray, max_length: int) -> dict[str, Any]:
    if not lengths.size:
        return {"rows": 0, "truncated": 0, "truncated_share": 0.0, "max_length": max_length}

    def percentile(q: float) -> int:
        return int(np.percentile(lengths, q, method="higher"))  # a length some row has

    truncated = int((lengths > max_length).sum())
    return {
        "rows": int(lengths.size),
        "p50": percentile(50),
        "p90": percentile(90),
        "p99": percentile(99),
        "max": int(lengths.max()),
        "max_length": max_length,
        "truncated": truncated,
        "truncated_share": round(truncated / lengths.size, 4),
    }


# --- plan and estimate --------------------------------------------------------------


def _plan(settings: Settings, prepared: PreparedData, topology: Topology) -> dict[str, Any]:
    """The Trainer's own arithmetic: each process gets every world_size-th batch, and an
    optimizer step takes FT_GRADIENT_ACCUMULATION_STEPS batches (a short last one too)."""
    world = topology.world_size
    accumulation = settings.gradient_accumulation_steps
    batches = math.ceil(math.ceil(len(prepared.train) / settings.batch_size) / world)
    steps_per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    total = settings.max_steps or math.ceil(settings.epochs * steps_per_epoch)
    every = settings.eval_steps or steps_per_epoch  # evaluation (and a checkpoint) per epoch by default
    return {
        "train_rows": len(prepared.train),
        "world_size": world,
        "batch_size_per_device": settings.batch_size,
        "gradient_accumulation_steps": accumulation,
        "effective_batch_size": settings.batch_size * accumulation * world,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "epochs": round(total / steps_per_epoch, 2),
        "warmup_steps": math.ceil(settings.warmup_ratio * total),
        "evaluations": math.ceil(total / every),
        "eval_batch_size_per_device": settings.eval_batch_size or 2 * settings.batch_size,
        "early_stopping_patience": settings.early_stopping_patience,
    }


class _Bench:
    """The model on the device the run would use, fed batches the way the run's collator
    builds them, with its optimizer and precision."""

    def __init__(
        self, settings: Settings, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, precision: str
    ) -> None:
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.model = model.to(self.device)
        self.accepted = set(inspect.signature(model.forward).parameters)
        self.pad_multiple = 8 if self.cuda else None  # as the run's collator
        self.collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=self.pad_multiple)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
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


def _estimate(
    settings: Settings,
    prepared: PreparedData,
    *,
    model_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    precision: str,
    plan: dict[str, Any],
) -> dict[str, Any]:
    torch.manual_seed(settings.seed)
    bench = _Bench(settings, load_model(model_path, settings, prepared.labels), tokenizer, precision)
    eval_batch_size = plan["eval_batch_size_per_device"]
    try:
        train_s_per_step = _train_step_seconds(settings, prepared, bench)
        eval_s_per_token = _eval_seconds_per_token(prepared.validation, eval_batch_size, bench)
    except torch.OutOfMemoryError:
        raise out_of_memory(settings, prepared.max_length) from None
    finally:
        bench.release()

    def prediction_pass(split: Dataset) -> float:  # each process predicts its share of the batches
        tokens = sum(_padded_batches(split, eval_batch_size, bench.pad_multiple))
        return eval_s_per_token * tokens / plan["world_size"]

    train_s = train_s_per_step * plan["total_steps"]
    # Every in-loop evaluation, and the final prediction of the validation split.
    evaluation_s = prediction_pass(prepared.validation) * (plan["evaluations"] + 1)
    test_s = prediction_pass(prepared.test) if prepared.test is not None else 0.0
    total = train_s + evaluation_s + test_s
    search_s = _search_seconds(settings, per_run=train_s + evaluation_s, epochs=plan["epochs"])
    total += search_s
    return {
        "device": _device_name(),
        "precision": precision,
        "timed_steps": TIMED_STEPS,
        "seconds_per_step": round(train_s_per_step, 4),
        "train_s": round(train_s, 1),
        "evaluation_s": round(evaluation_s, 1),
        "test_s": round(test_s, 1),
        "search_trials": settings.search_trials,
        "search_s_at_most": round(search_s, 1),
        "total_s": round(total, 1),
        "duration": _human(total),
        "basis": "an estimate from a few timed steps on this device: training and evaluation only (not loading, "
        "checkpoints, verification or publishing, nor multi-GPU communication); early stopping ends sooner",
    }


def _search_seconds(settings: Settings, *, per_run: float, epochs: float) -> float:
    """At most: every trial a whole run at the most epochs searched. An epoch costs about
    the same at any batch size (the same rows), so the batch-size choices do not count."""
    if not settings.search_trials:
        return 0.0
    most_epochs = settings.search_epochs[1] if settings.search_epochs else epochs
    return settings.search_trials * per_run * most_epochs / epochs


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


def _device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def _human(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"

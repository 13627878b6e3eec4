"""The Trainer wiring: fine-tune with transformers' Trainer (accelerate underneath), evaluate, save.

Runs the same in a single process and in every rank of a distributed launch:
the Trainer shards batches and gathers evaluation outputs over all ranks, and
only the main process writes files.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import SequentialSampler
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from job import device, metrics, trackers, windows
from job.artifacts import TRAIN_LOG
from job.checkpoints import CheckpointCallback
from job.class_weights import WeightedLoss, class_weights
from job.data import INDEX
from job.errors import TrainingError
from job.labels import LABELS, MULTI
from job.logs import get_logger
from job.modeling import load_model, load_tokenizer, strip_load_options
from job.preemption import StopRequest
from job.prepare import PreparedData
from job.results import Prediction, TrainOutcome
from job.sampling import LengthBucketSampler
from job.settings import Settings
from job.tokenization import LENGTH

log = get_logger("job.training")


def out_of_memory(settings: Settings, max_length: int) -> TrainingError:
    return TrainingError(
        f"out of memory at FT_BATCH_SIZE={settings.batch_size} and FT_MAX_LENGTH={max_length}; "
        "lower FT_BATCH_SIZE (raise FT_GRADIENT_ACCUMULATION_STEPS to keep the effective batch) "
        "or FT_MAX_LENGTH"
    )


def train_and_evaluate(
    settings: Settings,
    prepared: PreparedData,
    model_path: Path,
    *,
    staging: Path,
    checkpoints: Path,
    resume: Path | None,
    stop: StopRequest,
    inputs: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Train (from `resume` when given), pick the best checkpoint, predict validation
    (and test), save the model.

    Every rank runs this; the returned predictions cover all rows on every rank, and
    only the main process writes to `staging`. A stop request saves a checkpoint and
    raises Preempted. `inputs`, the run's fingerprint, goes into every checkpoint's marker.
    """
    precision = device.precision(settings.mixed_precision)
    metric = metrics.best_model_metric(settings.metric_for_best_model, prepared.labels.problem_type)
    assert metric is not None  # a real problem type always has one
    metrics.require_defined(metric, np.asarray(prepared.validation[LABELS]), prepared.labels)
    set_seed(settings.seed)
    tokenizer = load_tokenizer(model_path, settings)
    model = load_model(model_path, settings, prepared.labels)
    args = arguments(settings, checkpoints, precision, metric)
    callbacks: list[TrainerCallback] = [
        ProgressLog(staging / TRAIN_LOG),
        NonFiniteLossGuard(),
        CheckpointCallback(stop, save_steps=settings.save_steps, run_id=settings.run_id, inputs=inputs),
        *trackers.callbacks(settings, staging),
    ]
    if settings.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience))
    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.validation,
        processing_class=tokenizer,
        # Pad each batch only to its longest row.
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=device.pad_multiple()),
        compute_metrics=_pooled_metrics(prepared),
        callbacks=callbacks,
        lengths=list(prepared.train[LENGTH]) if settings.group_by_length else None,
        compute_loss_func=_weighted_loss(settings, prepared),
    )
    trainer.remove_callback(PrinterCallback)  # prints raw dicts to stdout; ProgressLog replaces it

    log.info(
        "train.started",
        rows=len(prepared.train),
        epochs=settings.epochs,
        max_steps=settings.max_steps,
        batch_size=settings.batch_size,
        effective_batch_size=args.train_batch_size * args.gradient_accumulation_steps * args.world_size,
        world_size=args.world_size,
        device=device.device_name(count=True),
        precision=precision,
        best_model_metric=metric,
    )
    if resume is not None:
        log.info("train.resumed", checkpoint=str(resume), step=int(resume.name.rpartition("-")[2]))
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError:
        raise out_of_memory(settings, prepared.max_length) from None

    mark = time.monotonic()
    # The final predictions are scored later, per text, from the pooled logits; the Trainer's
    # own metrics of them would be per window, and are not needed.
    trainer.compute_metrics = None
    validation = _predict(trainer, prepared.validation, "eval")
    eval_runtime = time.monotonic() - mark
    test = _predict(trainer, prepared.test, "test") if prepared.test is not None else None
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        # A pickle of TrainingArguments: unsafe to load, and the run manifest says more.
        (staging / "training_args.bin").unlink(missing_ok=True)
        strip_load_options(staging)

    stats = _throughput(trainer, result.metrics)
    stats.update(
        precision=precision,
        device=device.device_name(count=True),
        world_size=args.world_size,
        steps=result.global_step,
        epochs=round(float(trainer.state.epoch or 0), 4),
        train_loss=result.training_loss,
        best_checkpoint=trainer.state.best_model_checkpoint,
        first_step_unix=trainer.progress.first_step_unix,
        eval_runtime_s=round(eval_runtime, 3),
    )
    log.info("train.completed", **{k: v for k, v in stats.items() if k != "best_checkpoint"})
    return TrainOutcome(
        validation=validation,
        test=test,
        best_metric=metric,
        best_value=trainer.state.best_metric,
        stats=stats,
    )


def _weighted_loss(settings: Settings, prepared: PreparedData) -> WeightedLoss | None:
    weights = class_weights(settings.class_weights, prepared.train, prepared.labels)
    if weights is None:
        return None
    log.info(
        "train.class_weights",
        setting=settings.class_weights,
        weights=dict(zip(prepared.labels.names, (round(w, 3) for w in weights), strict=True)),
        kind="positive weight per label" if prepared.labels.problem_type == MULTI else "weight per class",
    )
    return WeightedLoss(weights, prepared.labels.problem_type)


def arguments(settings: Settings, checkpoints: Path, precision: str, metric: str) -> TrainingArguments:
    """The run's TrainingArguments; `check` plans its steps from the same ones."""
    cuda = device.cuda()
    strategy = "steps" if settings.eval_steps else "epoch"
    workers = device.dataloader_workers(settings)
    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=device.eval_batch_size(settings),
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a share of all steps
        lr_scheduler_type=settings.lr_scheduler,
        max_grad_norm=settings.max_grad_norm,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        tf32=device.tf32(),
        use_cpu=not cuda,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        eval_strategy=strategy,
        eval_steps=settings.eval_steps,
        save_strategy=strategy,
        save_steps=settings.eval_steps,
        save_total_limit=settings.save_total_limit,  # the Trainer keeps the best one beside these
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=metrics.greater_is_better(metric),
        logging_strategy="steps",
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # the default hides NaN losses; the guard must see them
        disable_tqdm=True,
        report_to=trackers.report_to(settings) or "none",
        run_name=settings.run_id,  # the run's name in MLflow and W&B
        dataloader_num_workers=workers,
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=workers > 0,
        average_tokens_across_devices=False,  # else DDP logs the loss times the world size
        ddp_timeout=settings.ddp_timeout,
        ddp_find_unused_parameters=False,  # BERT-family classifiers use every parameter
    )


class _Trainer(Trainer):
    """Trainer with precomputed lengths for length grouping, in-order evaluation,
    and a count of processed tokens that costs no device sync."""

    def __init__(self, *args: Any, lengths: list[int] | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lengths = lengths
        self.processed_tokens = 0
        self.samples_seen = 0
        self.real_tokens: torch.Tensor | int = 0  # stays on the device until the end
        self.checkpoint_seconds = 0.0
        self.progress = next(c for c in self.callback_handler.callbacks if isinstance(c, ProgressLog))

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        # The lengths are already known (the stock sampler measures every row again),
        # and whole-bucket sorting wastes less on padding than the stock mega-batches.
        if self._lengths is not None:
            return LengthBucketSampler(self._lengths, self.args.train_batch_size)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        # Keep dataset order (already sorted by length) so predictions line up with rows.
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        mark = time.monotonic()
        super()._save_checkpoint(model, trial)
        self.checkpoint_seconds += time.monotonic() - mark

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        self.processed_tokens += int(inputs["input_ids"].numel())  # shape only: no sync
        self.samples_seen += int(inputs["input_ids"].shape[0])
        self.real_tokens = self.real_tokens + inputs["attention_mask"].sum()  # async on GPU
        return super().training_step(model, inputs, num_items_in_batch)


class ProgressLog(TrainerCallback):
    """Progress events (step, epoch, loss, lr, samples/s, ETA) and train_log.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = 0.0
        self.first_step_unix: float | None = None

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.monotonic()
        self.start_step = state.global_step
        if state.is_world_process_zero and state.log_history and not self.path.exists():
            # Resumed: the steps before the checkpoint come from its saved history.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w") as handle:
                for logs in state.log_history:
                    handle.write(json.dumps(_record(state, logs, step=logs.get("step", 0))) + "\n")

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if self.first_step_unix is None:
            self.first_step_unix = time.time()

    def on_log(self, args: TrainingArguments, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        record = _record(state, logs, step=state.global_step)
        if "loss" in logs:
            elapsed = time.monotonic() - self.started
            done = state.global_step - self.start_step
            samples_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
            rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
            record["samples_per_second"] = round(rate * samples_per_step, 2)
            record["eta_seconds"] = round((state.max_steps - state.global_step) / rate, 1) if rate else None
            log.info("train.progress", max_steps=state.max_steps, **record)
        elif any(k.startswith("eval_") for k in logs):
            log.info("eval.completed", **record)
        else:
            return  # the end-of-training summary; reported by the caller
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _record(state: Any, logs: dict[str, Any], *, step: int) -> dict[str, Any]:
    numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float)) and k not in ("total_flos", "step")}
    return {"step": step, **numbers, "epoch": round(float(logs.get("epoch", state.epoch) or 0), 4)}


class NonFiniteLossGuard(TrainerCallback):
    """Stops the run when the logged loss is NaN or infinite: nothing after would be valid."""

    def on_log(self, args: TrainingArguments, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingError(
                f"training loss became {loss} at step {state.global_step}; lower FT_LEARNING_RATE, check the "
                "labels (regression targets should be of modest size), or use bf16 instead of fp16"
            )


def _pooled_metrics(prepared: PreparedData) -> Any:
    """The evaluation metrics per text, not per window: the Trainer predicts rows in the
    validation split's order, which is where each row's text comes from."""
    texts = np.asarray(prepared.validation[INDEX])

    def compute(p: Any) -> dict[str, float]:
        logits, _, labels = windows.pool(np.asarray(p.predictions), texts, np.asarray(p.label_ids))
        assert labels is not None
        return metrics.scalars(logits, labels, prepared.labels)

    return compute


def _predict(trainer: Trainer, dataset: Any, prefix: str) -> Prediction:
    output = trainer.predict(dataset, metric_key_prefix=prefix)
    labels = None if output.label_ids is None else np.asarray(output.label_ids)
    logits, index, labels = windows.pool(np.asarray(output.predictions), dataset[INDEX], labels)
    return Prediction(logits=logits, labels=labels, index=index, loss=output.metrics.get(f"{prefix}_loss"))


def _throughput(trainer: _Trainer, train_metrics: dict[str, Any]) -> dict[str, Any]:
    runtime = float(train_metrics.get("train_runtime") or 0.0)
    counts = torch.stack(
        [
            torch.as_tensor(trainer.processed_tokens),
            torch.as_tensor(trainer.real_tokens).cpu(),
            torch.as_tensor(trainer.samples_seen),
        ]
    ).to(trainer.args.device, torch.int64)
    per_rank = trainer.accelerator.gather(counts.unsqueeze(0)).cpu()  # one collective, at the end
    processed, real, samples = (int(v) for v in per_rank.sum(0).tolist())
    # The Trainer's runtime includes the evaluations and checkpoints inside the loop;
    # the step rate leaves them out, to compare with training loops that do neither.
    evaluating = sum(e.get("eval_runtime", 0.0) for e in trainer.state.log_history)
    stepping = runtime - evaluating - trainer.checkpoint_seconds
    return {
        "samples_per_rank": [int(v) for v in per_rank[:, 2].tolist()],
        "train_runtime_s": round(runtime, 2),
        "train_samples_per_second": train_metrics.get("train_samples_per_second"),
        "train_step_samples_per_second": round(samples / stepping, 2) if stepping > 0 else None,
        "in_loop_evaluation_s": round(evaluating, 2),
        "in_loop_checkpoint_s": round(trainer.checkpoint_seconds, 2),
        "train_real_tokens_per_second": round(real / stepping, 1) if stepping > 0 else None,
        "real_tokens": real,
        "processed_tokens": processed,
        "padding_efficiency": round(real / processed, 4) if processed else None,
    }

"""One recipe, run in its own process so its peak memory is its own:

    python -m bench.recipes walkthrough|tuned|tuned-bf16|job CONFIG_JSON

Prints one JSON line with what it measured. `walkthrough` is the notebooks' recipe
(pad every row to the model's 512 tokens, default Trainer arguments); `tuned` adds
dynamic padding and length-grouped batches; `tuned-bf16` also sets `bf16=True`, as
a user who knows their hardware would; `job` is this job, configured by settings
alone.

Optional CONFIG keys (the GPU bench, bench/gpu, sets them; `make bench` does not):
`max_length` truncates, `pad_to_multiple_of` pads batches, `trainer_args` adds or
overrides TrainingArguments (optimizer, workers, logging steps). Every recipe reports
its loss at the logged steps and the real tokens it trained on.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STARTED = time.time()


def _trainer_recipe(name: str, config: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    data = load_dataset("csv", data_files={"train": config["train"], "validation": config["validation"]})
    tokenizer = AutoTokenizer.from_pretrained(config["model"])
    walkthrough = name == "walkthrough"

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        limit = {"max_length": config["max_length"]} if config.get("max_length") else {}
        if walkthrough:
            return tokenizer(batch["text"], padding="max_length", truncation=True, **limit)
        return tokenizer(batch["text"], truncation=True, **limit)

    data = data.map(tokenize, batched=True, remove_columns=["text"])
    model = AutoModelForSequenceClassification.from_pretrained(config["model"], num_labels=2)
    counts = {"processed": 0, "real": 0}
    multiple = config.get("pad_to_multiple_of")
    inner = default_data_collator if walkthrough else DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = inner(features)
        counts["processed"] += int(batch["input_ids"].numel())
        counts["real"] += int(batch["attention_mask"].sum())
        return batch

    first_step: list[float] = []

    class FirstStep(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not first_step:
                first_step.append(time.time())

    arguments: dict[str, Any] = {
        "output_dir": tempfile.mkdtemp(),
        "num_train_epochs": config["epochs"],
        "per_device_train_batch_size": config["batch_size"],
        "per_device_eval_batch_size": config["batch_size"],
        "learning_rate": config["learning_rate"],
        "seed": config["seed"],
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "logging_steps": 10_000,
        "use_cpu": not torch.cuda.is_available(),
        "bf16": name == "tuned-bf16",
        **({} if walkthrough else {"train_sampling_strategy": "group_by_length"}),
    }
    args = TrainingArguments(**{**arguments, **config.get("trainer_args", {})})
    trainer = Trainer(
        model=model, args=args, train_dataset=data["train"], data_collator=collate, callbacks=[FirstStep()]
    )
    result = trainer.train()
    train_counts = dict(counts)
    mark = time.time()
    output = trainer.predict(data["validation"])
    evaluation = time.time() - mark
    accuracy = float((np.argmax(output.predictions, -1) == output.label_ids).mean())
    runtime = result.metrics["train_runtime"]
    # Collation in data-loader workers counts in their processes, not here: then the real
    # tokens come from the rows' lengths (exact for whole epochs) and padding is unknown.
    real = train_counts["real"] or sum(len(x) for x in data["train"]["input_ids"]) * config["epochs"]
    return {
        "train_samples_per_second": result.metrics["train_samples_per_second"],
        "train_real_tokens_per_second": real / runtime,
        "real_tokens": real,
        "padding_efficiency": train_counts["real"] / train_counts["processed"] if train_counts["processed"] else None,
        "time_to_first_step_s": first_step[0] - STARTED,
        "evaluation_s": evaluation,
        "accuracy": accuracy,
        "train_runtime_s": runtime,
        "precision": "bf16" if args.bf16 else "no",
        "optimizer": getattr(args.optim, "value", str(args.optim)),
        "steps": result.global_step,
        "loss_curve": [[e["step"], e["loss"]] for e in trainer.state.log_history if "loss" in e],
    }


def _job_recipe(config: dict[str, Any]) -> dict[str, Any]:
    from job.logs import configure_logging, route_library_logs
    from job.main import main
    from job.settings import Settings

    folder = Path(config["train"]).parent
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        model=config["model"],
        dataset=str(folder),
        output=tempfile.mkdtemp(),
        cache_dir=Path(tempfile.mkdtemp()),
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        learning_rate=config["learning_rate"],
        seed=config["seed"],
        test_split="none",
        log_format="json",
        **config.get("job_settings", {}),
    )
    configure_logging(log_format="json", level="warning", run_id=settings.run_id)
    route_library_logs("json")
    entered = time.time()
    summary = main(settings)
    run = Path(summary["location"])
    manifest = json.loads((run / "run_manifest.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    training, timings = manifest["training"], manifest["timings_s"]
    return {
        # Training steps only, like the other recipes' loops, which neither evaluate nor
        # checkpoint; those costs are in wall_s.
        "train_samples_per_second": training["train_step_samples_per_second"],
        "train_real_tokens_per_second": training["train_real_tokens_per_second"],
        "real_tokens": training["real_tokens"],
        "in_loop_evaluation_s": training["in_loop_evaluation_s"],
        "in_loop_checkpoint_s": training["in_loop_checkpoint_s"],
        "padding_efficiency": training["padding_efficiency"],
        # From process start, as for the other recipes (the job's own clock starts in main).
        "time_to_first_step_s": entered - STARTED + timings["to_first_step"],
        "evaluation_s": training["eval_runtime_s"],  # the final pass over the validation rows
        "accuracy": metrics["validation"]["accuracy"],
        "train_runtime_s": training["train_runtime_s"],
        "precision": training["precision"],
        "device": training["device"],
        "steps": training["steps"],
        "loss_curve": _loss_curve(run / "train_log.jsonl"),
    }


def _loss_curve(path: Path) -> list[list[float]]:
    """[step, loss] at each logged training step, from the job's train_log.jsonl."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], r["loss"]] for r in records if "loss" in r]


def run(name: str, config: dict[str, Any]) -> dict[str, Any]:
    if name == "job":
        return _job_recipe(config)
    return _trainer_recipe(name, config)


if __name__ == "__main__":
    result = run(sys.argv[1], json.loads(sys.argv[2]))
    print("BENCH_RESULT " + json.dumps(result), flush=True)

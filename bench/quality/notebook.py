"""The notebook recipe the job replaces, in its own process:

    python -m bench.quality.notebook CONFIG_JSON

`load_dataset` -> tokenizer (truncation to the model's 512 tokens) -> `Trainer` with its
defaults (batch 8, learning rate 5e-5, 3 epochs, no warm-up, no weight decay, padding per
batch by `DataCollatorWithPadding`) -> predict the test rows -> save the model. Only the
seed is set, and the progress bars are off. CONFIG: {"model", "data" (a folder with
train.jsonl and test.jsonl), "seed", "output"}. Prints one line, `QUALITY_RESULT {json}`,
with accuracy and macro-F1 on the test rows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def run(config: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from datasets import load_dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    folder = Path(config["data"])
    data = load_dataset("json", data_files={s: str(folder / f"{s}.jsonl") for s in ("train", "test")})
    # Ids in sorted name order, as the job numbers string labels.
    names = sorted(set(data["train"]["label"]))
    label2id = {name: i for i, name in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(config["model"])

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["text"], truncation=True)
        encoded["labels"] = [label2id[name] for name in batch["label"]]
        return encoded

    data = data.map(tokenize, batched=True, remove_columns=["text", "label"])
    model = AutoModelForSequenceClassification.from_pretrained(
        config["model"], num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id
    )
    args = TrainingArguments(output_dir=config["output"], seed=config["seed"], disable_tqdm=True)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trained = trainer.train()
    mark = time.monotonic()
    output = trainer.predict(data["test"])
    predict_s = time.monotonic() - mark
    predictions = np.argmax(output.predictions, axis=-1)
    truth = output.label_ids
    # Over every class, absent ones scoring 0, as the job's metrics.json counts macro-F1.
    f1_macro = f1_score(truth, predictions, labels=list(range(len(names))), average="macro", zero_division=0.0)
    trainer.save_model(config["output"])
    return {
        "accuracy": float(accuracy_score(truth, predictions)),
        "f1_macro": float(f1_macro),
        "train_runtime_s": trained.metrics["train_runtime"],
        "predict_s": predict_s,
        "steps": trained.global_step,
        "train_rows": len(data["train"]),
        "test_rows": len(data["test"]),
    }


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    print("QUALITY_RESULT " + json.dumps(result), flush=True)

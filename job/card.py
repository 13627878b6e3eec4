"""The model card (README.md in the model folder): results, labels, usage, provenance."""

from __future__ import annotations

import json
from typing import Any

from job.charts import CONFUSION_MATRIX, PREDICTION_SCATTER, TRAINING_CURVES
from job.labels import MULTI, REGRESSION
from job.redaction import redact_text
from job.settings import Settings
from job.storage import classify
from job.trackers import TENSORBOARD_DIR

_SHOWN_METRICS = {
    "single_label_classification": (
        "accuracy", "f1", "f1_macro", "precision", "recall", "mcc", "roc_auc", "pr_auc", "loss",
    ),
    "multi_label_classification": (
        "subset_accuracy", "f1_micro", "f1_macro", "hamming_accuracy", "roc_auc_macro", "pr_auc_macro", "loss",
    ),
    "regression": ("rmse", "mae", "r2", "pearson", "spearman", "loss"),
}  # fmt: skip


def render(settings: Settings, document: dict[str, Any], manifest: dict[str, Any], *, model_ref: str) -> str:
    """The card's text, with the credentials of any URL in it masked."""
    return redact_text(_render(settings, document, manifest, model_ref=model_ref))


def _render(settings: Settings, document: dict[str, Any], manifest: dict[str, Any], *, model_ref: str) -> str:
    problem = document["problem_type"]
    data = manifest["data"]
    training = manifest["training"]
    files = set(manifest["files"])  # the charts that were drawn; a failed one is left out
    lines = [
        *_front_matter(settings, document),
        f"# {settings.run_id}",
        "",
        f"`{settings.model}` fine-tuned for {_task(problem, document['labels'])} on "
        f"`{data['source']}` ({data['rows']['train']:,} training rows), by ftjob.",
        "",
        "## Results",
        "",
        "| metric | " + " | ".join(s for s in ("validation", "test") if s in document) + " |",
        "|---|" + "---:|" * sum(s in document for s in ("validation", "test")),
    ]
    for name in _SHOWN_METRICS[problem]:
        values = [document[s].get(name) for s in ("validation", "test") if s in document]
        if any(v is not None for v in values):
            lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in values) + " |")
    lines += [
        "",
        f"Best checkpoint chosen on validation `{document['headline']['metric']}`. "
        "Per-class scores and the confusion matrix are in `metrics.json`.",
        "",
    ]
    if problem != REGRESSION:
        lines += _label_table(document)
    lines += _prediction_chart(problem, files)
    lines += [
        "## Usage",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        *_download_hint(model_ref),
        f'classifier = pipeline("text-classification", model="{_local_ref(model_ref)}"{_pipeline_kwargs(problem)})',
        f"print(classifier({_example_input(settings)}))",
        "```",
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        f"| base model | `{settings.model}` |",
        f"| epochs / steps | {training.get('epochs')} / {training.get('steps')} |",
        f"| batch size (per device x accumulation x devices) | {settings.batch_size} x "
        f"{settings.gradient_accumulation_steps} x {training.get('world_size')} |",
        f"| learning rate, schedule, warm-up | {settings.learning_rate}, {settings.lr_scheduler}, "
        f"{settings.warmup_ratio:.0%} |",
        f"| weight decay | {settings.weight_decay} |",
        f"| max length | {data['max_length']} tokens |",
        f"| precision | {training.get('precision')} |",
        f"| device | {training.get('device')} |",
        f"| seed | {settings.seed} |",
        f"| train throughput | {_fmt(training.get('train_samples_per_second'))} samples/s |",
        "",
        "Everything needed to reproduce the run (settings with secrets removed, library "
        "versions, dataset fingerprint, timings) is in `run_manifest.json`; per-step "
        "losses are in `train_log.jsonl`.",
        "",
    ]
    if TENSORBOARD_DIR in files:
        lines += [f"TensorBoard event files are in `{TENSORBOARD_DIR}/`: `tensorboard --logdir {TENSORBOARD_DIR}`.", ""]
    if TRAINING_CURVES in files:
        lines += [
            "## Training curves",
            "",
            f"![Training curves: loss, validation {document['headline']['metric']}, learning rate "
            f"by optimizer step]({TRAINING_CURVES})",
            "",
            "The star marks the evaluation that chose the published checkpoint.",
            "",
        ]
    if manifest.get("search"):
        lines += _search_section(manifest["search"])
    return "\n".join(lines)


def _prediction_chart(problem: str, files: set[str]) -> list[str]:
    if problem == REGRESSION and PREDICTION_SCATTER in files:
        return [
            "## Predicted vs true",
            "",
            f"![Validation predictions against true values]({PREDICTION_SCATTER})",
            "",
        ]
    if problem != REGRESSION and CONFUSION_MATRIX in files:
        how = (
            "one matrix per label: rows true, columns predicted"
            if problem == MULTI
            else "rows: true label, columns: predicted label"
        )
        return [
            "## Confusion matrix",
            "",
            f"![Validation confusion matrix]({CONFUSION_MATRIX})",
            "",
            f"On the validation split; {how}; colour: share of the true label's rows.",
            "",
        ]
    return []


_SEARCHED = {
    "learning_rate": "learning rate",
    "batch_size": "batch size",
    "epochs": "epochs",
    "warmup_ratio": "warm-up ratio",
    "weight_decay": "weight decay",
}


def _search_section(search: dict[str, Any]) -> list[str]:
    best = search["best"]
    names = list(search["space"])
    better = "lower" if search["direction"] == "minimize" else "higher"
    lines = [
        "## Hyperparameter search",
        "",
        f"The training values above won a search of {len(search['trials'])} trials ({search['sampler']}, "
        f"seed {search['seed']}), each a full training run scored by validation `{search['metric']}` "
        f"({better} is better); the final model was then trained once with the best trial's values. "
        "Every trial is in `search_trials.jsonl`.",
        "",
        "| parameter | searched | chosen |",
        "|---|---|---:|",
    ]
    for name in names:
        spec = search["space"][name]
        if spec["type"] == "choice":
            searched = ", ".join(str(c) for c in spec["choices"])
        else:
            searched = f"{_value(spec['low'])} to {_value(spec['high'])}" + (" (log scale)" if spec.get("log") else "")
        lines.append(f"| {_SEARCHED.get(name, name)} | {searched} | {_value(best['params'][name])} |")
    lines += [
        "",
        "| trial | " + " | ".join(_SEARCHED.get(n, n) for n in names) + f" | {search['metric']} | seconds |",
        "|---:|" + "---:|" * (len(names) + 2),
    ]
    for trial in search["trials"]:
        number = f"**{trial['number']}** (best)" if trial["number"] == best["number"] else str(trial["number"])
        values = [_value(trial["params"].get(n)) for n in names]
        score = _fmt(trial["value"]) if trial["state"] == "complete" else "failed"
        lines.append(f"| {number} | " + " | ".join(values) + f" | {score} | {trial['seconds']:.0f} |")
    return [*lines, ""]


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _front_matter(settings: Settings, document: dict[str, Any]) -> list[str]:
    meta: list[str] = ["---", "library_name: transformers", "pipeline_tag: text-classification"]
    meta += ["tags:", "- text-classification", "- ftjob"]
    if _hub_id(settings.model, "FT_MODEL", "model"):
        meta.append(f"base_model: {json.dumps(settings.model)}")
    if _hub_id(settings.dataset, "FT_DATASET", "dataset"):
        meta += ["datasets:", f"- {json.dumps(settings.dataset)}"]
    meta += ["metrics:", f"- {document['headline']['metric']}"]
    meta += _model_index(settings, document)
    return [*meta, "---", ""]


def _model_index(settings: Settings, document: dict[str, Any]) -> list[str]:
    """`model-index` metadata: the Hub renders it as the model page's results widget."""
    q = json.dumps  # JSON strings are valid YAML scalars, quoting included
    lines = ["model-index:", f"- name: {q(settings.run_id)}", "  results:"]
    for split in ("validation", "test"):
        if split not in document:
            continue
        lines += [
            "  - task:",
            "      type: text-classification",
            "      name: Text Classification",
            "    dataset:",
            f"      name: {q(settings.dataset)}",
            f"      type: {q(settings.dataset)}",
            *([f"      config: {q(settings.dataset_config)}"] if settings.dataset_config else []),
            f"      split: {q(split)}",
            "    metrics:",
        ]
        for name in _SHOWN_METRICS[document["problem_type"]]:
            value = document[split].get(name)
            if isinstance(value, float) and name != "loss":
                lines += [
                    f"    - type: {name}",
                    f"      value: {value:.6g}",
                    f"      name: {q(name + ' (' + split + ')')}",
                ]
    return lines


def _hub_id(value: str, variable: str, what: str) -> bool:
    try:
        return classify(value, variable, what=what).kind == "hub"
    except Exception:
        return False


def _label_table(document: dict[str, Any]) -> list[str]:
    per_class = document["validation"].get("per_class", {})
    lines = ["## Labels", "", "| id | label | validation support | validation f1 |", "|---:|---|---:|---:|"]
    for i, name in enumerate(document["labels"]):
        detail = per_class.get(name, {})
        lines.append(f"| {i} | {name} | {detail.get('support', '')} | {_fmt(detail.get('f1'))} |")
    return [*lines, ""]


def _task(problem: str, labels: list[str]) -> str:
    if problem == REGRESSION:
        return "text regression"
    if problem == MULTI:
        return f"multi-label classification over {len(labels)} labels"
    return f"{len(labels)}-way text classification ({', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''})"


def _local_ref(model_ref: str) -> str:
    return "./model" if model_ref.startswith("s3://") else model_ref


def _download_hint(model_ref: str) -> list[str]:
    if not model_ref.startswith("s3://"):
        return []
    return [f"# first: aws s3 cp --recursive {model_ref} ./model", ""]


def _pipeline_kwargs(problem: str) -> str:
    if problem == MULTI:
        return ', top_k=None, function_to_apply="sigmoid"'
    if problem == REGRESSION:
        return ', function_to_apply="none"'
    return ""


def _example_input(settings: Settings) -> str:
    if settings.text_pair_column:
        return '{"text": "The first sentence.", "text_pair": "The second sentence."}'
    return '"A sentence to classify."'


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)

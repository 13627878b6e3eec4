"""The model card (README.md in the model folder): results, labels, usage, provenance.

The metadata block is huggingface_hub's own (ModelCardData, EvalResult), and the card is
parsed back through ModelCard before it is written, so a card the Hub would misread fails
the run here. The card names its inputs only by what a reader can use: a Hub id, or for a
local folder or an S3 prefix just its last name; never a path on this machine or a bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.charts import CONFUSION_MATRIX, PREDICTION_SCATTER, TRAINING_CURVES
from job.labels import MULTI, REGRESSION
from job.redaction import redact_text
from job.settings import Settings
from job.storage import classify
from job.trackers import TENSORBOARD_DIR

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCardData

_SHOWN_METRICS = {
    "single_label_classification": (
        "accuracy", "f1", "f1_macro", "precision", "recall", "mcc", "roc_auc", "pr_auc", "loss",
    ),
    "multi_label_classification": (
        "subset_accuracy", "f1_micro", "f1_macro", "hamming_accuracy", "roc_auc_macro", "pr_auc_macro", "loss",
    ),
    "regression": ("rmse", "mae", "r2", "pearson", "spearman", "loss"),
}  # fmt: skip


def render(
    settings: Settings,
    document: dict[str, Any],
    manifest: dict[str, Any],
    *,
    model_ref: str,
    model_revision: str | None = None,
) -> str:
    """The card's text, with the credentials of any URL in it masked. `model_ref` and
    `model_revision`: what a reader passes to `pipeline` to load the published model."""
    from huggingface_hub import ModelCard

    model = _input(settings.model, "FT_MODEL", "model")
    dataset = _input(settings.dataset, "FT_DATASET", "dataset")
    body = _render(
        settings, document, manifest, model=model, dataset=dataset, model_ref=model_ref, model_revision=model_revision
    )
    metadata = _card_data(settings, document, model=model, dataset=dataset).to_yaml()
    card = ModelCard(f"---\n{metadata}\n---\n\n{body}")  # parsing validates the model-index
    return redact_text(str(card))


@dataclass(frozen=True)
class _Input:
    hub_id: str | None  # a Hub repo id a reader can load; None for a local folder or S3
    name: str | None  # how the text names it: the Hub id, else the file or folder name alone


def _input(value: str, variable: str, what: str) -> _Input:
    try:
        location = classify(value, variable, what=what)
    except Exception:  # the card describes a finished run; an input gone since is named, not checked
        location = None
    if location is not None and location.kind == "hub":
        return _Input(location.ref, location.ref)
    if "://" in value:  # s3://bucket/prefix: the prefix's last part; a bucket alone stays unnamed
        _, _, key = value.partition("://")[2].partition("/")
        return _Input(None, key.strip("/").rsplit("/", 1)[-1] or None)
    return _Input(None, Path(value).expanduser().resolve().name or None)


def _model_phrase(model: _Input) -> str:
    if model.hub_id:
        return f"`{model.hub_id}`"
    return f"a local model (`{model.name}`)" if model.name else "a local model"


def _dataset_phrase(settings: Settings, dataset: _Input, rows: int) -> str:
    if dataset.hub_id:
        config = f" (`{settings.dataset_config}`)" if settings.dataset_config else ""
        return f"`{dataset.hub_id}`{config} ({rows:,} training rows)"
    named = f", `{dataset.name}`" if dataset.name else ""
    return f"a private dataset{named} ({rows:,} training rows)"


def _render(
    settings: Settings,
    document: dict[str, Any],
    manifest: dict[str, Any],
    *,
    model: _Input,
    dataset: _Input,
    model_ref: str,
    model_revision: str | None,
) -> str:
    problem = document["problem_type"]
    data = manifest["data"]
    training = manifest["training"]
    files = set(manifest["files"])  # the charts that were drawn; a failed one is left out
    lines = [
        f"# {settings.run_id}",
        "",
        f"Fine-tuned from {_model_phrase(model)} for {_task(problem, document['labels'])} on "
        f"{_dataset_phrase(settings, dataset, data['rows']['train'])}, by ftjob.",
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
        "classifier = pipeline(",
        f'    "text-classification", model="{_local_ref(model_ref)}",'
        + (f' revision="{model_revision}",' if model_revision else ""),
        f"    truncation=True, max_length={data['max_length']},{_pipeline_kwargs(problem)}",
        ")",
        f"print(classifier({_example_input(settings)}))",
        "```",
        "",
        *_length_note(data),
        "",
        *_threshold_note(document),
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        f"| base model | {_model_phrase(model)} |",
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


def _card_data(settings: Settings, document: dict[str, Any], *, model: _Input, dataset: _Input) -> ModelCardData:
    """The metadata block: what the Hub indexes and shows (results widget, filters, lineage)."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        base_model=model.hub_id,
        datasets=[dataset.hub_id] if dataset.hub_id else None,
        language=settings.language,
        license=settings.license,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["text-classification", "ftjob"],
        metrics=[document["headline"]["metric"]],
        model_name=settings.run_id,
        eval_results=_eval_results(settings, document, dataset),
    )


def _eval_results(settings: Settings, document: dict[str, Any], dataset: _Input) -> list[EvalResult] | None:
    """`model-index`: one result per split and metric, for the Hub's results widget."""
    from huggingface_hub import EvalResult

    # A private dataset has no id: `type` says so rather than guess a Hub dataset of that name.
    common: dict[str, Any] = {
        "task_type": "text-classification",
        "task_name": "Text Classification",
        "dataset_type": dataset.hub_id or "private",
        "dataset_name": dataset.name or "private dataset",
    }
    if dataset.hub_id:
        common.update(dataset_config=settings.dataset_config, dataset_revision=settings.dataset_revision)
    results = [
        EvalResult(
            **common,
            dataset_split=split,
            metric_type=name,
            metric_value=float(value),
            metric_name=f"{name} ({split})",
        )
        for split in ("validation", "test")
        if split in document
        for name in _SHOWN_METRICS[document["problem_type"]]
        if name != "loss" and isinstance(value := document[split].get(name), float)
    ]
    return results or None


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


def _length_note(data: dict[str, Any]) -> list[str]:
    record = data.get("long_texts") or {}
    if record.get("mode") != "windows":
        return [
            f"The model was trained and evaluated on the first {data['max_length']} tokens of each input; "
            "`truncation=True` cuts longer texts the same way (without it a longer text fails)."
        ]
    windowed = ((data.get("token_lengths") or {}).get("train") or {}).get("texts_in_windows")
    share = f" ({windowed} of the training texts)" if windowed is not None else ""
    return [
        f"Texts longer than {data['max_length']} tokens{share} were split into windows of {data['max_length']} tokens "
        f"that overlap by {record['overlap']} (at most {record['max_windows']} per text, evenly spaced), each "
        "trained on with its text's label; a text's scores are the mean of its windows' logits. "
        "The pipeline above reads only the first window (`truncation=True`); to score long texts as the "
        "metrics here did, use `python -m job predict` with this model, or tokenize with "
        f"`return_overflowing_tokens=True, stride={record['overlap']}`, average the logits of each text's "
        "windows and apply softmax (sigmoid per label for multi-label).",
    ]


def _pipeline_kwargs(problem: str) -> str:
    if problem == MULTI:
        return ' top_k=None, function_to_apply="sigmoid",'
    if problem == REGRESSION:
        return ' function_to_apply="none",'
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


def _threshold_note(document: dict[str, Any]) -> list[str]:
    """The pipeline decides by argmax (0.5 per label); the metrics above used the tuned cuts."""
    cuts = document.get("decision_thresholds")
    if not cuts:
        return []
    listed = ", ".join(f"`{name}` above {cut:.4f}" for name, cut in cuts.items())
    return [
        f"The scores above decide with thresholds tuned on the validation split: {listed} "
        "(stored as `decision_thresholds` in `config.json`; `python -m job predict` applies them). "
        "The pipeline decides by the highest score instead: compare the label's score with its threshold "
        "to get the same decisions.",
        "",
    ]

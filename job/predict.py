"""Batch prediction: a saved classifier scores a dataset, and the predictions are
published like a run, to `<FT_OUTPUT>/<FT_RUN_ID>/` with the completion manifest.

    FT_MODEL=outputs/<run id> FT_DATASET=./new-reviews.csv FT_OUTPUT=./predictions python -m job predict
"""

from __future__ import annotations

import contextlib
import heapq
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from job import artifacts, checkpoints, data, device, inference, labels, metrics, modeling, scaffold, windows
from job.errors import DataError
from job.files import write_json
from job.labels import LABELS, LabelSpec
from job.logs import get_logger
from job.preemption import StopRequest
from job.prepare import transient_cache
from job.redaction import redact_document
from job.results import Prediction
from job.scaffold import Phases
from job.settings import Settings, redacted
from job.storage import Output
from job.tokenization import length_stats, tokenize
from job.workspace import Workspace

PREDICTIONS = "predictions.jsonl"
PREDICT_MANIFEST = "predict_manifest.json"
NO_TEXT = "no text"

log = get_logger("job.predict")


def predict(settings: Settings) -> dict[str, Any]:
    """Score FT_DATASET with the classifier FT_MODEL and publish the predictions; returns
    the summary it logs. Raises JobError subclasses on failure."""
    phases = Phases()
    output = scaffold.writable_output(settings)  # before downloading a model and scoring, not after
    work = Workspace.of(settings)
    stop = StopRequest(work.stop_file)
    with stop.installed(), scaffold.owned(settings, work, checkpoints.locate(settings, work.checkpoint_mirror)):
        stop.clear()
        return _predict(settings, output, work, phases, stop)


def _predict(settings: Settings, output: Output, work: Workspace, phases: Phases, stop: StopRequest) -> dict[str, Any]:
    done = scaffold.already_complete(output)
    if done is not None:
        return done
    staging = scaffold.fresh_folder(work.predictions)
    log.info("predict.started", model=settings.model, dataset=settings.dataset, output=output.location)

    with phases.phase("load_model"):
        model_path = modeling.resolve_model(settings)
        config = modeling.load_config(model_path, settings)
        spec = labels.spec_of_model(config)
        trained = _training_record(model_path)
        tokenizer = modeling.load_tokenizer(model_path, settings)
        modeling.check_tokenizer_matches(tokenizer, config)
        max_length = _max_length(settings, tokenizer, config, trained)
        windowing = _windowing(settings, tokenizer, max_length, trained)
        model = modeling.load_classifier(model_path, config, settings)
    log.info(
        "predict.model",
        problem_type=spec.problem_type,
        labels=list(spec.names),
        trained_in_run=trained.get("run_id"),
        max_length=max_length,
        long_texts=windowing.record(),
    )

    with phases.phase("load_data"):
        raw, split, source = data.load_split_to_score(settings)
        rows, skipped = data.rows_to_score(raw, split, settings)
        rows, scored = _with_labels(rows, spec, settings, split)
        ids = list(raw[settings.predict_id_column]) if settings.predict_id_column else None
    with phases.phase("tokenize"), transient_cache():
        tokenized = tokenize(
            rows,
            tokenizer,
            text_column=settings.text_column,
            pair_column=settings.text_pair_column,
            windowing=windowing,
            keep_text=False,
        )

    precision = device.precision(settings.mixed_precision)
    batch_size = device.eval_batch_size(settings)
    workers = device.dataloader_workers(settings)
    log.info("predict.scoring", rows=len(tokenized), split=split, batch_size=batch_size, precision=precision)
    with phases.phase("predict"):
        result = inference.score(
            tokenized,
            model,
            tokenizer,
            batch_size=batch_size,
            precision=precision,
            workers=workers,
            stop=lambda: stop.requested,
        )
    logits, index, labelled = windows.pool(
        result.logits, tokenized[data.INDEX], np.asarray(tokenized[LABELS]) if scored else None
    )
    prediction = Prediction(logits=logits, labels=labelled, index=index)
    report = metrics.report(prediction.logits, prediction.labels, spec) if prediction.labels is not None else None

    with phases.phase("write"):
        written = _write_predictions(
            staging / PREDICTIONS, prediction, spec, skipped=skipped, ids=ids, all_scores=settings.predict_all_scores
        )
    phases.seconds["total_before_publish"] = phases.elapsed()
    manifest = {
        "run_id": settings.run_id,
        "command": "predict",
        "model": {
            "ref": settings.model,
            "revision": settings.model_revision,
            "trained_in_run": trained.get("run_id"),
            "labels": spec.to_json(),
        },
        "data": {
            "source": source,
            "split": split,
            "rows": len(raw),
            "predicted": len(prediction.index),
            "windows": len(tokenized),
            "skipped_no_text": len(skipped),
            "labelled": report is not None,
            "max_length": max_length,
            "long_texts": windowing.record(),
            "token_lengths": length_stats(tokenized, max_length),
        },
        "inference": result.stats,
        "metrics": report,
        "timings_s": phases.rounded(),
        "settings": redacted(settings),
        "environment": artifacts.environment(),
        "files": [PREDICTIONS, PREDICT_MANIFEST],
    }
    write_json(staging / PREDICT_MANIFEST, redact_document(manifest))

    location = scaffold.publish(output, staging, message=f"{written} predictions by {settings.model}", phases=phases)
    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        work.root.rmdir()  # the run's scratch folder, unless something else lives there

    summary: dict[str, Any] = {
        "status": "completed",
        "location": location,
        "predictions": f"{location.rstrip('/')}/{PREDICTIONS}",
        "rows": written,
        "skipped_no_text": len(skipped),
        "rows_per_second": result.stats["rows_per_second"],
        "padding_efficiency": result.stats["padding_efficiency"],
        "wall_s": round(phases.elapsed(), 1),
    }
    if report is not None:
        headline = metrics.default_metric(spec.problem_type)
        summary.update(metric=headline, value=report.get(headline))
    log.info("predict.completed", **summary)
    return summary


def _training_record(model_path: Path) -> dict[str, Any]:
    """Run id and max length of the job run that trained the model, when it was this job."""
    try:
        manifest = json.loads((model_path / artifacts.RUN_MANIFEST).read_text())
        data_record = manifest.get("data", {})
        return {
            "run_id": manifest.get("run_id"),
            "max_length": data_record.get("max_length"),
            "long_texts": data_record.get("long_texts"),
        }
    except (OSError, ValueError, AttributeError):
        return {}


def _max_length(
    settings: Settings, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig, trained: dict[str, Any]
) -> int:
    """FT_MAX_LENGTH, else the length the model was trained and evaluated with, else its limit."""
    limit = modeling.max_length(settings, tokenizer, config)
    if settings.max_length is None and isinstance(trained.get("max_length"), int):
        return min(limit, trained["max_length"])
    return limit


def _windowing(
    settings: Settings, tokenizer: PreTrainedTokenizerBase, max_length: int, trained: dict[str, Any]
) -> windows.Windowing:
    """FT_LONG_TEXTS, else what the model was trained with: its windows' overlap too, when
    they were as long as these (a model that predates windows was trained on cut texts)."""
    record = trained.get("long_texts") if isinstance(trained.get("long_texts"), dict) else {}
    mode = settings.long_texts
    if mode == "auto":
        mode = record.get("mode", "truncate" if trained.get("run_id") else "windows")
    overlap = record.get("overlap") if record.get("max_length") == max_length else None
    return windows.of_settings(settings, tokenizer, max_length, mode=mode, overlap=overlap)


def _with_labels(rows: Dataset, spec: LabelSpec, settings: Settings, split: str) -> tuple[Dataset, bool]:
    """Encode the label column when there is one the model's labels can score; else drop it.

    Labels are a bonus here (metrics in the manifest), never a reason to fail or to drop rows.
    """
    if settings.label_column not in rows.column_names:
        return rows, False
    # Without FT_LABELS, labels the model does not know raise instead of dropping rows.
    strict = settings.model_copy(update={"labels": None})
    try:
        encoded = labels.encode(rows, spec, strict, split=split, required=False)
    except DataError as exc:
        log.warning("predict.not_scored", split=split, reason=exc.message)
        encoded = None
    if encoded is None:
        return rows.remove_columns(settings.label_column), False
    return encoded, True


def _write_predictions(
    path: Path,
    prediction: Prediction,
    spec: LabelSpec,
    *,
    skipped: list[int],
    ids: list[Any] | None,
    all_scores: bool,
) -> int:
    """One line per source row, in source order: predicted rows and the rows without text."""
    lines = heapq.merge(
        artifacts.prediction_rows(prediction, spec, all_scores=all_scores),
        (artifacts.unpredicted_row(i, spec, reason=NO_TEXT, all_scores=all_scores) for i in skipped),
        key=lambda row: row["index"],
    )
    written = 0
    with path.open("w") as handle:
        for row in lines:
            # The id goes right after the index, where a reader looks for it.
            line = row if ids is None else {"index": row["index"], "id": ids[row["index"]], **row}
            handle.write(json.dumps(line, default=str) + "\n")
            written += 1
    return written

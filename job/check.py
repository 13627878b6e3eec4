"""`python -m job check`: a dry run. It takes the run's own first steps, so it fails where
and how the run would (the same error line, the same exit code), then reports what the
run would do and about how long it would take, one event per finding:

    check.settings   the run: model, data, output, topology
    check.output     FT_OUTPUT and FT_CHECKPOINT_DIR are writable (probed, nothing left), apart,
                     and no live process owns the run id
    check.resume     the checkpoint the run would resume from, made with this run's inputs
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

Warnings (the run would go ahead, but look): `check.already_complete`, `check.stale_lease`,
`check.unknown_tokens`, `check.label_imbalance`, `check.labels_missing`,
`check.truncation`. They leave the exit code at 0.

It writes nothing to FT_OUTPUT or FT_CHECKPOINT_DIR. Like a run it fills FT_CACHE_DIR
(downloads, the tokenized splits), so the run that follows starts sooner.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from job import class_weights, data, device, estimate, labels, resume, scaffold, search, thresholds, training, windows
from job.class_weights import IMBALANCE_RATIO
from job.data import INDEX
from job.labels import LABELS, REGRESSION
from job.logs import get_logger
from job.prepare import TEST, TRAIN, VALIDATION, PreparedData
from job.settings import Settings
from job.tokenization import LENGTH, texts_of
from job.topology import discover
from job.windows import WINDOW
from job.workspace import Workspace

# Share of training rows cut by FT_MAX_LENGTH from which the lost text is worth a warning.
TRUNCATION_SHARE = 0.05
# Share of unknown tokens from which the tokenizer probably does not fit the text
# (wrong tokenizer files, another language or script).
UNKNOWN_TOKEN_SHARE = 0.05
TOKEN_SAMPLE_ROWS = 1000

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

    work = Workspace.of(settings)
    output, saved = scaffold.preflight(settings, topology, work, dry_run=True)
    owner = scaffold.probe_owner(settings, topology, work, saved)
    complete = output.is_complete()
    log.info(
        "check.output",
        location=output.location,
        checkpoints=saved.durable,
        access_checked=topology.is_main_node,  # other nodes never write: the run checks only on the first
        already_complete=complete,
        **owner,
    )
    if owner.get("lease") == "stale":
        warn(
            "check.stale_lease",
            held_by=owner.get("held_by"),
            effect="its owner stopped renewing it (killed?); the run waits for it to expire, then takes it over",
        )
    if complete:
        warn(
            "check.already_complete",
            location=output.location,
            effect=f"a run with FT_RUN_ID={settings.run_id} would do nothing; set a new FT_RUN_ID",
        )

    inputs = scaffold.load_inputs(settings)
    chosen = scaffold.defaults_for(settings, inputs, topology)
    settings = chosen.settings()
    model_path, tokenizer, prepared = inputs.model_path, inputs.tokenizer, inputs.prepared
    start = resume.decide(settings, inputs, saved, topology, chosen, dry_run=True)
    log.info(
        "check.resume",
        checkpoints=saved.durable,
        resumes_from=start.found,
        search_record=start.search_record is not None,
    )
    log.info(
        "check.model",
        path=str(model_path),
        tokenizer=type(tokenizer).__name__,
        vocab_size=len(tokenizer),
        max_length=prepared.max_length,
        problem_type=prepared.labels.problem_type,
        labels=list(prepared.labels.names),
    )
    rows = {name: len(texts_of(split)) for name, split in prepared.splits.items()}  # texts, not windows
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
    train_texts = texts_of(prepared.train)
    cuts = thresholds.planned(
        settings.decision_thresholds,
        prepared.labels,
        labels.class_counts(train_texts, prepared.labels),
        len(train_texts),
    )
    if cuts is not None:
        log.info("check.thresholds", **cuts)
    for event, fields in _label_warnings(label_report, settings):
        warn(event, **fields)

    lengths = _lengths(settings, tokenizer, prepared)
    for name, stats in lengths.items():
        log.info("check.lengths", split=name, **stats)
    _long_texts(lengths[TRAIN], windows.Windowing.of_record(prepared.meta["long_texts"]), warn)

    # What the training step would reject before its first batch.
    precision = device.precision(settings.mixed_precision)
    args = training.arguments(settings, saved.local, precision, inputs.metric)

    plan = estimate.plan(args, settings, len(prepared.train), topology.world_size)
    log.info("check.plan", **plan)
    timed = estimate.estimate(
        settings,
        prepared,
        model_path=model_path,
        tokenizer=tokenizer,
        precision=precision,
        planned=plan,
        trial_epochs=search.most_trial_epochs(settings, chosen) if settings.search_trials else None,
    )
    log.info("check.estimate", **timed)

    summary = {
        "status": "passed",
        "warnings": warnings,
        "rows": rows,
        "labels": label_report,
        "lengths": lengths,
        "plan": plan,
        "estimate": timed,
        "check_seconds": round(time.monotonic() - started, 1),
    }
    log.info(
        "check.passed",
        warnings=warnings,
        estimated_duration=timed["duration"],
        estimated_total_s=timed["total_s"],
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
    scored = {name: texts_of(split) for name, split in prepared.splits.items() if name != TEST or prepared.test_scored}
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


def _label_warnings(report: dict[str, Any], settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    if "counts" not in report:
        return []
    found = []
    train = {name: n for name, n in report["counts"][TRAIN].items() if n}  # absent ones: labels.unused
    ratio = class_weights.imbalance(train)
    if ratio >= IMBALANCE_RATIO:
        largest = max(train, key=train.__getitem__)
        smallest = min(train, key=train.__getitem__)
        weighted = class_weights.applies(settings.class_weights, train)
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
                    "action": f"FT_CLASS_WEIGHTS={settings.class_weights}: the training loss is weighted by inverse "
                    "class frequency"
                    if weighted
                    else f"FT_CLASS_WEIGHTS={settings.class_weights}: the loss stays unweighted; set "
                    "FT_CLASS_WEIGHTS=balanced to weight it",
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
        firsts = np.flatnonzero(np.asarray(split[WINDOW]) == 0)  # one row per text
        lengths = np.asarray(split[LENGTH], dtype=np.int64)[firsts]
        at_limit = np.flatnonzero(lengths >= prepared.max_length)
        if at_limit.size:
            if raw is None:
                raw = data.load_splits(settings)
            carved = raw.eval is None  # validation rows then come from the training split
            source = {TRAIN: raw.train, VALIDATION: raw.train if carved else raw.eval, TEST: raw.test}[name]
            assert source is not None  # a prepared test split comes from a source one
            rows = source.select(split.select(firsts[at_limit].tolist())[INDEX])
            lengths[at_limit] = _untruncated(tokenizer, rows, settings)
        out[name] = {**_length_stats(lengths, prepared.max_length), "windows": len(split)}
    return out


def _long_texts(cut: dict[str, Any], windowing: windows.Windowing, warn: Any) -> None:
    """What happens to the training texts beyond the max length: windows (said), or cut
    (a warning when many are)."""
    if not cut["rows"] or not cut["truncated"]:
        return
    if windowing.active:
        log.info(
            "check.windows",
            split=TRAIN,
            texts_longer=cut["truncated"],
            share=cut["truncated_share"],
            max_length=windowing.max_length,
            windows=cut["windows"],
            effect=f"texts longer than {windowing.max_length} tokens are split into windows overlapping by "
            f"{windowing.overlap} (at most {windowing.max_windows} per text): {cut['windows']} rows to train on "
            f"for {cut['rows']} texts; FT_LONG_TEXTS=truncate keeps the first window only",
        )
        return
    if cut["truncated"] >= TRUNCATION_SHARE * cut["rows"]:
        warn(
            "check.truncation",
            split=TRAIN,
            truncated=cut["truncated"],
            share=cut["truncated_share"],
            max_length=windowing.max_length,
            effect="those rows lose their ends; raise FT_MAX_LENGTH (up to the model's limit) or set "
            "FT_LONG_TEXTS=windows if the ends matter",
        )


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

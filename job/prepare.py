"""Turn the raw dataset into tokenized train/validation/test splits, once per node.

The result is saved under `<FT_CACHE_DIR>/prepared/<key>`, where the key covers
everything that shapes it (source data, tokenizer, columns, labels, caps, seed),
so a re-run or a training worker loads it instead of tokenizing again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from job import data, labels, windows
from job.errors import DataError
from job.labels import SINGLE, LabelSpec
from job.logs import get_logger
from job.modeling import tokenizer_fingerprint
from job.settings import Settings
from job.tokenization import LENGTH, length_stats, texts_of, tokenize

FORMAT_VERSION = 3  # bump when the prepared layout or its meaning changes
META = "prepared.json"
TRAIN, VALIDATION, TEST = "train", "validation", "test"

log = get_logger("job.prepare")


@dataclass
class PreparedData:
    path: Path
    splits: DatasetDict  # train, validation (sorted longest first), optional test
    labels: LabelSpec
    max_length: int
    fingerprint: str
    test_scored: bool  # the test split has labels, so it gets metrics too
    meta: dict[str, Any]

    @property
    def train(self) -> Dataset:
        return self.splits[TRAIN]

    @property
    def validation(self) -> Dataset:
        return self.splits[VALIDATION]

    @property
    def test(self) -> Dataset | None:
        return self.splits.get(TEST)


def prepare(settings: Settings, tokenizer: PreTrainedTokenizerBase, max_length: int) -> PreparedData:
    raw = data.load_splits(settings)
    key = _cache_key(raw, settings, tokenizer, max_length)
    target = settings.cache_dir / "prepared" / key
    if (target / META).is_file():
        log.info("data.cache_hit", path=str(target))
        return load_prepared(target)
    with transient_cache():
        splits, meta = _build(raw, settings, tokenizer, max_length)
    meta["fingerprint"] = key
    _save(splits, meta, target)
    prepared = load_prepared(target)
    log.info(
        "data.prepared",
        path=str(target),
        problem_type=prepared.labels.problem_type,
        labels=list(prepared.labels.names),
        rows={name: len(split) for name, split in prepared.splits.items()},
        max_length=max_length,
    )
    return prepared


def load_prepared(path: Path) -> PreparedData:
    meta = json.loads((path / META).read_text())
    return PreparedData(
        path=path,
        splits=DatasetDict.load_from_disk(str(path)),
        labels=LabelSpec.from_json(meta["labels"]),
        max_length=meta["max_length"],
        fingerprint=meta["fingerprint"],
        test_scored=meta["test_scored"],
        meta=meta,
    )


def _build(
    raw: data.RawSplits, settings: Settings, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[dict[str, Dataset], dict[str, Any]]:
    raw = data.clean(raw, settings)
    spec = labels.build_spec(raw.train, settings)
    train = labels.encode(raw.train, spec, settings, split=raw.names["train"], required=True)
    assert train is not None  # required=True raises instead
    _check_classes(train, spec, raw.names["train"], settings, cause="labels")
    if raw.eval is not None:
        validation = labels.encode(raw.eval, spec, settings, split=raw.names["eval"], required=True)
        assert validation is not None
        eval_source = raw.names["eval"]
    else:
        train, validation = _carve(train, spec, settings)
        eval_source = f"{raw.names['train']} (held-out {settings.validation_fraction:.0%})"
    test, test_scored = None, False
    if raw.test is not None:
        encoded = labels.encode(raw.test, spec, settings, split=raw.names["test"], required=False)
        test_scored = encoded is not None
        test = encoded if encoded is not None else _without(raw.test, settings.label_column)
    if raw.eval is None:  # what holding out the validation rows left to train on
        _check_classes(train, spec, raw.names["train"], settings, cause="hold-out")
    _unused_labels(train, spec)

    train = _cap(train, settings.max_train_samples, settings.seed)
    validation = _cap(validation, settings.max_eval_samples, settings.seed)
    if test is not None:
        test = _cap(test, settings.max_test_samples, settings.seed)

    windowing = windows.of_settings(settings, tokenizer, max_length)
    columns = {"text_column": settings.text_column, "pair_column": settings.text_pair_column, "windowing": windowing}
    splits = {TRAIN: tokenize(train, tokenizer, keep_text=False, **columns)}
    # Evaluation order does not matter to the metrics, so sort longest first: batches
    # hold rows of one length (little padding) and memory peaks on the first batch.
    # Text stays for the reload check.
    splits[VALIDATION] = tokenize(validation, tokenizer, keep_text=True, **columns).sort(LENGTH, reverse=True)
    if test is not None:
        splits[TEST] = tokenize(test, tokenizer, keep_text=False, **columns).sort(LENGTH, reverse=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "labels": spec.to_json(),
        "max_length": max_length,
        "long_texts": windowing.record(),
        "test_scored": test_scored,
        "source": raw.source,
        "source_splits": {
            TRAIN: raw.names["train"],
            VALIDATION: eval_source,
            **({TEST: raw.names["test"]} if test is not None else {}),
        },
        "dropped_empty_text": raw.dropped,
        "source_files": raw.files,
        "class_counts": {name: labels.class_counts(texts_of(splits[name]), spec) for name in (TRAIN, VALIDATION)},
        "lengths": {name: length_stats(split, max_length) for name, split in splits.items()},
    }
    return splits, meta


def _carve(train: Dataset, spec: LabelSpec, settings: Settings) -> tuple[Dataset, Dataset]:
    """Hold out a validation slice of train, stratified by label when possible."""
    stratify = labels.LABELS if spec.problem_type == SINGLE else None
    try:
        parts = train.train_test_split(
            test_size=settings.validation_fraction, seed=settings.seed, stratify_by_column=stratify
        )
    except ValueError as exc:
        if stratify is None:
            raise DataError(
                f"cannot hold out {settings.validation_fraction:.0%} of {len(train)} training rows for "
                f"validation ({exc}); add data, raise FT_VALIDATION_FRACTION or provide FT_EVAL_SPLIT"
            ) from None
        # A label with a single row cannot be split both ways.
        log.warning("data.unstratified_split", reason=str(exc))
        return _carve(train, LabelSpec("regression"), settings)
    log.info("data.validation_carved", fraction=settings.validation_fraction, rows=len(parts["test"]))
    return parts["train"], parts["test"]


def _check_classes(train: Dataset, spec: LabelSpec, split: str, settings: Settings, *, cause: str) -> None:
    """Classification needs rows of two labels to train on; the error names what took them:
    FT_LABELS, which dropped the other labels' rows, or the validation rows held out."""
    if spec.problem_type != SINGLE:
        return
    counts = labels.class_counts(train, spec)
    present = [name for name, n in counts.items() if n]
    if len(present) >= 2:
        return
    found = f"{len(present)} label with rows ({', '.join(present) or 'none'})"
    if cause == "labels" and settings.labels:
        absent = [name for name, n in counts.items() if not n]
        raise DataError(
            f"FT_LABELS={','.join(settings.labels)} leaves split '{split}' {found}: no row has "
            f"{', '.join(absent)}; list labels the data has in FT_LABELS (classification needs two)"
        )
    if cause == "hold-out":
        raise DataError(
            f"split '{split}' has too few rows to hold out FT_VALIDATION_FRACTION="
            f"{settings.validation_fraction:g} for validation: {len(train)} row(s) with {found} are left to "
            "train on; add rows, or give a validation split (FT_EVAL_SPLIT)"
        )
    raise DataError(f"split '{split}' has {found}; classification needs at least two")


def _unused_labels(train: Dataset, spec: LabelSpec) -> None:
    if spec.problem_type != SINGLE:
        return
    missing = [name for name, n in labels.class_counts(train, spec).items() if not n]
    if missing:
        log.warning("labels.unused", labels=missing, effect="never seen in training; never predicted well")


def _cap(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or len(dataset) <= limit:
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit)).flatten_indices()


def _without(dataset: Dataset, column: str) -> Dataset:
    return dataset.remove_columns(column) if column in dataset.column_names else dataset


# The settings that shape the prepared rows from the same files (FT_MAX_LENGTH enters the
# cache key as the length it resolves to): checkpoints record them by name, so a restart that
# changes one is refused naming it.
SHAPING_SETTINGS = (
    "train_split", "eval_split", "test_split", "text_column", "text_pair_column", "label_column",
    "labels", "problem_type", "label_separator", "validation_fraction", "max_train_samples",
    "max_eval_samples", "max_test_samples", "seed", "long_texts", "window_overlap", "max_windows",
)  # fmt: skip


def _cache_key(raw: data.RawSplits, settings: Settings, tokenizer: PreTrainedTokenizerBase, max_length: int) -> str:
    shaping = settings.model_dump(include=set(SHAPING_SETTINGS))
    # Local files by their content (a fresh copy of the same bytes, a new machine's mirror, is
    # the same data); Hub splits by datasets' own fingerprint.
    sources = {
        role: [f["sha256"] for f in raw.files[raw.names[role]]] if raw.names[role] in raw.files
        else getattr(raw, role)._fingerprint
        for role in ("train", "eval", "test")
        if getattr(raw, role) is not None
    }  # fmt: skip
    blob = json.dumps(
        {
            "version": FORMAT_VERSION,
            "sources": sources,
            "settings": shaping,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "max_length": max_length,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _save(splits: dict[str, Dataset], meta: dict[str, Any], target: Path) -> None:
    """Write to a private folder, then rename: concurrent writers never see half a cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    DatasetDict(splits).save_to_disk(str(scratch))
    (scratch / META).write_text(json.dumps(meta, indent=2, default=str))
    try:
        scratch.rename(target)
    except OSError:
        if not (target / META).is_file():
            raise
        shutil.rmtree(scratch, ignore_errors=True)  # another process on this node won the race


@contextlib.contextmanager
def transient_cache() -> Iterator[None]:
    """Intermediate map/filter results go to temp files, not the shared datasets cache:
    the prepared folder is the only cache worth keeping."""
    was_enabled = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_caching()

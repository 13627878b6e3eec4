"""Load the raw dataset from the Hub or local files and pick its splits.

The result keeps only what the job reads (text, optional pair, label) plus each
row's position in its source split, so predictions can point back at the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from job import storage
from job.errors import ConfigError, DataError
from job.logs import get_logger
from job.settings import Settings
from job.storage import Location, classify, data_format_of

EVAL_SPLIT_NAMES = ("validation", "valid", "dev", "val")
INDEX = "index"  # row number in the source split, carried through to predictions

log = get_logger("job.data")


@dataclass
class RawSplits:
    """The splits the job uses, by role, and where they came from."""

    source: str
    train: Dataset
    eval: Dataset | None  # None: carve one out of train
    test: Dataset | None
    names: dict[str, str] = field(default_factory=dict)  # role -> split name in the source
    dropped: dict[str, int] = field(default_factory=dict)  # role -> rows dropped for empty text


_MAX_EMPTY_SHARE = 0.5  # dropped with a count below this share of a split, an error above


def load_splits(settings: Settings) -> RawSplits:
    """The train/eval/test splits as stored at the source, untouched."""
    location = classify(settings.dataset, "FT_DATASET", what="dataset")
    return _pick_splits(_load(location, settings), location, settings)


def clean(raw: RawSplits, settings: Settings) -> RawSplits:
    """Check columns, keep only the used ones (plus the row index), drop empty texts."""
    for role in ("train", "eval", "test"):
        dataset = getattr(raw, role)
        if dataset is None:
            continue
        # Test sets are often unlabelled; train and eval must have labels.
        _require_columns(dataset, raw.names[role], settings, label_required=role != "test")
        total = len(dataset)
        dataset, dropped = _drop_empty_texts(_keep_used_columns(dataset, settings), settings)
        if dataset:
            _check_empty_share(dropped, total, raw.names[role], settings)
        if dropped:
            raw.dropped[role] = dropped
            log.warning("data.rows_dropped", split=raw.names[role], rows=dropped, reason="empty or missing text")
        if len(dataset) == 0 and role != "test":
            raise DataError(
                f"split '{raw.names[role]}' of {raw.source} has no rows with text in column "
                f"'{settings.text_column}'; check FT_DATASET and FT_TEXT_COLUMN"
            )
        setattr(raw, role, dataset)
    return raw


def load_split_to_score(settings: Settings) -> tuple[Dataset, str, str]:
    """The split `python -m job predict` scores, its name, and where it came from."""
    location = classify(settings.dataset, "FT_DATASET", what="dataset")
    splits = _load(location, settings)
    available = ", ".join(splits) or "none"
    if settings.predict_split:
        if settings.predict_split not in splits:
            raise DataError(
                f"split '{settings.predict_split}' is not in dataset {location} (it has: {available}); "
                "set FT_PREDICT_SPLIT"
            )
        name = settings.predict_split
    elif "test" in splits:
        name = "test"
    elif len(splits) == 1 or "train" in splits:
        name = "train" if "train" in splits else next(iter(splits))
    else:
        raise DataError(
            f"dataset {location} has no test or train split (it has: {available}); "
            "set FT_PREDICT_SPLIT to the one to score"
        )
    log.info("data.splits", source=str(location), available=list(splits), predict_split=name)
    return splits[name], name, str(location)


def rows_to_score(dataset: Dataset, split: str, settings: Settings) -> tuple[Dataset, list[int]]:
    """The text (pair, label) columns plus each row's index, and the indices of rows
    without text: those are set aside, not dropped, so every source row keeps a line
    in the predictions. Labels are optional here."""
    _require_columns(dataset, split, settings, label_required=False)
    if settings.predict_id_column and settings.predict_id_column not in dataset.column_names:
        raise DataError(
            f"column '{settings.predict_id_column}' is not in split '{split}' "
            f"(columns: {', '.join(dataset.column_names)}); set FT_PREDICT_ID_COLUMN or unset it"
        )
    total = len(dataset)
    if total == 0:
        raise DataError(f"split '{split}' has no rows to score; check FT_DATASET and FT_PREDICT_SPLIT")
    kept, dropped = _drop_empty_texts(_keep_used_columns(dataset, settings), settings)
    _check_empty_share(dropped, total, split, settings)
    if not dropped:
        return kept, []
    log.warning("data.rows_skipped", split=split, rows=dropped, reason="empty or missing text", effect="no prediction")
    return kept, sorted(set(range(total)) - set(kept[INDEX]))


def _check_empty_share(dropped: int, total: int, split: str, settings: Settings) -> None:
    if dropped > total * _MAX_EMPTY_SHARE:
        # That many blanks means the wrong column or a broken export, not a few bad rows.
        raise DataError(
            f"{dropped} of {total} rows of split '{split}' have empty text in column "
            f"'{settings.text_column}'; check FT_TEXT_COLUMN and the export, or remove those rows"
        )


def _load(location: Location, settings: Settings) -> DatasetDict:
    cache = str(settings.cache_dir / "datasets")
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    if location.kind == "s3":
        location = Location("local", str(storage.fetch(location, settings, data_only=True)), location.variable)
    try:
        if location.kind == "hub":
            if settings.data_files:
                raise ConfigError("FT_DATA_FILES applies to local datasets; for a Hub dataset use FT_DATASET_CONFIG")
            loaded = datasets.load_dataset(
                location.ref,
                name=settings.dataset_config,
                revision=settings.dataset_revision,
                token=token,
                cache_dir=cache,
            )
        else:
            loaded = _load_local(location.path, settings, cache)
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # datasets raises many unrelated types for unreadable input
        chain = _causes(exc)
        decode = next((c for c in chain if isinstance(c, UnicodeDecodeError)), None)
        if decode is not None:
            raise DataError(
                f"dataset {location} is not UTF-8 text ({decode.reason} at byte {decode.start}); "
                "re-encode the files as UTF-8"
            ) from None
        # datasets wraps reader errors in a generic one; the first cause says what broke.
        cause = chain[1] if len(chain) > 1 else exc
        raise DataError(f"could not load dataset {location}: {_first_line(cause)}; {_hint(location)}") from None
    if not isinstance(loaded, DatasetDict):
        raise DataError(f"dataset {location} did not load as named splits; set FT_DATA_FILES")
    return loaded


def _load_local(path: Path, settings: Settings, cache: str) -> DatasetDict:
    if path.is_file():
        if settings.data_files:
            raise ConfigError(f"FT_DATA_FILES needs FT_DATASET to be a directory, but '{path}' is a file")
        return datasets.load_dataset(_format(path, settings), data_files={"train": str(path)}, cache_dir=cache)
    if settings.data_files:
        files: dict[str, list[str]] = {}
        for split, pattern in settings.data_files.items():
            matches = sorted(str(p) for p in path.glob(pattern) if p.is_file())
            if not matches:
                raise ConfigError(f"FT_DATA_FILES: '{pattern}' (split '{split}') matches no file under {path}")
            files[split] = matches
        first = Path(next(iter(files.values()))[0])
        return datasets.load_dataset(_format(first, settings), data_files=files, cache_dir=cache)
    if not any(data_format_of(p) for p in path.rglob("*") if p.is_file()):
        raise DataError(f"directory {path} holds no csv, json, jsonl or parquet files; set FT_DATASET to one that does")
    # datasets infers splits from file names (train/validation/dev/test) like it does for Hub repos.
    return datasets.load_dataset(str(path), cache_dir=cache)


def _format(path: Path, settings: Settings) -> str:
    if settings.data_format != "auto":
        return settings.data_format
    detected = data_format_of(path)
    if detected is None:
        raise ConfigError(
            f"cannot tell the format of '{path}' from its name; set FT_DATA_FORMAT to csv, json or parquet"
        )
    return detected


def _pick_splits(splits: DatasetDict, location: Location, settings: Settings) -> RawSplits:
    available = ", ".join(splits) or "none"

    def named(name: str, variable: str) -> Dataset:
        if name not in splits:
            raise DataError(f"split '{name}' is not in dataset {location} (it has: {available}); set {variable}")
        return splits[name]

    names = {"train": settings.train_split}
    train = named(settings.train_split, "FT_TRAIN_SPLIT")
    if settings.eval_split:
        names["eval"] = settings.eval_split
    else:
        found = next((n for n in EVAL_SPLIT_NAMES if n in splits and n != settings.train_split), None)
        if found:
            names["eval"] = found
    if settings.test_split and not settings.test_split_disabled:
        names["test"] = settings.test_split
    elif settings.test_split is None and "test" in splits and "test" not in names.values():
        names["test"] = "test"
    eval_ = named(names["eval"], "FT_EVAL_SPLIT") if "eval" in names else None
    test = named(names["test"], "FT_TEST_SPLIT") if "test" in names else None
    log.info("data.splits", source=str(location), available=list(splits), **{f"{k}_split": v for k, v in names.items()})
    return RawSplits(source=str(location), train=train, eval=eval_, test=test, names=names)


def _require_columns(dataset: Dataset, split: str, settings: Settings, *, label_required: bool) -> None:
    wanted = {"FT_TEXT_COLUMN": settings.text_column}
    if label_required:
        wanted["FT_LABEL_COLUMN"] = settings.label_column
    if settings.text_pair_column:
        wanted["FT_TEXT_PAIR_COLUMN"] = settings.text_pair_column
    for variable, column in wanted.items():
        if column not in dataset.column_names:
            raise DataError(
                f"column '{column}' is not in split '{split}' (columns: {', '.join(dataset.column_names)}); "
                f"set {variable}"
            )


def _keep_used_columns(dataset: Dataset, settings: Settings) -> Dataset:
    candidates = (settings.text_column, settings.text_pair_column, settings.label_column)
    used = [c for c in candidates if c and c in dataset.column_names]
    dataset = dataset.select_columns(used)
    return dataset.add_column(INDEX, list(range(len(dataset))))


def _drop_empty_texts(dataset: Dataset, settings: Settings) -> tuple[Dataset, int]:
    columns = [c for c in (settings.text_column, settings.text_pair_column) if c]

    def has_text(batch: dict[str, list[Any]]) -> list[bool]:
        cells = zip(*(batch[c] for c in columns), strict=True)
        return [all(isinstance(v, str) and v.strip() for v in row) for row in cells]

    kept = dataset.filter(has_text, batched=True)
    return kept, len(dataset) - len(kept)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what raised it, outermost first."""
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)
    return chain


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _hint(location: Location) -> str:
    if location.kind == "hub":
        return "check FT_DATASET, FT_DATASET_CONFIG and FT_DATASET_REVISION, and HF_TOKEN for private datasets"
    return "check that the files are valid csv, json(l) or parquet"

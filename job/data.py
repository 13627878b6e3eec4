"""Load the raw dataset from the Hub or local files and pick its splits.

The result keeps only what the job reads (text, optional pair, label) plus each
row's position in its source split, so predictions can point back at the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from job import faults, storage
from job.errors import ConfigError, DataError, JobError
from job.files import sha256_of
from job.logs import get_logger
from job.settings import Settings
from job.storage import Location, classify, data_format_of, data_stem
from job.storage.credentials import hub_token

EVAL_SPLIT_NAMES = ("validation", "valid", "dev", "val")
INDEX = "index"  # row number in the source split, carried through to predictions
# The names a file (or the folder above it) may have to belong to a split of a directory
# dataset; the same words datasets and the Hub use.
SPLIT_WORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_SHARD = re.compile(r"^(?P<split>[a-z]+)-\d+-of-\d+$")  # train-00000-of-00004

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
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # split -> files read (local sources)


@dataclass
class _Loaded:
    splits: DatasetDict
    files: dict[str, list[dict[str, Any]]]  # split -> path, size, sha256 of every file read; {} from the Hub


_MAX_EMPTY_SHARE = 0.5  # dropped with a count below this share of a split, an error above


def load_splits(settings: Settings) -> RawSplits:
    """The train/eval/test splits as stored at the source, untouched."""
    location = classify(settings.dataset, "FT_DATASET", what="dataset")
    loaded = _load(location, settings)
    raw = _pick_splits(loaded.splits, location, settings)
    raw.files = {split: loaded.files[split] for split in raw.names.values() if split in loaded.files}
    return raw


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
    splits = _load(location, settings).splits
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


def _load(location: Location, settings: Settings) -> _Loaded:
    # No cache_dir: the standard datasets cache (HF_DATASETS_CACHE, HF_HOME), which an
    # air-gapped cluster may have filled in advance.
    token = hub_token(settings) if location.kind == "hub" else None
    shown = location  # errors name the location as the user wrote it, not its mirror
    if location.kind == "s3":
        location = Location("local", str(storage.fetch(location, settings, data_only=True)), location.variable)
    files: dict[str, list[Path]] = {}
    try:
        if location.kind == "hub":
            if settings.data_files:
                raise ConfigError("FT_DATA_FILES applies to local datasets; for a Hub dataset use FT_DATASET_CONFIG")
            loaded = datasets.load_dataset(
                location.ref,
                name=settings.dataset_config,
                revision=settings.dataset_revision,
                token=token,
            )
        else:
            files = _split_files(location.path, settings)
            named = {split: [str(p) for p in paths] for split, paths in files.items()}
            first = next(iter(files.values()))[0]
            loaded = datasets.load_dataset(_format(first, settings), data_files=named)
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # datasets raises many unrelated types for unreadable input
        raise _load_failure(exc, shown, files, settings) from None
    if not isinstance(loaded, DatasetDict):
        raise DataError(f"dataset {shown} did not load as named splits; set FT_DATA_FILES")
    root = location.path if location.kind == "local" else None
    record = {split: [_file_record(p, root) for p in paths] for split, paths in files.items()}
    if record:
        log.info("data.files", source=str(location), **{split: [f["path"] for f in fs] for split, fs in record.items()})
    return _Loaded(loaded, record)


def _load_failure(exc: Exception, shown: Location, files: dict[str, list[Path]], settings: Settings) -> JobError:
    """The error line for a dataset that would not load: a fault of the disk or a file that
    does not decode or parse (job.faults), a split with no rows, or what datasets said."""
    known = faults.explain(exc, settings)
    if known is not None:
        return known
    chain = faults.chain(exc)
    empty = next((re.search(r'Instruction "([^"]+)" corresponds to no data', str(c)) for c in chain), None)
    if empty is not None:
        split = empty.group(1)
        names = ", ".join(faults.shown_path(str(p), settings) for p in files.get(split, [])) or "its files"
        return DataError(
            f"FT_DATASET={shown}: split '{split}' has no rows: {names} has no rows (a header at most); add rows, "
            "or leave the empty file out"
        )
    named = faults.unparseable(settings)  # the file that breaks the loader, whatever it said
    if named is not None:
        return named
    # datasets wraps reader errors in a generic one; the first cause says what broke.
    cause = chain[1] if len(chain) > 1 else exc
    return DataError(
        f"could not load dataset {shown}: {faults.shown_text(_first_line(cause), settings)}; {_hint(shown)}"
    )


def _split_files(path: Path, settings: Settings) -> dict[str, list[Path]]:
    """The files of each split of a local dataset: the file itself, FT_DATA_FILES's globs, or
    the files of a directory named for their split (`train.csv`, `dev.jsonl`, shards such as
    `train-00000-of-00004.parquet`, or any file under a `train/` folder). A data file that
    names no split stops the run: joining it to one would be a guess."""
    if path.is_file():
        if settings.data_files:
            raise ConfigError(f"FT_DATA_FILES needs FT_DATASET to be a directory, but '{path}' is a file")
        return {"train": [path]}
    if settings.data_files:
        files: dict[str, list[Path]] = {}
        for split, pattern in settings.data_files.items():
            matches = sorted(p for p in path.glob(pattern) if p.is_file())
            if not matches:
                raise ConfigError(f"FT_DATA_FILES: '{pattern}' (split '{split}') matches no file under {path}")
            files[split] = matches
        return files
    found = sorted(p for p in path.rglob("*") if p.is_file() and data_format_of(p) and not _hidden(p, path))
    if not found:
        raise DataError(f"directory {path} holds no csv, json, jsonl or parquet files; set FT_DATASET to one that does")
    by_split: dict[str, list[Path]] = {}
    unnamed = []
    for file in found:
        split = _split_of(file.relative_to(path))
        if split is None:
            unnamed.append(file)
        else:
            by_split.setdefault(split, []).append(file)
    if not by_split and len(unnamed) == 1:
        return {"train": unnamed}  # one file: the training data
    if unnamed:
        shown = ", ".join(str(p.relative_to(path)) for p in unnamed[:5]) + (" ..." if len(unnamed) > 5 else "")
        raise DataError(
            f"directory {path} holds data files that name no split: {shown}; name each file for its split "
            "(train, validation or dev, test; shards as train-00000-of-00002), move the others out, or list "
            "the files of each split with FT_DATA_FILES"
        )
    # Train first: datasets takes the columns from the first split (an unlabelled test set has fewer).
    return {split: by_split[split] for split in SPLIT_WORDS if split in by_split}


def _split_of(relative: Path) -> str | None:
    """The split a file belongs to by its name, or by the name of a folder above it."""
    stem = data_stem(relative)
    shard = _SHARD.match(stem)
    candidates = [stem, shard.group("split") if shard else None, *(p.lower() for p in relative.parts[:-1])]
    for candidate in candidates:
        for split, words in SPLIT_WORDS.items():
            if candidate in words:
                return split
    return None


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _file_record(path: Path, root: Path | None) -> dict[str, Any]:
    shown = path.relative_to(root).as_posix() if root is not None and root.is_dir() else path.name
    return {"path": shown, "size": path.stat().st_size, "sha256": sha256_of(path)}


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
    for variable in ("FT_TEXT_COLUMN", "FT_TEXT_PAIR_COLUMN"):
        column = wanted.get(variable)
        feature = dataset.features.get(column) if column else None
        dtype = getattr(feature, "dtype", None)
        if feature is not None and dtype not in ("string", "large_string", "null"):
            kind = "numbers" if dtype and dtype.startswith(("int", "uint", "float", "bool")) else str(dtype or feature)
            raise DataError(
                f"column '{column}' of split '{split}' holds {kind}, not text ({dtype or type(feature).__name__}); "
                f"set {variable} to the column with the text"
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _hint(location: Location) -> str:
    if location.kind == "hub":
        return (
            "check FT_DATASET, FT_DATASET_CONFIG and FT_DATASET_REVISION, and for a private dataset the token: "
            "set HF_TOKEN or log in with `hf auth login`"
        )
    return "check that the files are valid csv, json(l) or parquet"

"""Label handling: infer the problem type, fix the label set, encode every split.

Label ids are deterministic: the order given in FT_LABELS, else the dataset's own
ClassLabel order, else sorted names (numerically when every name is an integer).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets import ClassLabel, Dataset, LargeList, List, Sequence, Value

from job.errors import ConfigError, DataError
from job.logs import get_logger
from job.settings import MULTI, REGRESSION, SINGLE, Settings

LABELS = "labels"  # the column name the model's forward() takes

log = get_logger("job.labels")


@dataclass(frozen=True)
class LabelSpec:
    problem_type: str
    names: tuple[str, ...] = ()  # empty for regression
    # Binary: the cut on label id 1's probability; multi-label: one per label (job.thresholds).
    # None: argmax, or 0.5 per label.
    thresholds: tuple[float, ...] | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == REGRESSION else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names)) if self.names else {0: "value"}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"problem_type": self.problem_type, "names": list(self.names)}
        if self.thresholds is not None:
            out["thresholds"] = list(self.thresholds)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelSpec:
        cuts = data.get("thresholds")
        return cls(data["problem_type"], tuple(data["names"]), None if cuts is None else tuple(cuts))


def spec_of_model(config: Any) -> LabelSpec:
    """The labels a saved classifier predicts, from its config: id2label in id order and
    the problem type (models saved without one: one output is regression, more single-label)."""
    problem_type = config.problem_type or (REGRESSION if config.num_labels == 1 else SINGLE)
    if problem_type == REGRESSION:
        return LabelSpec(REGRESSION)
    names = tuple(str(config.id2label[i]) for i in range(config.num_labels))
    return LabelSpec(problem_type, names, thresholds_of_config(config, names, problem_type))


# The key in config.json under which the job stores the decision thresholds it tuned, by label.
THRESHOLDS_KEY = "decision_thresholds"


def thresholds_of_config(config: Any, names: tuple[str, ...], problem_type: str) -> tuple[float, ...] | None:
    stored = getattr(config, THRESHOLDS_KEY, None)
    if not isinstance(stored, dict):
        return None
    # Binary: stored by the second label's name (see job.thresholds.by_label).
    decided = names if problem_type == MULTI else names[1:] if len(names) == 2 else ()
    if not decided or any(name not in stored for name in decided):
        return None
    return tuple(float(stored[name]) for name in decided)


def build_spec(train: Dataset, settings: Settings) -> LabelSpec:
    feature = train.features[settings.label_column]
    problem_type = settings.problem_type if settings.problem_type != "auto" else _infer_problem_type(feature)
    if problem_type == REGRESSION:
        if settings.labels:
            raise ConfigError("FT_LABELS does not apply to FT_PROBLEM_TYPE=regression; unset one of them")
        return LabelSpec(REGRESSION)
    if settings.labels:
        names = tuple(settings.labels)
    else:
        inner = _inner(feature) if problem_type == MULTI else feature
        if isinstance(inner, ClassLabel):
            names = tuple(inner.names)
        else:
            to_names = _row_names(feature, settings) if problem_type == MULTI else None
            to_name = _name_of(feature)
            seen: set[str] = set()
            for value in train[settings.label_column]:
                if problem_type == MULTI:
                    seen.update(to_names(value) or ())  # type: ignore[misc]
                elif (name := to_name(value)) is not None:
                    seen.add(name)
            names = tuple(_sorted_names(seen))
    if len(names) < 2 and problem_type == SINGLE and settings.labels:
        raise ConfigError(
            f"FT_LABELS={','.join(settings.labels)} lists {len(names)} label; classification needs at least two"
        )
    if len(names) < 2 and problem_type == SINGLE:
        raise DataError(
            f"split '{settings.train_split}' has {len(names)} label value(s) in column "
            f"'{settings.label_column}' ({', '.join(names) or 'none'}); classification needs at least two"
        )
    if not names:
        raise DataError(f"split '{settings.train_split}' has no labels in column '{settings.label_column}'")
    return LabelSpec(problem_type, names)


def encode(dataset: Dataset, spec: LabelSpec, settings: Settings, *, split: str, required: bool) -> Dataset | None:
    """Replace the label column with model-ready `labels`.

    Returns None for a split without usable labels when they are not `required`
    (an unlabelled test set): it is predicted but not scored.
    """
    column = settings.label_column
    if column not in dataset.column_names:
        return None
    feature = dataset.features[column]
    values = list(dataset[column])
    if spec.problem_type == REGRESSION:
        encoded = [_number(v, split, column) for v in values]
        target = Value("float32")
        drop: list[int] = []
    elif spec.problem_type == MULTI:
        encoded, drop = _encode_multi(values, feature, spec, settings, split)
        target = List(Value("float32"))
    else:
        encoded, drop = _encode_single(values, feature, spec, settings, split)
        target = ClassLabel(names=list(spec.names))

    missing = sum(1 for v in encoded if v is None)
    if missing:
        if not required:
            if missing < len(encoded):
                log.warning("labels.partial", split=split, unlabelled_rows=missing, effect="split is not scored")
            return None
        raise DataError(
            f"{missing} row(s) of split '{split}' have no label in column '{column}'; fill in or remove those rows"
        )
    keep = sorted(set(range(len(encoded))) - set(drop))
    if drop:
        log.warning("labels.rows_dropped", split=split, rows=len(drop), reason="label not in FT_LABELS")
    out = dataset.remove_columns(column).add_column(LABELS, encoded, feature=target)
    return out.select(keep) if drop else out


def class_counts(dataset: Dataset, spec: LabelSpec) -> dict[str, int]:
    """Rows per label (positives per label for multi-label); empty for regression."""
    if spec.problem_type == REGRESSION:
        return {}
    if spec.problem_type == MULTI:
        totals = [0] * len(spec.names)
        for row in dataset[LABELS]:
            for i, v in enumerate(row):
                totals[i] += int(v)
        return dict(zip(spec.names, totals, strict=True))
    counts = Counter(dataset[LABELS])
    return {name: counts.get(i, 0) for i, name in enumerate(spec.names)}


def _encode_single(
    values: list[Any], feature: Any, spec: LabelSpec, settings: Settings, split: str
) -> tuple[list[Any], list[int]]:
    to_name = _name_of(feature)
    index = {name: i for i, name in enumerate(spec.names)}
    names = [to_name(v) for v in values]
    unknown = {n for n in names if n is not None and n not in index}
    if unknown and not settings.labels:
        raise DataError(
            f"split '{split}' has label(s) not seen in training: {_preview(unknown)}; "
            "add them to the training data or list the labels to keep in FT_LABELS"
        )
    drop = [i for i, n in enumerate(names) if n in unknown]
    # Rows about to be dropped get a placeholder id; None is reserved for "no label".
    return [None if n is None else index.get(n, 0) for n in names], drop


def _encode_multi(
    values: list[Any], feature: Any, spec: LabelSpec, settings: Settings, split: str
) -> tuple[list[Any], list[int]]:
    to_names = _row_names(feature, settings)
    index = {name: i for i, name in enumerate(spec.names)}
    encoded: list[Any] = []
    unknown: set[str] = set()
    for value in values:
        names = to_names(value)
        if names is None:
            encoded.append(None)
            continue
        row = [0.0] * len(spec.names)
        for name in names:
            if name in index:
                row[index[name]] = 1.0
            else:
                unknown.add(name)
        encoded.append(row)
    if unknown and not settings.labels:
        raise DataError(
            f"split '{split}' has label(s) not seen in training: {_preview(unknown)}; "
            "add them to the training data or list the labels to keep in FT_LABELS"
        )
    return encoded, []


def _infer_problem_type(feature: Any) -> str:
    if isinstance(feature, (List, LargeList, Sequence)):
        return MULTI
    if isinstance(feature, Value) and feature.dtype.startswith("float"):
        return REGRESSION
    return SINGLE


def _inner(feature: Any) -> Any:
    return feature.feature if isinstance(feature, (List, LargeList, Sequence)) else feature


def _name_of(feature: Any) -> Callable[[Any], str | None]:
    """Maps a raw label value to its name; None means missing."""
    if isinstance(feature, ClassLabel):
        return lambda v: feature.names[v] if isinstance(v, int) and 0 <= v < feature.num_classes else None

    def name(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        text = str(value).strip()
        return text or None

    return name


def _row_names(feature: Any, settings: Settings) -> Callable[[Any], list[str] | None]:
    """Maps a multi-label cell (list, or text joined by FT_LABEL_SEPARATOR) to names."""
    to_name = _name_of(_inner(feature))

    def names(value: Any) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            parts = value.split(settings.label_separator)
            return [p.strip() for p in parts if p.strip()]
        return [n for n in (to_name(v) for v in value) if n is not None]

    return names


def _number(value: Any, split: str, column: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"label {value!r} in split '{split}' (column '{column}') is not a number; "
            "regression needs numeric labels (or set FT_PROBLEM_TYPE)"
        ) from None
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise DataError(f"label {value!r} in split '{split}' (column '{column}') is infinite")
    return number


def _sorted_names(names: set[str]) -> list[str]:
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def _preview(names: set[str], limit: int = 5) -> str:
    shown = sorted(names)[:limit]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in shown) + more

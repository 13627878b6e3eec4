"""The rows each seed trains and tests on: one stratified draw per (dataset, seed), written
once as train.jsonl and test.jsonl, so both recipes read the very same rows. JSON lines
rather than csv: whole reviews and newswires carry newlines and quotes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.quality import sources


class SampleError(ValueError):
    """The dataset cannot give the rows asked for."""


@dataclass(frozen=True)
class Draw:
    """Which rows: `train_rows` and `test_rows` of `dataset`, drawn with `seed`."""

    dataset: str
    train_rows: int
    test_rows: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.train_rows}-{self.test_rows}-seed{self.seed}"

    def folder(self, work: Path) -> Path:
        return work / "data" / self.name


def draw(frame: pd.DataFrame, train_rows: int, test_rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Disjoint train and test rows, each with the dataset's class proportions."""
    from sklearn.model_selection import train_test_split

    if train_rows + test_rows > len(frame):
        raise SampleError(f"{train_rows} + {test_rows} rows asked for, the dataset has {len(frame)}")
    classes = frame["label"].nunique()
    if min(train_rows, test_rows) < classes:
        raise SampleError(f"{classes} classes need at least {classes} rows in each of train and test")
    train, test = train_test_split(
        frame, train_size=train_rows, test_size=test_rows, stratify=frame["label"], random_state=seed
    )
    # The job stops on a test label it never saw in training; so would any fair comparison.
    unseen = set(test["label"]) - set(train["label"])
    if unseen:
        raise SampleError(f"test rows of {sorted(unseen)} have no training rows; draw more training rows")
    return train, test


def write(chosen: Draw, assets: Path, work: Path) -> Path:
    """The folder holding this draw's train.jsonl and test.jsonl (reused when present)."""
    folder = chosen.folder(work)
    if (folder / "test.jsonl").is_file():
        return folder
    train, test = draw(sources.load(chosen.dataset, assets), chosen.train_rows, chosen.test_rows, chosen.seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        # Written to a temporary name first: a folder with test.jsonl is a finished draw.
        partial = folder / f"{split}.jsonl.partial"
        rows[["text", "label"]].to_json(partial, orient="records", lines=True, force_ascii=False)
        partial.rename(folder / f"{split}.jsonl")
    return folder


def describe(folder: Path) -> dict[str, object]:
    """Rows and class counts of a written draw, for the results file."""
    found: dict[str, object] = {}
    for split in ("train", "test"):
        labels = pd.read_json(folder / f"{split}.jsonl", lines=True, dtype=False)["label"].astype(str)
        found[split] = {"rows": len(labels), "classes": dict(sorted(labels.value_counts().items()))}
    return found

"""Classify where a model, dataset or output lives, from the value a user set."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from job.errors import ConfigError

Kind = Literal["local", "hub", "s3"]

# Hub ids: `name` or `org/name`, letters, digits, '-', '_' and '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
DATA_SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")


@dataclass(frozen=True)
class Location:
    kind: Kind
    ref: str  # a local path, a Hub repo id, or an s3:// URI

    @property
    def path(self) -> Path:
        return Path(self.ref)

    def __str__(self) -> str:
        return self.ref


def data_format_of(path: Path) -> str | None:
    """csv/json/parquet from a file name, looking through a compression suffix."""
    name = path.name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return DATA_SUFFIXES.get(Path(name).suffix)


def classify(value: str, variable: str, *, what: str) -> Location:
    """Where `value` points: an existing local path, a Hub repo id, or a URI.

    `what` names the thing in errors ("model", "dataset").
    """
    if "://" in value:
        scheme, _, rest = value.partition("://")
        scheme = scheme.lower()
        if scheme == "file":
            return classify(rest, variable, what=what)
        if scheme == "hf":
            repo = rest.removeprefix("datasets/").removeprefix("models/").strip("/")
            if not _HUB_ID.match(repo):
                raise ConfigError(f"{variable}='{value}' is not a valid Hub repo; use hf://org/name")
            return Location("hub", repo)
        if scheme == "s3":
            return Location("s3", value)
        raise ConfigError(
            f"{variable}='{value}' uses the unsupported scheme '{scheme}://'; use a local path, "
            f"a Hub {what} id (org/name) or s3://bucket/prefix"
        )
    path = Path(value).expanduser()
    if path.exists():
        return Location("local", str(path))
    looks_like_path = value.startswith((".", "/", "~")) or data_format_of(path) is not None
    if looks_like_path or not _HUB_ID.match(value):
        raise ConfigError(
            f"{variable}='{value}' does not exist; point it at an existing local {what} "
            f"or use a Hub {what} id (org/name)"
        )
    return Location("hub", value)

"""Where a setting points: parsed once per setting (FT_MODEL, FT_DATASET, FT_OUTPUT, FT_CHECKPOINT_DIR)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from job.errors import ConfigError
from job.settings import Settings

Kind = Literal["local", "hub", "s3"]

# Hub ids: `name` or `org/name`, letters, digits, '-', '_' and '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
DATA_SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")


@dataclass(frozen=True)
class Location:
    kind: Kind
    ref: str  # a local path, a Hub repo id, or an s3:// URI
    variable: str = ""  # the setting it came from, for messages

    @property
    def path(self) -> Path:
        return Path(self.ref)

    @property
    def bucket(self) -> str:
        return self.ref[len("s3://") :].partition("/")[0]

    @property
    def key(self) -> str:
        """The S3 key or prefix, without a leading slash."""
        return self.ref[len("s3://") :].partition("/")[2]

    def __str__(self) -> str:
        return self.ref


def data_format_of(path: Path | str) -> str | None:
    """csv/json/parquet from a file name, looking through a compression suffix."""
    return DATA_SUFFIXES.get(Path(_uncompressed(path)).suffix)


def data_stem(path: Path | str) -> str:
    """A data file's name without its data and compression suffixes: `train.csv.bz2` -> `train`."""
    return Path(_uncompressed(path)).stem


def _uncompressed(path: Path | str) -> str:
    name = Path(path).name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def classify(value: str, variable: str, *, what: str) -> Location:
    """Where an input (`what`: "model", "dataset") points: an existing local path, a Hub repo id, or an S3 URI."""
    if "://" in value:
        scheme, _, rest = value.partition("://")
        scheme = scheme.lower()
        if scheme == "file":
            return classify(rest, variable, what=what)
        if scheme == "hf":
            repo = rest.removeprefix("datasets/").removeprefix("models/").strip("/")
            if not _HUB_ID.match(repo):
                raise ConfigError(f"{variable}='{value}' is not a valid Hub repo; use hf://org/name")
            return Location("hub", repo, variable)
        if scheme == "s3":
            return _s3(value, variable)
        raise ConfigError(
            f"{variable}='{value}' uses the unsupported scheme '{scheme}://'; use a local path, "
            f"a Hub {what} id (org/name) or s3://bucket/prefix"
        )
    path = Path(value).expanduser()
    if path.exists():
        return Location("local", str(path), variable)
    looks_like_path = value.startswith((".", "/", "~")) or data_format_of(path) is not None
    if looks_like_path or not _HUB_ID.match(value):
        raise ConfigError(
            f"{variable}='{value}' does not exist; point it at an existing local {what} "
            f"or use a Hub {what} id (org/name)"
        )
    return Location("hub", value, variable)


def output_location(settings: Settings) -> Location:
    """FT_OUTPUT: a local (or mounted) directory, an S3 prefix, or a Hub model repo."""
    value = settings.output
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme in ("", "file"):
        if sep and not rest.strip():
            raise ConfigError(f"FT_OUTPUT='{value}' names no folder; give a path, e.g. file:///data/runs or /data/runs")
        return Location("local", str(Path(rest if sep else value).expanduser()), "FT_OUTPUT")
    if scheme == "s3":
        return _s3(value, "FT_OUTPUT")
    if scheme == "hf":
        location = classify(value, "FT_OUTPUT", what="model")
        if "/" not in location.ref:
            raise ConfigError(f"FT_OUTPUT='{value}' is not a Hub model repo; use hf://org/name")
        return location
    raise ConfigError(
        f"FT_OUTPUT='{value}' uses the unsupported scheme '{scheme}://'; use a local directory, "
        "s3://bucket/prefix or hf://org/name"
    )


def checkpoint_location(settings: Settings) -> Location:
    """FT_CHECKPOINT_DIR (the folder above the per-run ones): a path or an S3 prefix;
    by default `<FT_CACHE_DIR>/checkpoints`."""
    value = settings.checkpoint_dir
    if not value:
        return Location("local", str(settings.cache_dir / "checkpoints"), "FT_CHECKPOINT_DIR")
    scheme, sep, rest = value.partition("://")
    if sep and scheme.lower() == "s3":
        return _s3(value, "FT_CHECKPOINT_DIR")
    if sep and scheme.lower() != "file":
        raise ConfigError(
            f"FT_CHECKPOINT_DIR='{value}' uses the unsupported scheme '{scheme.lower()}://'; "
            "use a local or shared path, or s3://bucket/prefix"
        )
    if sep and not rest.strip():
        raise ConfigError(f"FT_CHECKPOINT_DIR='{value}' names no folder; give a path, e.g. /data/checkpoints")
    return Location("local", str(Path(rest if sep else value).expanduser()), "FT_CHECKPOINT_DIR")


def _s3(value: str, variable: str) -> Location:
    rest = value[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{variable}='{value}' names no bucket; use s3://bucket/prefix")
    return Location("s3", f"s3://{bucket}/{key}", variable)


# What the cache holds besides checkpoints: scratch that is rebuilt, wiped with the pod, or
# removed when a run is published (runs/<run id>).
CACHE_FOLDERS = ("runs", "prepared", "s3")


def check_apart(settings: Settings) -> None:
    """FT_OUTPUT, FT_CHECKPOINT_DIR and FT_CACHE_DIR (and the per-run folders in them) must
    not coincide or nest: publishing, the checkpoint cleanup and the scratch folder's
    removal would otherwise delete each other's files. ConfigError naming both settings."""
    output, checkpoints = output_location(settings), checkpoint_location(settings)
    cache = Location("local", str(settings.cache_dir.expanduser()), "FT_CACHE_DIR")
    run = settings.run_id
    published = (f"FT_OUTPUT's folder for this run ({_below(output, run)})", _below(output, run))
    saved = (f"FT_CHECKPOINT_DIR's folder for this run ({_below(checkpoints, run)})", _below(checkpoints, run))
    pairs = [
        (saved, published, "the checkpoint cleanup would delete the published model"),
        ((f"FT_OUTPUT ({output.ref})", output), (f"FT_CACHE_DIR ({cache.ref})", cache),
         "the cache is scratch space: it may be wiped, and each run's folder in it is removed"),
        *(
            (saved, (f"the cache's {folder}/ folder ({_below(cache, folder)})", _below(cache, folder)),
             "that folder is the cache's scratch space")
            for folder in CACHE_FOLDERS
        ),
    ]  # fmt: skip
    for (one_label, one), (other_label, other), why in pairs:
        relation = _overlap(one, other)
        if relation:
            raise ConfigError(f"{one_label} {relation} {other_label}: {why}; point them at separate folders")


def _below(location: Location, name: str) -> Location:
    return Location(location.kind, f"{location.ref.rstrip('/')}/{name}", location.variable)


def _parts(location: Location) -> tuple[str, ...]:
    if location.kind == "s3":
        return ("s3:", location.bucket, *(p for p in location.key.split("/") if p))
    return Path(location.ref).expanduser().resolve().parts


def _overlap(one: Location, other: Location) -> str | None:
    """How the two relate when they are the same folder or one holds the other."""
    if "hub" in (one.kind, other.kind):
        return None  # a Hub repo shares no folder with anything
    a, b = _parts(one), _parts(other)
    if a == b:
        return "is the same folder as"
    if a[: len(b)] == b:
        return "is inside"
    if b[: len(a)] == a:
        return "contains"
    return None

"""Faults of the environment and of the input files, wherever the job meets them, turned
into its own errors: one line that names the setting, the location as the user wrote it
(the S3 URI, not the cache path it was mirrored to), what happened and the fix.

- Filesystem faults (no space, quota, permission, read-only, a file where a folder
  should be or the other way round, a missing folder, an I/O error) -> StorageError, 6.
- Unreadable input (bytes that are not UTF-8, csv/json/parquet that does not parse, a
  damaged compressed file) -> DataError, 3.

Libraries report these in many shapes (OSError, shutil.Error, torch's and safetensors'
own errors carrying the OS's words, pandas' and pyarrow's parser errors); `explain` reads
them all, so the command line, the training workers and the data loader share one mapping.
"""

from __future__ import annotations

import bz2
import errno as errnos
import gzip
import lzma
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from job.errors import FILESYSTEM_FAULTS, DataError, JobError, filesystem_error
from job.settings import Settings
from job.storage import checkpoint_location, classify, data_format_of, output_location

# How libraries that raise no OSError word the same faults.
_OS_WORDS = {
    "no space left on device": errnos.ENOSPC,
    "storagefull": errnos.ENOSPC,
    "disk quota exceeded": errnos.EDQUOT,
    "read-only file system": errnos.EROFS,
    "permission denied": errnos.EACCES,
    "operation not permitted": errnos.EPERM,
    "not a directory": errnos.ENOTDIR,
    "is a directory": errnos.EISDIR,
}
_LOW_SPACE = 4 * 1024 * 1024  # bytes free below which a failed write is taken for a full disk
# An absolute path inside a message: two components at least ("I/O" is none).
_PATH = re.compile(r"(/[^\s'\":,;()\[\]/]+(?:/[^\s'\":,;()\[\]/]+)+)")
# Parser errors of pandas (csv), pyarrow (json, parquet), the json module and the
# decompressors, by class name: this module need not import those libraries.
_PARSE_ERRORS = frozenset(
    {"ParserError", "EmptyDataError", "ArrowInvalid", "ArrowTypeError", "JSONDecodeError", "BadGzipFile", "EOFError"}
)


@dataclass(frozen=True)
class Place:
    variable: str  # the setting to change
    shown: str  # its location as the user wrote it


def explain(exc: BaseException, settings: Settings) -> JobError | None:
    """The job's error for an exception its code did not expect; None when it is no known
    fault of the environment or the input (a bug: the caller reports a crash)."""
    if isinstance(exc, JobError):
        return exc
    decoding = _decoding(exc, settings)
    if decoding is not None:
        return decoding
    code, path = _os_fault(exc)
    if code in (None, errnos.ENOSPC, errnos.EDQUOT) and path is None:
        full = _full_disk(settings)  # the message did not say where: the disk that is full
        if full is not None:
            code, path = errnos.ENOSPC, full
    if code is None:
        return None
    place = where(path, settings) if path else Place("FT_CACHE_DIR", str(settings.cache_dir))
    return filesystem_error(place.variable, place.shown, code, path=shown_path(path, settings) if path else None)


def where(path: str, settings: Settings) -> Place:
    """The setting a local path belongs to: the deepest location setting that holds it."""
    resolved = Path(path).expanduser().resolve()
    candidates = [(settings.cache_dir, Place("FT_CACHE_DIR", str(settings.cache_dir)))]
    for location in (output_location(settings), checkpoint_location(settings)):
        if location.kind == "local":
            candidates.append((Path(location.ref), Place(location.variable, location.ref)))
    for value, variable, what in ((settings.dataset, "FT_DATASET", "dataset"), (settings.model, "FT_MODEL", "model")):
        try:
            location = classify(value, variable, what=what)
        except JobError:
            continue
        if location.kind == "local":
            candidates.append((Path(location.ref), Place(variable, location.ref)))
    if os.environ.get("HF_HOME"):
        candidates.append((Path(os.environ["HF_HOME"]), Place("HF_HOME", os.environ["HF_HOME"])))
    holding = [
        (len(root.parts), place)
        for folder, place in candidates
        if (root := folder.expanduser().resolve()) == resolved or root in resolved.parents
    ]
    return max(holding, key=lambda item: item[0])[1] if holding else Place("the path", str(path))


def shown_path(path: str, settings: Settings) -> str:
    """A local path as the user knows it: a file of an S3 input's mirror as its S3 URI."""
    mirror = (settings.cache_dir / "s3").expanduser().resolve()
    resolved = Path(path).expanduser().resolve()
    if mirror in resolved.parents:
        return "s3://" + resolved.relative_to(mirror).as_posix()
    return str(path)


def shown_text(text: str, settings: Settings) -> str:
    """Every path inside a library's message shown as the user knows it."""
    return _PATH.sub(lambda match: shown_path(match.group(1), settings), text)


def _os_fault(exc: BaseException) -> tuple[int | None, str | None]:
    """The errno and the path of a filesystem fault, from whichever error in the chain says them."""
    for error in chain(exc):
        if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
            for _source, destination, why in error.args[0]:  # copytree collects one per file
                code = _code_in(str(why))
                if code is not None:
                    return code, destination
        if isinstance(error, OSError) and error.errno in FILESYSTEM_FAULTS:
            return error.errno, error.filename2 or error.filename
        code = _code_in(str(error))
        if code is not None:
            found = _PATH.search(str(error))
            return code, found.group(1) if found else None
    return None, None


def _code_in(text: str) -> int | None:
    lowered = text.lower()
    return next((code for words, code in _OS_WORDS.items() if words in lowered), None)


def _full_disk(settings: Settings) -> str | None:
    """A local location the job writes to whose disk is (all but) full: torch's checkpoint
    writer, for one, fails with 'file write failed' and no cause."""
    places = [settings.cache_dir]
    places += [
        Path(loc.ref) for loc in (output_location(settings), checkpoint_location(settings)) if loc.kind == "local"
    ]
    for place in places:
        probe = place.expanduser()
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            stats = os.statvfs(probe)
        except OSError:
            continue
        if stats.f_bavail * stats.f_frsize < _LOW_SPACE:
            return str(place)
    return None


def _decoding(exc: BaseException, settings: Settings) -> DataError | None:
    """Bytes that are not text, or a file that does not parse, in any supported format."""
    causes = chain(exc)
    decode = next((e for e in causes if isinstance(e, UnicodeDecodeError)), None)
    if decode is not None:
        found = first_invalid_utf8(settings)
        if found is not None:
            file, line = found
            return DataError(
                f"FT_DATASET={settings.dataset}{file} is not UTF-8 text (line {line}: {decode.reason}); "
                "re-encode the file as UTF-8"
            )
        return DataError(
            f"FT_DATASET={settings.dataset} is not UTF-8 text ({decode.reason} at byte {decode.start}); "
            "re-encode the files as UTF-8"
        )
    parsing = next((e for e in causes if type(e).__name__ in _PARSE_ERRORS), None)
    if parsing is None:
        return None
    detail = shown_text((str(parsing).strip().splitlines() or [type(parsing).__name__])[0][:300], settings)
    return unparseable(settings) or DataError(
        f"FT_DATASET={settings.dataset}: a data file does not parse ({detail}); fix or replace it, or set "
        "FT_DATA_FORMAT when a file's name gives the wrong format"
    )


def unparseable(settings: Settings) -> DataError | None:
    """The error naming the first data file that is empty, damaged or does not parse, read
    again on its own: whatever a loader said, this says which file and why."""
    found = first_unparseable(settings)
    if found is None:
        return None
    file, why = found
    return DataError(
        f"FT_DATASET={settings.dataset}{file} does not parse ({why}); fix or replace the file, or set "
        "FT_DATA_FORMAT when its name gives the wrong format"
    )


def first_invalid_utf8(settings: Settings) -> tuple[str, int] | None:
    """The first text data file of FT_DATASET (or of its S3 mirror) that is not UTF-8, and the line."""
    for file in _data_files(settings):
        if data_format_of(file) == "parquet":
            continue  # binary: parquet checks its own strings
        line = _first_bad_line(file, lambda raw: raw.decode("utf-8"))
        if line is not None:
            return _named(file, settings), line
    return None


def first_unparseable(settings: Settings) -> tuple[str, str] | None:
    """The first data file that is empty, damaged (a truncated download) or does not parse
    as its format, read again on its own, and what its reader says."""
    for file in _data_files(settings):
        why = _why_unreadable(file, settings.data_format if settings.data_format != "auto" else data_format_of(file))
        if why is not None:
            return _named(file, settings), shown_text(why, settings)
    return None


def _named(file: Path, settings: Settings) -> str:
    """How a data file follows `FT_DATASET=<value>` in a message: nothing when it is the file
    FT_DATASET names, else `: ` and its path in the dataset (its S3 URI for a mirror)."""
    shown = shown_path(str(file), settings)
    if shown.rstrip("/") == settings.dataset.rstrip("/") or str(file) == str(Path(settings.dataset).expanduser()):
        return ""
    root = Path(settings.dataset).expanduser()
    if not shown.startswith("s3://") and root.is_dir() and root.resolve() in file.resolve().parents:
        shown = file.resolve().relative_to(root.resolve()).as_posix()
    return f": {shown}"


def _why_unreadable(path: Path, fmt: str | None) -> str | None:
    if path.stat().st_size == 0:
        return "the file is empty"
    if _opener(path) is not _plain and _first_bad_line(path, lambda raw: raw) is not None:
        return "the compressed file is damaged or cut short"
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.read_table(path)
        elif fmt == "csv":
            import pandas as pd

            pd.read_csv(path)
        elif fmt == "json":
            import pandas as pd

            pd.read_json(path, lines=".jsonl" in path.name.lower())
    except Exception as exc:  # whatever the reader raises is the reason
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return None


def _data_files(settings: Settings) -> list[Path]:
    try:
        location = classify(settings.dataset, "FT_DATASET", what="dataset")
    except JobError:
        return []
    if location.kind == "s3":  # what the loader read: the mirror, already fetched
        root = (settings.cache_dir / "s3" / location.bucket / location.key).expanduser()
    elif location.kind == "local":
        root = location.path
    else:
        return []
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and data_format_of(p)) if root.is_dir() else []


def _first_bad_line(path: Path, check: Callable[[bytes], object]) -> int | None:
    """The number of the first line `check` rejects (or the line a damaged file ends at)."""
    number = 0
    try:
        with _opener(path)(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    check(raw)
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError, lzma.LZMAError):
        return number + 1
    return None


def _plain(path: Path) -> IO[bytes]:
    return path.open("rb")


def _opener(path: Path) -> Callable[[Path], IO[bytes]]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return lambda p: gzip.open(p, "rb")  # type: ignore[return-value]
    if name.endswith(".bz2"):
        return lambda p: bz2.open(p, "rb")  # type: ignore[return-value]
    if name.endswith(".xz"):
        return lambda p: lzma.open(p, "rb")  # type: ignore[return-value]
    return _plain


def chain(exc: BaseException) -> list[BaseException]:
    """The exception and what raised it, outermost first."""
    chain = [exc]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and nxt not in chain:
        chain.append(nxt)
    return chain

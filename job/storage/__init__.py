"""The storage seam: the only code that reads from or writes to S3 and the Hub, and the
only place that turns a location setting into something to read or write.

- `locations`: what FT_MODEL, FT_DATASET, FT_OUTPUT and FT_CHECKPOINT_DIR point at.
- `open_folder`: a durable folder (local or mounted directory, S3 prefix) behind one
  interface (`folder.Folder`): list, read, write and create-if-absent small objects,
  put a whole tree, get objects, delete.
- `open_output`: publishing a run to FT_OUTPUT (a folder, or a Hub model repo).
- `fetch`: an S3 dataset or model mirrored into the local cache (Hub inputs are read
  by transformers/datasets themselves).
"""

from __future__ import annotations

from pathlib import Path

from job.settings import Settings
from job.storage.folder import COMPLETE, Entry, Folder, mirror, read_json, write_json
from job.storage.locations import (
    Location,
    check_apart,
    checkpoint_location,
    classify,
    data_format_of,
    data_stem,
    output_location,
)
from job.storage.outputs import LATEST, Output, completion_manifest

__all__ = [
    "COMPLETE",
    "LATEST",
    "Entry",
    "Folder",
    "Location",
    "Output",
    "check_apart",
    "check_cache",
    "checkpoint_location",
    "classify",
    "completion_manifest",
    "data_format_of",
    "data_stem",
    "fetch",
    "mirror",
    "open_folder",
    "open_output",
    "output_location",
    "read_json",
    "write_json",
]


def open_folder(location: Location, settings: Settings) -> Folder:
    """A local or S3 location as a durable folder (the Hub is not one: see `open_output`)."""
    if location.kind == "s3":
        from job.storage.s3_folder import S3Folder

        return S3Folder(location.ref, settings, location.variable)
    from job.storage.local import LocalFolder

    return LocalFolder(location.path, location.variable)


def check_cache(settings: Settings) -> None:
    """FT_CACHE_DIR, which every command writes first (downloads, prepared data, the run's
    scratch folder): a fault there is named as FT_CACHE_DIR's, not as a setting below it."""
    from job.storage.local import ensure_writable_dir

    ensure_writable_dir(settings.cache_dir.expanduser(), "FT_CACHE_DIR")


def open_output(settings: Settings) -> Output:
    location = output_location(settings)
    if location.kind == "hub":
        from job.storage.hub import HubOutput

        return HubOutput(location, settings)
    from job.storage.outputs import FolderOutput

    return FolderOutput(open_folder(location, settings), settings.run_id, probe_run=location.kind == "s3")


def fetch(location: Location, settings: Settings, *, data_only: bool) -> Path:
    """A local path holding what `location` points at, downloading it if it is remote."""
    if location.kind != "s3":
        return location.path
    from job.storage.inputs import fetch as fetch_s3

    return fetch_s3(location, settings, data_only=data_only)

"""The storage seam: the only code that reads from or writes to S3 and the Hub.

Inputs: `fetch` turns an s3:// dataset or model location into a local path (Hub
inputs are read by transformers/datasets themselves). Outputs: `open_output` picks
the backend for FT_OUTPUT; every backend publishes a verified staging folder and
writes the completion manifest (`_COMPLETE.json`: every file, size, sha256) last.
"""

from __future__ import annotations

from pathlib import Path

from job.errors import ConfigError
from job.locations import Location
from job.settings import Settings
from job.storage.base import COMPLETE, Output, completion_manifest

__all__ = ["COMPLETE", "Output", "completion_manifest", "fetch", "open_output"]


def open_output(settings: Settings) -> Output:
    value = settings.output
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme in ("", "file"):
        from job.storage.local import LocalOutput

        return LocalOutput(Path(rest if sep else value).expanduser(), settings.run_id)
    if scheme == "s3":
        from job.storage.s3 import S3Output

        return S3Output(value, settings)
    if scheme == "hf":
        from job.storage.hub import HubOutput

        return HubOutput(value, settings)
    raise ConfigError(
        f"FT_OUTPUT='{value}' uses the unsupported scheme '{scheme}://'; use a local directory, "
        "s3://bucket/prefix or hf://org/name"
    )


def fetch(location: Location, settings: Settings, *, variable: str, data_only: bool) -> Path:
    """A local path holding what `location` points at, downloading it if it is remote.

    `data_only` keeps csv/json/jsonl/parquet objects (datasets); otherwise every
    object under the prefix is fetched (a saved model folder).
    """
    if location.kind != "s3":
        return location.path
    from job.storage.s3 import download

    return download(location.ref, settings, variable=variable, data_only=data_only)

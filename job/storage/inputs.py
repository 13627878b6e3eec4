"""Inputs in S3 (a dataset, a saved model) mirrored into the local cache, once per node."""

from __future__ import annotations

import time
from pathlib import Path

from job.errors import StorageError
from job.logs import get_logger
from job.settings import Settings
from job.storage.folder import mirror
from job.storage.locations import Location, data_format_of
from job.storage.s3_client import MIB
from job.storage.s3_folder import S3Folder, safe_join

log = get_logger("job.storage.inputs")


def fetch(location: Location, settings: Settings, *, data_only: bool) -> Path:
    """A local path holding what the S3 `location` points at.

    `data_only` keeps csv/json/jsonl/parquet objects (datasets); otherwise every object
    under the prefix is fetched (a saved model folder). An S3 location may name one
    object or a prefix; objects already mirrored with the same ETag are not fetched again.
    """
    where = f"{location.variable}={location.ref}"
    key = location.key.rstrip("/")
    parent, _, leaf = key.rpartition("/")
    # Errors name the location as the user wrote it.
    above = S3Folder(f"s3://{location.bucket}/{parent}", settings, location.variable, shown_as=location.ref)
    above.check_bucket()
    listed = above.list(prefix=leaf) if leaf else above.list()
    single = leaf in listed and not location.key.endswith("/")
    if single:
        mirror_of, objects = above, {leaf: listed[leaf]}
    else:
        mirror_of = S3Folder(f"s3://{location.bucket}/{key}", settings, location.variable, shown_as=location.ref)
        inside = f"{leaf}/" if leaf else ""
        objects = {n[len(inside) :]: e for n, e in listed.items() if n.startswith(inside)}
    folders = {n.rpartition("/")[0] for n in objects}
    clash = sorted(n for n in objects if n in folders or any(f.startswith(f"{n}/") for f in folders))
    if clash:
        other = next(o for o in objects if o.startswith(f"{clash[0]}/"))
        raise StorageError(
            f"{where}: objects '{clash[0]}' and '{other}' clash: a key that is also a folder of other keys cannot be "
            "mirrored to files; rename or remove one of them"
        )
    if data_only:
        objects = {n: e for n, e in objects.items() if data_format_of(n)}
    if not objects:
        what = "csv, json, jsonl or parquet objects" if data_only else "objects"
        raise StorageError(f"{where}: no {what} under this prefix; check the location and the upload")

    cache_root = (settings.cache_dir / "s3" / location.bucket).resolve()
    base = parent if single else key
    target = safe_join(cache_root, base, where) if base else cache_root
    started = time.monotonic()
    # A prefix's mirror is exact: an object deleted from the prefix is not read from the cache.
    fetched, size = mirror(mirror_of, objects, target, exact=not single)
    seconds = time.monotonic() - started
    log.info(
        "s3.downloaded",
        location=location.ref,
        objects=len(objects),
        downloaded=fetched,
        reused=len(objects) - fetched,
        mib=round(size / MIB, 2),
        mib_per_second=round(size / MIB / seconds, 1) if fetched and seconds else None,
    )
    return safe_join(target, leaf, where) if single else target

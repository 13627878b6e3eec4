"""S3 and S3-compatible stores, through boto3 and its transfer manager.

Credentials come only from the standard AWS chain. Every request retries on
throttling, 5xx answers, dropped connections and timeouts (botocore's adaptive
mode); whole files are retried once more on top. Errors become one StorageError
line naming the location and the fix.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from job.errors import ConfigError, StorageError
from job.files import file_listing
from job.locations import data_format_of
from job.logs import get_logger
from job.settings import Settings
from job.storage.base import COMPLETE, LATEST, completion_manifest

MIB = 1024 * 1024
_FILE_ATTEMPTS = 3
_MIRROR_INDEX = ".ftjob-s3-index.json"  # what a local mirror holds: key -> etag, size

log = get_logger("job.storage.s3")


def parse_uri(uri: str, variable: str) -> tuple[str, str]:
    rest = uri[len("s3://") :] if uri.lower().startswith("s3://") else uri
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{variable}='{uri}' names no bucket; use s3://bucket/prefix")
    return bucket, key


def client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": settings.s3_max_attempts, "mode": "adaptive"},
        s3={"addressing_style": settings.s3_addressing_style},
        connect_timeout=settings.s3_timeout,
        read_timeout=settings.s3_timeout,
        max_pool_connections=max(10, settings.s3_max_concurrency),
    )
    # endpoint_url=None lets boto3 honour AWS_ENDPOINT_URL(_S3) itself.
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=config
    )


def _transfer_config(settings: Settings) -> Any:
    from boto3.s3.transfer import TransferConfig

    chunk = settings.s3_multipart_chunk_mb * MIB
    return TransferConfig(
        multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=settings.s3_max_concurrency
    )


@contextlib.contextmanager
def translated(variable: str, location: str, *, writing: bool) -> Iterator[None]:
    """botocore/s3transfer exceptions -> one StorageError line with the fix."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise StorageError(
            f"{variable}={location}: no AWS credentials found; provide them through the standard AWS chain "
            "(AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity/IRSA, or an instance role)"
        ) from None
    except ConnectionError as exc:
        raise StorageError(
            f"{variable}={location}: cannot reach the S3 endpoint ({_short(exc)}); check FT_S3_ENDPOINT_URL / "
            "AWS_ENDPOINT_URL and the network"
        ) from None
    except ClientError as exc:
        raise StorageError(_client_error(exc, variable, location, writing=writing)) from None
    except S3UploadFailedError as exc:
        raise StorageError(
            f"{variable}={location}: upload failed after retries ({_short(exc)}); the run is kept locally — "
            "re-run with the same FT_RUN_ID to publish it"
        ) from None
    except BotoCoreError as exc:
        raise StorageError(f"{variable}={location}: S3 request failed ({_short(exc)})") from None


def _client_error(exc: Any, variable: str, location: str, *, writing: bool) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    bucket = parse_uri(location, variable)[0]
    if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and exc.operation_name == "HeadBucket"):
        return f"{variable}={location}: bucket '{bucket}' does not exist; create it or fix {variable}"
    if code in ("AccessDenied", "403", "AllAccessDisabled", "Forbidden") or status == 403:
        need = "s3:PutObject, s3:DeleteObject and s3:ListBucket" if writing else "s3:ListBucket and s3:GetObject"
        return f"{variable}={location}: access denied; grant this identity {need} on it"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
        return f"{variable}={location}: the AWS credentials were rejected ({code}); check or refresh them"
    return f"{variable}={location}: S3 answered {code or status}: {error.get('Message', '')}".rstrip(": ")


def _short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _list(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


# --- inputs -------------------------------------------------------------------------


def download(uri: str, settings: Settings, *, variable: str, data_only: bool) -> Path:
    """Mirror an object or a prefix into the cache (once per node) and return the local path.

    Objects already mirrored with the same ETag are not downloaded again.
    """
    from boto3.s3.transfer import create_transfer_manager

    bucket, key = parse_uri(uri, variable)
    s3 = client(settings)
    with translated(variable, uri, writing=False):
        s3.head_bucket(Bucket=bucket)
        listed = list(_list(s3, bucket, key))
    single = [o for o in listed if o["Key"] == key and not key.endswith("/")]
    if single:
        base, objects = key.rpartition("/")[0], single
    else:
        base = key.rstrip("/")
        objects = [o for o in listed if o["Key"].startswith(f"{base}/" if base else "") and not o["Key"].endswith("/")]
    if data_only:
        objects = [o for o in objects if data_format_of(PurePosixPath(o["Key"]))]
    if not objects:
        what = "csv, json, jsonl or parquet objects" if data_only else "objects"
        raise StorageError(f"{variable}={uri}: no {what} under this prefix; check the location and the upload")

    cache_root = (settings.cache_dir / "s3" / bucket).resolve()
    mirror = _safe_join(cache_root, base, f"{variable}={uri}") if base else cache_root
    mirror.mkdir(parents=True, exist_ok=True)
    index_path = mirror / _MIRROR_INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    todo = []
    for obj in objects:
        relative = obj["Key"][len(base) :].lstrip("/") if base else obj["Key"]
        local = _safe_join(mirror, relative, f"{variable}={uri}")
        if local.is_file() and index.get(obj["Key"]) == [obj["ETag"], obj["Size"]]:
            continue
        todo.append((obj, local))

    started, size = time.monotonic(), sum(o["Size"] for o, _ in todo)
    with translated(variable, uri, writing=False), create_transfer_manager(s3, _transfer_config(settings)) as manager:
        futures = []
        for obj, local in todo:
            local.parent.mkdir(parents=True, exist_ok=True)
            futures.append((obj, local, manager.download(bucket, obj["Key"], str(local) + ".part")))
        for obj, local, future in futures:
            future.result()
            Path(str(local) + ".part").replace(local)
            index[obj["Key"]] = [obj["ETag"], obj["Size"]]
    index_path.write_text(json.dumps(index, indent=1))
    seconds = time.monotonic() - started
    log.info(
        "s3.downloaded",
        location=uri,
        objects=len(objects),
        downloaded=len(todo),
        reused=len(objects) - len(todo),
        mib=round(size / MIB, 2),
        mib_per_second=round(size / MIB / seconds, 1) if todo and seconds else None,
    )
    if single:
        return _safe_join(mirror, key.rpartition("/")[2], f"{variable}={uri}")
    return mirror


def _safe_join(root: Path, relative: str, where: str) -> Path:
    """root/relative, refusing keys that would land outside root (`..`, absolute)."""
    parts = PurePosixPath(relative).parts
    target = root.joinpath(*parts).resolve()
    if relative.startswith("/") or ".." in parts or not target.is_relative_to(root.resolve()):
        raise StorageError(
            f"{where}: object key '{relative}' would escape the local cache directory; refusing to download it — "
            "remove or rename that object"
        )
    return target


# --- outputs ------------------------------------------------------------------------


def check_writable(uri: str, settings: Settings, *, variable: str) -> None:
    """Write and delete a probe object under `uri`: fails now, not after hours of training.

    Nothing stays behind, except in a versioned bucket, which keeps the deleted probe as
    a noncurrent version (lifecycle rules expire those).
    """
    bucket, prefix = parse_uri(uri, variable)
    probe = f"{prefix.rstrip('/')}/.ftjob-write-check" if prefix.strip("/") else ".ftjob-write-check"
    s3 = client(settings)
    with translated(variable, uri, writing=True):
        s3.head_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=probe, Body=b"")
        s3.delete_object(Bucket=bucket, Key=probe)


class S3Output:
    """Publishes to s3://bucket/prefix/<run id>/, completion manifest last."""

    def __init__(self, uri: str, settings: Settings) -> None:
        self.settings = settings
        self.bucket, prefix = parse_uri(uri, "FT_OUTPUT")
        self.root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.prefix = f"{prefix.strip('/')}/{settings.run_id}/" if prefix.strip("/") else f"{settings.run_id}/"
        self.location = f"s3://{self.bucket}/{self.prefix}"
        self.model_ref = self.location
        self._s3: Any = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = client(self.settings)
        return self._s3

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        return translated("FT_OUTPUT", self.location, writing=True)

    def check_writable(self, *, dry_run: bool = False) -> None:
        check_writable(self.location, self.settings, variable="FT_OUTPUT")  # its probe is deleted either way

    def is_complete(self) -> bool:
        from botocore.exceptions import ClientError

        with self._translated():
            try:
                self.s3.head_object(Bucket=self.bucket, Key=self.prefix + COMPLETE)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    def publish(self, staging: Path, *, message: str) -> str:
        mark = time.monotonic()
        files = file_listing(staging)  # sizes and sha256: most of the manifest's cost
        hashing = time.monotonic() - mark
        with self._translated():
            mark = time.monotonic()
            upload_files(self.s3, self.settings, staging, files, bucket=self.bucket, prefix=self.prefix)
            uploading = time.monotonic() - mark
            uploaded = {o["Key"]: o["Size"] for o in _list(self.s3, self.bucket, self.prefix)}
            missing = [f["path"] for f in files if uploaded.get(self.prefix + f["path"]) != f["size"]]
            if missing:
                raise StorageError(
                    f"FT_OUTPUT={self.location}: {len(missing)} object(s) missing or truncated after upload "
                    f"({', '.join(missing[:3])}); re-run with the same FT_RUN_ID"
                )
            # A re-run of this run id may have left objects the new run does not have.
            expected = {self.prefix + f["path"] for f in files}
            stale = [k for k in uploaded if k not in expected and k != self.prefix + COMPLETE]
            _delete_keys(self.s3, self.bucket, stale)
            mark = time.monotonic()
            body = json.dumps(completion_manifest(files, message=message), indent=2).encode()
            self.s3.put_object(
                Bucket=self.bucket, Key=self.prefix + COMPLETE, Body=body, ContentType="application/json"
            )
            writing_manifest = time.monotonic() - mark
        size = sum(f["size"] for f in files)
        log.info(
            "s3.published",
            location=self.location,
            files=len(files),
            mib=round(size / MIB, 2),
            upload_seconds=round(uploading, 2),
            mib_per_second=round(size / MIB / uploading, 1) if uploading else None,
            manifest_seconds=round(hashing + writing_manifest, 3),
            stale_removed=len(stale),
        )
        return self.location

    def read_latest(self) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with self._translated():
            try:
                body = self.s3.get_object(Bucket=self.bucket, Key=self.root + LATEST)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return json.loads(body)

    def write_latest(self, pointer: dict[str, Any]) -> None:
        with self._translated():  # one PUT: readers see the old pointer or the new one
            self.s3.put_object(
                Bucket=self.bucket,
                Key=self.root + LATEST,
                Body=json.dumps(pointer, indent=2).encode(),
                ContentType="application/json",
            )


def upload_files(
    s3: Any, settings: Settings, folder: Path, files: list[dict[str, Any]], *, bucket: str, prefix: str
) -> None:
    """Upload `files` (paths relative to `folder`) under `prefix`, in parallel, in parts above
    the chunk size; whole files are retried on top of botocore's per-request retries."""
    from boto3.s3.transfer import create_transfer_manager

    pending = list(files)
    for attempt in range(1, _FILE_ATTEMPTS + 1):
        failed = []
        with create_transfer_manager(s3, _transfer_config(settings)) as manager:
            futures = [
                (
                    f,
                    manager.upload(
                        str(folder / f["path"]),
                        bucket,
                        prefix + f["path"],
                        extra_args={"ContentType": mimetypes.guess_type(f["path"])[0] or "application/octet-stream"},
                    ),
                )
                for f in pending
            ]
            for f, future in futures:
                try:
                    future.result()
                except Exception as exc:
                    if attempt == _FILE_ATTEMPTS or not _transient(exc):
                        raise
                    failed.append(f)
        if not failed:
            return
        log.warning("s3.upload_retry", files=[f["path"] for f in failed], attempt=attempt)
        time.sleep(2**attempt)
        pending = failed


# --- checkpoints --------------------------------------------------------------------


def pull_checkpoints(uri: str, local: Path, settings: Settings, *, marker: str) -> None:
    """Fetch every complete checkpoint under `uri` (those with a marker) into `local`."""
    bucket, prefix = parse_uri(uri, "FT_CHECKPOINT_DIR")
    s3 = client(settings)
    with translated("FT_CHECKPOINT_DIR", uri, writing=False):
        s3.head_bucket(Bucket=bucket)
        listed = list(_list(s3, bucket, prefix))
    done = {o["Key"][len(prefix) :].split("/")[0] for o in listed if o["Key"].endswith(f"/{marker}")}
    if not done:
        return
    wanted = [o for o in listed if o["Key"][len(prefix) :].split("/")[0] in done]
    started = time.monotonic()
    with translated("FT_CHECKPOINT_DIR", uri, writing=False):
        for obj in wanted:
            target = _safe_join(local, obj["Key"][len(prefix) :], f"FT_CHECKPOINT_DIR={uri}")
            if target.is_file() and target.stat().st_size == obj["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target) + ".part", Config=_transfer_config(settings))
            Path(str(target) + ".part").replace(target)
    seconds = round(time.monotonic() - started, 2)
    log.info("checkpoint.downloaded", location=uri, checkpoints=sorted(done), seconds=seconds)


def push_checkpoints(local: Path, uri: str, settings: Settings, *, marker: str, names: Any) -> None:
    """Mirror local complete checkpoints to `uri`: new ones up (marker last), rotated ones removed."""
    bucket, prefix = parse_uri(uri, "FT_CHECKPOINT_DIR")
    s3 = client(settings)
    with translated("FT_CHECKPOINT_DIR", uri, writing=True):
        remote = {o["Key"][len(prefix) :] for o in _list(s3, bucket, prefix)}
        remote_done = {k.split("/")[0] for k in remote if k.endswith(f"/{marker}")}
        present = {p.name for p in local.iterdir() if names.match(p.name)} if local.is_dir() else set()
        for name in sorted(present - remote_done):
            folder = local / name
            if not (folder / marker).is_file():
                continue  # still being written
            files = [f for f in file_listing(folder) if f["path"] != marker]
            started = time.monotonic()
            upload_files(s3, settings, folder, files, bucket=bucket, prefix=f"{prefix}{name}/")
            s3.upload_file(str(folder / marker), bucket, f"{prefix}{name}/{marker}")
            log.info(
                "checkpoint.uploaded",
                location=f"s3://{bucket}/{prefix}{name}/",
                mib=round(sum(f["size"] for f in files) / MIB, 2),
                seconds=round(time.monotonic() - started, 2),
            )
        gone = [k for k in remote if k.split("/")[0] not in present and names.match(k.split("/")[0])]
        # Marker first, so a half-deleted checkpoint is never taken for a complete one.
        gone.sort(key=lambda k: not k.endswith(f"/{marker}"))
        for key in gone:
            s3.delete_object(Bucket=bucket, Key=prefix + key)


def read_object(uri: str, settings: Settings, *, variable: str) -> bytes | None:
    """The content of one small object; None when there is none."""
    from botocore.exceptions import ClientError

    bucket, key = parse_uri(uri, variable)
    with translated(variable, uri, writing=False):
        try:
            return client(settings).get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise


def write_object(uri: str, body: bytes, settings: Settings, *, variable: str, content_type: str) -> None:
    """One PUT: readers see the previous content or the new one."""
    bucket, key = parse_uri(uri, variable)
    with translated(variable, uri, writing=True):
        client(settings).put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def delete_prefix(uri: str, settings: Settings, *, variable: str) -> None:
    bucket, prefix = parse_uri(uri, variable)
    s3 = client(settings)
    with translated(variable, uri, writing=True):
        _delete_keys(s3, bucket, [o["Key"] for o in _list(s3, bucket, prefix)])


def _delete_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):  # the most one DeleteObjects request takes
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})


def _transient(exc: BaseException) -> bool:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError

    if isinstance(exc, ConnectionError | S3UploadFailedError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in ("SlowDown", "RequestTimeout")
    return False

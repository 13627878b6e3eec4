"""A durable folder under an S3 prefix (or any S3-compatible store), through boto3's transfer manager."""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from job.errors import StorageError
from job.logs import get_logger
from job.settings import Settings
from job.storage import s3_client
from job.storage.folder import COMPLETE, Entry
from job.storage.s3_client import NOT_FOUND, translated

_FILE_ATTEMPTS = 3
_PROBE = ".ftjob-write-check"

log = get_logger("job.storage.s3")


class S3Folder:
    """Objects under s3://bucket/prefix/; `uri` is kept as the user wrote it, for messages."""

    def __init__(
        self, uri: str, settings: Settings, variable: str, *, shown_as: str | None = None, client: Any = None
    ) -> None:
        self.settings = settings
        self.variable = variable
        rest = uri[len("s3://") :]
        self.bucket, _, key = rest.partition("/")
        self.prefix = f"{key.strip('/')}/" if key.strip("/") else ""
        self.location = shown_as or uri
        self._s3 = client

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = s3_client.client(self.settings)
        return self._s3

    def _translated(self, *, writing: bool) -> Any:
        return translated(self.variable, self.location, writing=writing)

    def child(self, *parts: str) -> S3Folder:
        uri = f"s3://{self.bucket}/{self.prefix}{'/'.join(parts)}/"
        return S3Folder(uri, self.settings, self.variable, client=self._s3)

    def list(self, prefix: str = "") -> dict[str, Entry]:
        with self._translated(writing=False):
            return {
                o["Key"][len(self.prefix) :]: Entry(int(o["Size"]), str(o.get("ETag", "")))
                for o in s3_client.list_objects(self.s3, self.bucket, self.prefix + prefix)
                if not o["Key"].endswith("/")  # "folder" marker objects some tools create
            }

    def check_bucket(self) -> None:
        with self._translated(writing=False):
            self.s3.head_bucket(Bucket=self.bucket)

    def read(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        with self._translated(writing=False):
            try:
                return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
            except ClientError as exc:
                if s3_client.error_code(exc) in NOT_FOUND:
                    return None
                raise

    def write(self, name: str, body: bytes) -> None:
        with self._translated(writing=True):  # one PUT: readers see the old object or the new one
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=body, ContentType=_content_type(name))

    def create(self, name: str, body: bytes) -> bool:
        from botocore.exceptions import ClientError

        with self._translated(writing=True):
            try:
                self.s3.put_object(
                    Bucket=self.bucket,
                    Key=self.prefix + name,
                    Body=body,
                    ContentType=_content_type(name),
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                # 412: it exists; 409: another conditional write of it is under way.
                if s3_client.error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise
        return True

    def read_tagged(self, name: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        with self._translated(writing=False):
            try:
                answer = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)
            except ClientError as exc:
                if s3_client.error_code(exc) in NOT_FOUND:
                    return None
                raise
            return answer["Body"].read(), str(answer["ETag"])

    def swap(self, name: str, body: bytes, *, tag: str) -> bool:
        from botocore.exceptions import ClientError

        with self._translated(writing=True):
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=self.prefix + name, Body=body, ContentType=_content_type(name), IfMatch=tag
                )
            except ClientError as exc:
                if s3_client.error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", *NOT_FOUND):
                    return False
                raise
        return True

    def put_tree(self, source: Path, names: list[str]) -> None:
        sizes = {name: (source / name).stat().st_size for name in names}
        if self.read(COMPLETE) is not None:
            raise StorageError(
                f"{self.variable}={self.location}: a completed run is already there; it is never replaced — "
                "publish under a new FT_RUN_ID"
            )
        with self._translated(writing=True):
            self._upload(source, names)
            arrived = self.list()
            missing = [n for n in names if n not in arrived or arrived[n].size != sizes[n]]
            if missing:
                raise StorageError(
                    f"{self.variable}={self.location}: {len(missing)} object(s) missing or truncated after upload "
                    f"({', '.join(missing[:3])}); re-run with the same FT_RUN_ID"
                )
            stale = sorted(set(arrived) - set(names))  # left by an earlier attempt of this run id
            s3_client.delete_keys(self.s3, self.bucket, [self.prefix + n for n in stale])
        if stale:
            log.info("s3.stale_removed", location=self.location, objects=len(stale))

    def upload(self, source: Path, names: list[str]) -> None:
        """Upload without removing anything else (a checkpoint beside others)."""
        with self._translated(writing=True):
            self._upload(source, names)

    def _upload(self, source: Path, names: list[str]) -> None:
        """In parallel, in parts above the chunk size; whole files are retried on top of
        botocore's per-request retries."""
        from boto3.s3.transfer import create_transfer_manager

        pending = list(names)
        for attempt in range(1, _FILE_ATTEMPTS + 1):
            failed = []
            with create_transfer_manager(self.s3, s3_client.transfer_config(self.settings)) as manager:
                futures = [
                    (
                        name,
                        manager.upload(
                            str(source / name),
                            self.bucket,
                            self.prefix + name,
                            extra_args={"ContentType": _content_type(name)},
                        ),
                    )
                    for name in pending
                ]
                for name, future in futures:
                    try:
                        future.result()
                    except Exception as exc:
                        if attempt == _FILE_ATTEMPTS or not s3_client.transient(exc):
                            raise
                        failed.append(name)
            if not failed:
                return
            log.warning("s3.upload_retry", files=failed, attempt=attempt)
            time.sleep(2**attempt)
            pending = failed

    def get(self, names: Iterable[str], target: Path) -> None:
        from boto3.s3.transfer import create_transfer_manager

        todo = [(name, safe_join(target, name, f"{self.variable}={self.location}")) for name in names]
        with (
            self._translated(writing=False),
            create_transfer_manager(self.s3, s3_client.transfer_config(self.settings)) as manager,
        ):
            futures = []
            for name, local in todo:
                local.parent.mkdir(parents=True, exist_ok=True)
                futures.append((local, manager.download(self.bucket, self.prefix + name, str(local) + ".part")))
            for local, future in futures:
                future.result()
                Path(str(local) + ".part").replace(local)

    def delete(self, names: Iterable[str]) -> None:
        with self._translated(writing=True):
            s3_client.delete_keys(self.s3, self.bucket, [self.prefix + n for n in names])

    def delete_all(self) -> None:
        self.delete(list(self.list()))

    def check_writable(self, *, dry_run: bool = False) -> None:
        """Write and delete a probe object: fails now, not after hours of training. Nothing
        stays behind, except in a versioned bucket, which keeps the deleted probe as a
        noncurrent version (lifecycle rules expire those)."""
        with self._translated(writing=True):
            self.s3.head_bucket(Bucket=self.bucket)
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + _PROBE, Body=b"")
            self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + _PROBE)


def safe_join(root: Path, relative: str, where: str) -> Path:
    """root/relative, refusing keys that would land outside root (`..`, absolute)."""
    parts = PurePosixPath(relative).parts
    target = root.joinpath(*parts).resolve()
    if relative.startswith("/") or ".." in parts or not target.is_relative_to(root.resolve()):
        raise StorageError(
            f"{where}: object key '{relative}' would escape the local cache directory; refusing to download it — "
            "remove or rename that object"
        )
    return target


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"

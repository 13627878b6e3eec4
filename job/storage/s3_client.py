"""The S3 client, its retries and timeouts, and the translation of its errors into one line with the fix.

Credentials come only from the standard AWS chain. Every request retries on
throttling, 5xx answers, dropped connections and timeouts (botocore's adaptive
mode); whole files are retried once more on top (s3_folder).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from job.errors import StorageError
from job.settings import Settings

MIB = 1024 * 1024
NOT_FOUND = ("404", "NoSuchKey", "NotFound")


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


def transfer_config(settings: Settings) -> Any:
    from boto3.s3.transfer import TransferConfig

    chunk = settings.s3_multipart_chunk_mb * MIB
    return TransferConfig(
        multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=settings.s3_max_concurrency
    )


def error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


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
            f"{variable}={location}: cannot reach the S3 endpoint ({short(exc)}); check FT_S3_ENDPOINT_URL / "
            "AWS_ENDPOINT_URL and the network"
        ) from None
    except ClientError as exc:
        raise StorageError(_client_error(exc, variable, location, writing=writing)) from None
    except S3UploadFailedError as exc:
        raise StorageError(
            f"{variable}={location}: upload failed after retries ({short(exc)}); the run is kept locally — "
            "re-run with the same FT_RUN_ID to publish it"
        ) from None
    except BotoCoreError as exc:
        raise StorageError(f"{variable}={location}: S3 request failed ({short(exc)})") from None


def _client_error(exc: Any, variable: str, location: str, *, writing: bool) -> str:
    error = exc.response.get("Error", {})
    code = error_code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    bucket = location[len("s3://") :].partition("/")[0]
    if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and exc.operation_name == "HeadBucket"):
        return f"{variable}={location}: bucket '{bucket}' does not exist; create it or fix {variable}"
    if code in ("AccessDenied", "403", "AllAccessDisabled", "Forbidden") or status == 403:
        need = "s3:PutObject, s3:DeleteObject and s3:ListBucket" if writing else "s3:ListBucket and s3:GetObject"
        return f"{variable}={location}: access denied; grant this identity {need} on it"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
        return f"{variable}={location}: the AWS credentials were rejected ({code}); check or refresh them"
    return f"{variable}={location}: S3 answered {code or status}: {error.get('Message', '')}".rstrip(": ")


def short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def list_objects(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def delete_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):  # the most one DeleteObjects request takes
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})


def transient(exc: BaseException) -> bool:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError

    if isinstance(exc, ConnectionError | S3UploadFailedError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or error_code(exc) in ("SlowDown", "RequestTimeout")
    return False

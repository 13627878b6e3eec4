"""A real S3 endpoint for tests: moto's server on 127.0.0.1, driven by boto3 over HTTP."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import boto3

ACCESS_KEY = "AKIAFTJOBTESTKEY0001"
SECRET_KEY = "ftjob-test-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s3_client(endpoint: str, **credentials: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials.get("key", ACCESS_KEY),
        aws_secret_access_key=credentials.get("secret", SECRET_KEY),
    )


def upload_folder(s3: Any, folder: Path, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def objects(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]  # fmt: skip
    return {k[len(prefix) :]: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

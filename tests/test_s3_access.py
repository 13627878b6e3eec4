"""Access denied, for real: a moto server that enforces IAM policies after its setup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import rows, write
from s3_helpers import free_port

from job.errors import StorageError
from job.main import main

SETUP_REQUESTS = 7  # moto enforces IAM from the request after these


@pytest.fixture(scope="module")
def iam_endpoint() -> Iterator[dict[str, dict[str, str] | str]]:
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        admin = {
            "endpoint_url": url,
            "region_name": "us-east-1",
            "aws_access_key_id": "AKIAADMIN",
            "aws_secret_access_key": "x",
        }
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        s3.create_bucket(Bucket="locked")  # 1
        s3.put_object(Bucket="locked", Key="data/train.csv", Body=b"text,label\na,0\nb,1\n")  # 2
        iam.create_user(UserName="reader")  # 3
        read_only = {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "s3:HeadBucket"], "Resource": "*"}
        iam.put_user_policy(  # 4
            UserName="reader",
            PolicyName="read-only",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [read_only]}),
        )
        reader = iam.create_access_key(UserName="reader")["AccessKey"]  # 5
        iam.create_user(UserName="nobody")  # 6
        nobody = iam.create_access_key(UserName="nobody")["AccessKey"]  # 7
        yield {"url": url, "reader": reader, "nobody": nobody}
    finally:
        server.terminate()
        server.wait(timeout=10)


def as_user(monkeypatch: pytest.MonkeyPatch, endpoint: dict, user: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint["url"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", endpoint[user]["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", endpoint[user]["SecretAccessKey"])


def test_read_only_identity_cannot_publish(make_settings, clean_env, iam_endpoint, tmp_path: Path) -> None:
    as_user(clean_env, iam_endpoint, "reader")
    settings = make_settings(dataset=str(write(tmp_path / "t.csv", rows("binary", 20))), output="s3://locked/runs")
    with pytest.raises(StorageError) as caught:
        main(settings)
    assert caught.value.message == (
        "FT_OUTPUT=s3://locked/runs/test-run/: access denied; grant this identity s3:PutObject, "
        "s3:DeleteObject and s3:ListBucket on it"
    )
    assert not (settings.run_work_dir() / "checkpoints").exists()  # refused before any training


def test_identity_without_permissions_cannot_read(make_settings, clean_env, iam_endpoint) -> None:
    as_user(clean_env, iam_endpoint, "nobody")
    with pytest.raises(StorageError) as caught:
        main(make_settings(dataset="s3://locked/data"))
    assert caught.value.message == (
        "FT_DATASET=s3://locked/data: access denied; grant this identity s3:ListBucket and s3:GetObject on it"
    )


def test_the_read_only_identity_can_read(make_settings, clean_env, iam_endpoint, tmp_path: Path) -> None:
    # The same server and policy allow what they should: the denial above is the policy's.
    from job.storage import classify, fetch

    as_user(clean_env, iam_endpoint, "reader")
    location = classify("s3://locked/data", "FT_DATASET", what="dataset")
    mirror = fetch(location, make_settings(dataset="s3://locked/data"), data_only=True)
    assert (mirror / "train.csv").read_bytes() == b"text,label\na,0\nb,1\n"


def test_the_dry_run_refuses_the_read_only_identity_like_the_run(
    make_settings, clean_env, iam_endpoint, tmp_path: Path
) -> None:
    from job.check import check

    as_user(clean_env, iam_endpoint, "reader")
    settings = make_settings(dataset=str(write(tmp_path / "t.csv", rows("binary", 20))), output="s3://locked/runs")
    with pytest.raises(StorageError) as caught:
        check(settings)
    assert caught.value.message == (
        "FT_OUTPUT=s3://locked/runs/test-run/: access denied; grant this identity s3:PutObject, "
        "s3:DeleteObject and s3:ListBucket on it"
    )

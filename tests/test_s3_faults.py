"""The whole job against S3 through a proxy that fails a share of the requests:
transient faults are retried and the run completes; a persistent one stops the job
with the storage exit code and no completion manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import rows, write
from fault_proxy import FAULTS, FaultProxy
from s3_helpers import objects, upload_folder

from job.errors import StorageError
from job.files import sha256_of
from job.main import main

pytestmark = pytest.mark.slow


def test_transient_faults_are_retried_and_the_run_completes(  # noqa: PLR0917 (fixtures)
    make_settings, s3: Any, bucket: str, s3_endpoint: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write(data / "train.jsonl", rows("binary", 120))
    write(data / "test.jsonl", rows("binary", 20, 3))
    upload_folder(s3, data, bucket, "datasets/reviews")
    with FaultProxy(s3_endpoint, rate=0.2, timeout_s=2.5, seed=7) as proxy:
        clean_env.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        settings = make_settings(
            dataset=f"s3://{bucket}/datasets/reviews", output=f"s3://{bucket}/runs", s3_timeout=2, epochs=2
        )
        result = main(settings)
    print(f"\nfault proxy: {dict(proxy.counts)}")  # the counts for the record (pytest -s)
    assert result["status"] == "completed"
    assert proxy.injected >= 0.10 * proxy.counts["requests"] and all(proxy.counts[f] for f in FAULTS)

    published = objects(s3, bucket, "runs/test-run/")  # read back directly, not through the proxy
    manifest = json.loads(published.pop("_COMPLETE.json"))
    assert {f["path"] for f in manifest["files"]} == set(published)
    for entry in manifest["files"]:
        body = published[entry["path"]]
        assert len(body) == entry["size"]
        local = tmp_path / "check"
        local.write_bytes(body)
        assert sha256_of(local) == entry["sha256"], entry["path"]


def test_persistent_failure_stops_with_the_storage_code_and_no_manifest(  # noqa: PLR0917 (fixtures)
    make_settings, s3: Any, bucket: str, s3_endpoint: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = write(tmp_path / "data" / "train.jsonl", rows("binary", 80)).parent
    weights = lambda method, path: method == "PUT" and "model.safetensors" in path  # noqa: E731
    with FaultProxy(s3_endpoint, rate=0.0, timeout_s=2.5, persistent=weights) as proxy:
        clean_env.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        settings = make_settings(dataset=str(data), output=f"s3://{bucket}/runs", s3_timeout=2, s3_max_attempts=3)
        with pytest.raises(StorageError, match=r"^FT_OUTPUT=s3://\S+/runs/test-run/: (upload failed|S3 answered)"):
            main(settings)
    assert proxy.counts["internal_error"] >= 3  # retried before giving up
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="runs/test-run/").get("Contents", [])
    assert "runs/test-run/_COMPLETE.json" not in {o["Key"] for o in listed}

"""S3 in and out against a real S3 endpoint (moto's server over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ft_env, rows, write
from s3_helpers import objects, sha256, upload_folder
from transformers import pipeline

from job.errors import StorageError
from job.main import main
from job.settings import Settings
from job.storage import COMPLETE, classify, fetch


def download(uri: str, settings: Settings) -> Path:
    """The dataset mirror the job reads, through the storage seam's public entry."""
    return fetch(classify(uri, "FT_DATASET", what="dataset"), settings, data_only=True)


def dataset_in_s3(s3, bucket: str, tmp_path: Path, prefix: str = "sets/reviews") -> str:
    folder = tmp_path / "src"
    write(folder / "train.csv", rows("binary", 160))
    write(folder / "validation.csv", rows("binary", 24, 1))
    write(folder / "test.csv", rows("binary", 16, 2))
    (folder / "README.md").write_text("not data: skipped")
    upload_folder(s3, folder, bucket, prefix)
    return f"s3://{bucket}/{prefix}"


def test_dataset_in_and_model_out_round_trip(make_settings, s3, bucket: str, tmp_path: Path) -> None:
    settings = make_settings(dataset=dataset_in_s3(s3, bucket, tmp_path), output=f"s3://{bucket}/runs")
    summary = main(settings)
    assert summary["location"] == f"s3://{bucket}/runs/test-run/"

    published = objects(s3, bucket, "runs/test-run/")
    manifest = json.loads(published.pop(COMPLETE))
    # The manifest lists every other object, with the bytes' real size and sha256.
    assert {f["path"] for f in manifest["files"]} == set(published)
    for entry in manifest["files"]:
        assert entry["size"] == len(published[entry["path"]])
        assert entry["sha256"] == sha256(published[entry["path"]])
    assert manifest["message"].startswith("f1_macro=")
    assert {"model.safetensors", "config.json", "tokenizer.json", "metrics.json", "README.md"} <= set(published)
    card = published["README.md"].decode()
    assert "aws s3 cp --recursive s3://" in card
    # The data is named by its prefix's last part: not its bucket, nor where the job mirrored it.
    assert "a private dataset, `reviews` (" in card and "sets/reviews" not in card and "/s3/" not in card

    # What was uploaded is a working model.
    local = tmp_path / "downloaded"
    for name, data in published.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    assert pipeline("text-classification", model=str(local), device="cpu")("a wonderful film")[0]["label"] in {"0", "1"}
    assert not (tmp_path / "outputs").exists()  # nothing written locally but the cache


def test_large_files_go_up_in_parts(make_settings, s3, bucket: str, tmp_path: Path, wide_model: Path) -> None:
    settings = make_settings(
        model=str(wide_model),
        dataset=str(write(tmp_path / "d" / "train.csv", rows("binary", 60))),
        output=f"s3://{bucket}/runs",
        s3_multipart_chunk_mb=5,
        epochs=1,
    )
    main(settings)
    head = s3.head_object(Bucket=bucket, Key="runs/test-run/model.safetensors")
    assert head["ContentLength"] > 5 * 1024 * 1024
    assert head["ETag"].strip('"').endswith("-2")  # S3 marks multipart objects with their part count
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"runs/test-run/{COMPLETE}")["Body"].read())
    weights = s3.get_object(Bucket=bucket, Key="runs/test-run/model.safetensors")["Body"].read()
    assert next(f for f in manifest["files"] if f["path"] == "model.safetensors")["sha256"] == sha256(weights)


def test_model_from_s3_and_explicit_split_files(
    make_settings, s3, bucket: str, tmp_path: Path, tiny_model: Path
) -> None:
    upload_folder(s3, tiny_model, bucket, "models/base")
    folder = tmp_path / "src"
    write(folder / "2025-a.jsonl", rows("binary", 80))
    write(folder / "2025-b.jsonl", rows("binary", 80, 1))
    write(folder / "holdout.jsonl", rows("binary", 20, 2))
    upload_folder(s3, folder, bucket, "data")
    settings = make_settings(
        model=f"s3://{bucket}/models/base",
        dataset=f"s3://{bucket}/data",
        data_files={"train": "2025-*.jsonl", "validation": "holdout.jsonl"},
    )
    run = Path(main(settings)["location"])
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["data"]["rows"] == {"train": 160, "validation": 20}
    assert (settings.cache_dir / "s3" / bucket / "models" / "base" / "model.safetensors").is_file()


def test_downloads_are_mirrored_once_and_refreshed_when_changed(s3, bucket: str, tmp_path: Path) -> None:
    uri = dataset_in_s3(s3, bucket, tmp_path)
    settings = Settings(_env_file=None, model="m", dataset=uri, cache_dir=tmp_path / "cache")  # type: ignore[call-arg]
    mirror = download(uri, settings)
    assert sorted(p.name for p in mirror.glob("*.csv")) == ["test.csv", "train.csv", "validation.csv"]
    assert not (mirror / "README.md").exists()  # not a data file
    stamps = {p.name: p.stat().st_mtime_ns for p in mirror.glob("*.csv")}
    assert download(uri, settings) == mirror
    assert {p.name: p.stat().st_mtime_ns for p in mirror.glob("*.csv")} == stamps  # nothing fetched again
    s3.put_object(Bucket=bucket, Key="sets/reviews/test.csv", Body=b"text,label\nnew,1\n")
    download(uri, settings)
    assert (mirror / "test.csv").read_bytes() == b"text,label\nnew,1\n"
    assert (mirror / "train.csv").stat().st_mtime_ns == stamps["train.csv"]


def test_rerunning_a_run_id_is_idempotent(make_settings, s3, bucket: str, tmp_path: Path) -> None:
    settings = make_settings(dataset=dataset_in_s3(s3, bucket, tmp_path), output=f"s3://{bucket}/runs", epochs=1)
    # A previous attempt died mid-upload: objects but no manifest, one the new run will not write.
    s3.put_object(Bucket=bucket, Key="runs/test-run/stale-leftover.bin", Body=b"x")
    main(settings)
    published = objects(s3, bucket, "runs/test-run/")
    assert "stale-leftover.bin" not in published and COMPLETE in published
    before = published["model.safetensors"]
    assert main(settings)["status"] == "already_complete"
    assert objects(s3, bucket, "runs/test-run/")["model.safetensors"] == before


def test_keys_escaping_the_cache_are_refused(s3, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="sets/ok/train.csv", Body=b"text,label\na,1\n")
    s3.put_object(Bucket=bucket, Key="sets/ok/../../../../escape.csv", Body=b"text,label\na,1\n")
    settings = Settings(_env_file=None, model="m", dataset="x", cache_dir=tmp_path / "cache")  # type: ignore[call-arg]
    with pytest.raises(
        StorageError,
        match=r"^FT_DATASET=s3://.*/sets/ok: object key '\.\./\.\./\.\./\.\./escape.csv' would escape the local cache",
    ):
        download(f"s3://{bucket}/sets/ok", settings)
    assert not list(tmp_path.rglob("escape.csv"))


# --- errors: one line, the location, the fix ---------------------------------------------


def storage_error(settings: Settings) -> str:
    with pytest.raises(StorageError) as caught:
        main(settings)
    assert "\n" not in caught.value.message
    return caught.value.message


def test_missing_output_bucket(make_settings, s3, tmp_path: Path) -> None:
    settings = make_settings(
        dataset=str(write(tmp_path / "t.csv", rows("binary", 20))), output="s3://no-such-bucket/runs"
    )
    message = storage_error(settings)
    assert message == (
        "FT_OUTPUT=s3://no-such-bucket/runs/test-run/: "
        "bucket 'no-such-bucket' does not exist; create it or fix FT_OUTPUT"
    )


def test_missing_input_bucket(make_settings, s3) -> None:
    message = storage_error(make_settings(dataset="s3://absent-bucket/data"))
    assert message.startswith("FT_DATASET=s3://absent-bucket/data: bucket 'absent-bucket' does not exist")


def test_empty_prefix_and_no_matching_files(make_settings, s3, bucket: str) -> None:
    assert "no csv, json, jsonl or parquet objects under this prefix" in storage_error(
        make_settings(dataset=f"s3://{bucket}/nothing-here")
    )
    s3.put_object(Bucket=bucket, Key="docs/readme.txt", Body=b"hello")
    assert storage_error(make_settings(dataset=f"s3://{bucket}/docs")).startswith(
        f"FT_DATASET=s3://{bucket}/docs: no csv, json, jsonl or parquet objects under this prefix"
    )


def test_no_credentials(make_settings, s3, bucket: str, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.delenv("AWS_ACCESS_KEY_ID")
    clean_env.delenv("AWS_SECRET_ACCESS_KEY")
    message = storage_error(make_settings(dataset=f"s3://{bucket}/data"))
    assert message.startswith(f"FT_DATASET=s3://{bucket}/data: no AWS credentials found; provide them through")


def test_unreachable_endpoint(make_settings, s3, clean_env: pytest.MonkeyPatch) -> None:
    from s3_helpers import free_port

    clean_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    message = storage_error(make_settings(dataset="s3://any/data", s3_max_attempts=1))
    assert "cannot reach the S3 endpoint" in message and "AWS_ENDPOINT_URL" in message


def test_cli_storage_error_exits_6_and_hides_the_secret(s3, tmp_path: Path, tiny_model: Path, s3_endpoint: str) -> None:
    import os
    import subprocess
    import sys

    from s3_helpers import SECRET_KEY

    # AWS_* from the test's S3 fixture, not from a clean environment: the secret to look for is in them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FT_")}
    env.update(
        ft_env(
            tmp_path, tiny_model, write(tmp_path / "t.csv", rows("binary", 20)),
            FT_OUTPUT="s3://missing-bucket-for-cli/runs", FT_LOG_LEVEL="debug",
        )
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "job"], env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 6
    event = json.loads(result.stdout.splitlines()[-1])
    assert event["event"] == "storage.failed" and "bucket 'missing-bucket-for-cli' does not exist" in event["error"]
    assert SECRET_KEY not in result.stdout + result.stderr

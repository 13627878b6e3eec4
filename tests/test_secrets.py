"""Planted secrets never come out: not in logs, tracebacks, error lines, the run
manifest, the model card, checkpoints or any other file the job writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import clean_environ, ft_env, rows, write
from s3_helpers import objects

from job import cli
from job.errors import ExitCode

HF_SECRET = "hf_PlantedTokenValue0123456789"
AWS_SECRET = "PlantedAwsSecretKey/0123456789abcdef"


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_a_full_run_with_s3_checkpoints_and_output_leaks_no_secret(
    s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path, tiny_model: Path
) -> None:
    from s3_helpers import ACCESS_KEY

    # moto accepts any secret for a known access key id: the planted one is really used.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FT_")}
    env.update(
        ft_env(
            tmp_path, tiny_model, write(tmp_path / "d" / "train.jsonl", rows("binary", 80)).parent,
            AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=AWS_SECRET, FT_HF_TOKEN=HF_SECRET,
            FT_OUTPUT=f"s3://{bucket}/runs", FT_CHECKPOINT_DIR=f"s3://{bucket}/checkpoints", FT_SAVE_STEPS="2",
            FT_RUN_ID="secret-run", FT_EPOCHS="1", FT_LOG_LEVEL="debug", HF_HUB_OFFLINE="1",
        )
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "job"], env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    shown = subprocess.run(
        [sys.executable, "-m", "job", "--print-config"], env=env, capture_output=True, text=True, check=True
    )
    published = objects(s3, bucket, "runs/secret-run/")
    assert set(published) >= {"run_manifest.json", "README.md", "model.safetensors", "_COMPLETE.json"}
    texts = [result.stdout, result.stderr, shown.stdout, *(b.decode("latin-1") for b in published.values())]
    texts += [p.read_bytes().decode("latin-1") for p in every_file(tmp_path / "cache")]
    for secret in (HF_SECRET, AWS_SECRET):
        assert not any(secret in text for text in texts)
    assert json.loads(published["run_manifest.json"])["settings"]["HF_TOKEN"] == "**********"


def test_a_crash_whose_message_carries_the_token_is_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch
) -> None:
    import job.main

    def leaky(settings: object) -> None:
        token = HF_SECRET  # a local variable in the traceback's frame, too
        raise RuntimeError(f"401 for https://user:{token}@hub.example/api?secret={AWS_SECRET}")

    monkeypatch.setattr(job.main, "main", leaky)
    for key, value in {
        "FT_MODEL": "m", "FT_DATASET": "d", "FT_LOG_FORMAT": "json", "HF_TOKEN": HF_SECRET,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }.items():  # fmt: skip
        clean_env.setenv(key, value)
    assert cli.run([]) == ExitCode.INTERNAL
    out = capsys.readouterr().out
    assert "run.crashed" in out and "401 for https://user:" in out
    assert HF_SECRET not in out and AWS_SECRET not in out


URL_PASSWORD = "PlantedUrlPassword0123"
URL_SIGNATURE = "PlantedSignature0123456789abcdef"


@pytest.mark.slow
def test_credentials_inside_a_url_setting_appear_in_no_log_file_or_error(tmp_path: Path, tiny_model: Path) -> None:
    url = f"http://ftjob:{URL_PASSWORD}@127.0.0.1:9/?X-Amz-Signature={URL_SIGNATURE}&region=eu"
    data = write(tmp_path / "d" / "train.jsonl", rows("binary", 80)).parent
    env = {**clean_environ(), **ft_env(tmp_path, tiny_model, data, FT_RUN_ID="url-run", FT_EPOCHS="1")}
    env.update(FT_S3_ENDPOINT_URL=url, FT_LOG_LEVEL="debug", AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b")

    def job(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "job", *args], env={**env, **extra}, cwd=tmp_path, capture_output=True, text=True,
            check=False, timeout=300,
        )  # fmt: skip

    published = job()  # local output: the endpoint is a setting, recorded but not used
    assert published.returncode == 0, published.stdout[-2000:]
    shown = job("--print-config")
    failed = job(FT_OUTPUT="s3://some-bucket/runs", FT_RUN_ID="url-fails", FT_S3_MAX_ATTEMPTS="1")
    assert failed.returncode == ExitCode.STORAGE
    error = next(json.loads(line) for line in failed.stdout.splitlines() if '"storage.failed"' in line)
    assert error["error"].startswith("FT_OUTPUT=s3://some-bucket/runs/url-fails/: ")
    assert "http://ftjob:**********@127.0.0.1:9/?X-Amz-Signature=**********&region=eu" in error["error"]

    texts = [r.stdout + r.stderr for r in (published, shown, failed)]
    texts += [p.read_bytes().decode("latin-1") for p in every_file(tmp_path) if p.suffix != ".safetensors"]
    assert not any(URL_PASSWORD in text or URL_SIGNATURE in text for text in texts)
    masked = "http://ftjob:**********@127.0.0.1:9/?X-Amz-Signature=**********&region=eu"
    assert json.loads(shown.stdout)["FT_S3_ENDPOINT_URL"] == masked
    manifest = json.loads((tmp_path / "outputs" / "url-run" / "run_manifest.json").read_text())
    assert manifest["settings"]["FT_S3_ENDPOINT_URL"] == masked

"""Models from the Hub through the standard Hugging Face cache and token: downloads land in
HF_HOME's hub cache (not FT_CACHE_DIR), a cache filled in advance serves an offline run, and
the token `hf auth login` stores (HF_HOME/token) is used, and masked, without HF_TOKEN.
Real `python -m job` processes against the Hub stand-in (tests/hub_standin.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_environ, ft_env, rows, write
from hub_standin import HubStandIn

from job.errors import ExitCode

pytestmark = pytest.mark.slow


def run_job(*command: str, env: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    result = subprocess.run(
        [sys.executable, "-m", "job", *command],
        check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return result, [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def environment(root: Path, model: str, hf_home: Path, **variables: str) -> dict[str, str]:
    folder = root / "d"
    write(folder / "train.csv", rows("binary", 80))
    write(folder / "test.csv", rows("binary", 16, 1))
    env = {**clean_environ(), **ft_env(root, model, folder, FT_EPOCHS="1", HF_HOME=str(hf_home))}
    env.update(variables)
    return env


def test_a_download_lands_in_hf_home_and_serves_an_offline_run(tmp_path: Path, tiny_model: Path) -> None:
    hf_home = tmp_path / "hf-home"
    with HubStandIn() as hub:
        hub.add_model("acme/tiny-bert", tiny_model, private=False)
        env = environment(tmp_path / "online", "acme/tiny-bert", hf_home, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0")
        result, events = run_job(env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert any(r.startswith("GET /acme/tiny-bert/resolve/") for r in hub.state.requests)
    assert events[-1]["status"] == "completed"
    snapshots = list((hf_home / "hub" / "models--acme--tiny-bert" / "snapshots").iterdir())
    assert len(snapshots) == 1 and (snapshots[0] / "config.json").is_file()
    assert (hf_home / "datasets").is_dir()  # the csv builder's cache too
    cache = tmp_path / "online" / "cache"
    assert not (cache / "hub").exists() and not (cache / "datasets").exists()

    # The stand-in is gone: an air-gapped node with the filled cache (a fresh FT_CACHE_DIR).
    offline = environment(tmp_path / "offline", "acme/tiny-bert", hf_home, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="1")
    result, events = run_job(env=offline, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert events[-1]["status"] == "completed"


def test_a_private_model_and_repo_need_only_the_stored_token(tmp_path: Path, tiny_model: Path) -> None:
    with HubStandIn() as hub:
        hub.add_model("acme/private-bert", tiny_model, private=True)
        hf_home = tmp_path / "logged-in"
        hf_home.mkdir()
        (hf_home / "token").write_text("hf_writer")  # what `hf auth login` leaves
        env = environment(
            tmp_path / "with", "acme/private-bert", hf_home,
            HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", FT_OUTPUT="hf://acme/published", FT_LOG_LEVEL="debug",
        )  # fmt: skip
        assert "HF_TOKEN" not in env
        result, events = run_job(env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert events[-1]["location"] == "hf://acme/published"
        assert "hf_writer" not in result.stdout + result.stderr
        assert hub.state.repos["acme/published"].commits["main"]

        # Neither HF_TOKEN nor a stored token: the job's own line, before any training.
        env = environment(
            tmp_path / "without", "acme/private-bert", tmp_path / "logged-out", HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0"
        )
        result, events = run_job(env=env, cwd=tmp_path)
    assert result.returncode == ExitCode.CONFIG, result.stdout[-2000:] + result.stderr[-2000:]
    error = events[-1]["error"]
    assert error.startswith("FT_MODEL='acme/private-bert': the Hub does not show this model (no Hugging Face token")
    assert "hf auth login" in error and "\n" not in error


def test_the_stored_token_is_masked_wherever_it_would_be_logged(tmp_path: Path, tiny_model: Path) -> None:
    hf_home = tmp_path / "logged-in"
    hf_home.mkdir()
    secret = "hf_StoredOnlyInTheTokenFile42"
    (hf_home / "token").write_text(secret)
    # A setting that is (by mistake) the token itself: the error line quotes it.
    env = environment(tmp_path, secret, hf_home, HF_HUB_OFFLINE="1")
    result, events = run_job("check", env=env, cwd=tmp_path)
    assert result.returncode == ExitCode.CONFIG
    assert secret not in result.stdout + result.stderr
    assert events[-1]["error"].startswith("FT_MODEL='**********'")

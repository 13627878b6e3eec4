"""Publishing to the Hub, against a local stand-in of the Hub API (tests/hub_standin.py):
huggingface_hub's real create_repo and upload_folder run over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import clean_environ, ft_env, rows, write
from hub_standin import HubStandIn
from huggingface_hub import ModelCard
from s3_helpers import sha256

from job.errors import StorageError
from job.main import main
from job.storage import COMPLETE


@pytest.fixture
def hub(clean_env: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    import huggingface_hub.constants

    with HubStandIn() as server:
        clean_env.setenv("HF_ENDPOINT", server.url)
        # The suite runs with HF_HUB_OFFLINE=1 (no real Hub); the stand-in is local.
        clean_env.delenv("HF_HUB_OFFLINE")
        clean_env.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield server


def data(tmp_path: Path) -> str:
    folder = tmp_path / "d"
    write(folder / "train.csv", rows("binary", 120))
    write(folder / "test.csv", rows("binary", 20, 1))
    return str(folder)


def test_publish_creates_a_private_repo_with_one_commit(make_settings, hub: HubStandIn, tmp_path: Path) -> None:
    settings = make_settings(dataset=data(tmp_path), output="hf://acme/sentiment", hf_token="hf_writer")
    summary = main(settings)
    assert summary["location"] == "hf://acme/sentiment"
    repo = hub.state.repos["acme/sentiment"]
    assert repo.private
    initial, commit = repo.commits["main"]  # the Hub's own first commit, then the run's
    assert initial["title"] == "initial commit"
    assert commit["title"].startswith("ftjob run test-run: f1_macro=") and "on validation" in commit["title"]

    files = repo.branches["main"]
    listing = json.loads(files[COMPLETE])["files"]
    assert {f["path"] for f in listing} == set(files) - {COMPLETE, ".gitattributes"}
    for entry in listing:  # byte for byte what the job wrote and verified
        assert sha256(files[entry["path"]]) == entry["sha256"] and len(files[entry["path"]]) == entry["size"]

    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---")[1])
    result = front["model-index"][0]["results"][0]
    assert result["task"]["type"] == "text-classification" and result["dataset"]["split"] == "validation"
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert metrics["f1_macro"] == pytest.approx(json.loads(files["metrics.json"])["validation"]["f1_macro"], rel=1e-5)
    assert '"text-classification", model="acme/sentiment",' in card and "revision=" not in card
    assert not hub.state.unknown


def test_branch_and_public_repo(make_settings, hub: HubStandIn, tmp_path: Path) -> None:
    settings = make_settings(
        dataset=data(tmp_path), output="hf://acme/public-model", hf_token="hf_writer", hub_private=False,
        hub_revision="candidate", epochs=1, license="apache-2.0", language="en",
    )  # fmt: skip
    assert main(settings)["location"] == "hf://acme/public-model@candidate"
    repo = hub.state.repos["acme/public-model"]
    assert not repo.private
    assert "model.safetensors" in repo.branches["candidate"] and set(repo.branches["main"]) == {".gitattributes"}

    # The card on the branch: loadable from that branch, and naming nothing on this machine.
    text = repo.branches["candidate"]["README.md"].decode()
    assert 'model="acme/public-model", revision="candidate",' in text and "truncation=True" in text
    assert str(tmp_path) not in text and "/tmp/" not in text and "s3://" not in text
    (tmp_path / "card.md").write_text(text)
    card = ModelCard.load(tmp_path / "card.md")
    assert card.data.license == "apache-2.0" and card.data.language == ["en"] and card.data.base_model is None
    metrics = json.loads(repo.branches["candidate"]["metrics.json"])
    assert {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results} == {
        (split, name): metrics[split][name]
        for split in ("validation", "test")
        for name in ("accuracy", "f1", "f1_macro", "precision", "recall", "mcc", "roc_auc", "pr_auc")
    }


def test_rerun_of_a_published_run_id_does_nothing(make_settings, hub: HubStandIn, tmp_path: Path) -> None:
    settings = make_settings(dataset=data(tmp_path), output="hf://acme/again", hf_token="hf_writer", epochs=1)
    main(settings)
    assert main(settings)["status"] == "already_complete"
    assert len(hub.state.repos["acme/again"].commits["main"]) == 2  # the repo's first commit and the run


def test_a_branch_holds_exactly_the_latest_run(make_settings, hub: HubStandIn, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token="hf_writer")
    api.create_repo("acme/branchy")
    api.upload_file(path_or_fileobj=b"keep me", path_in_repo="docs/notes.md", repo_id="acme/branchy")
    main_before = dict(hub.state.repos["acme/branchy"].branches["main"])
    common = {"dataset": data(tmp_path), "output": "hf://acme/branchy", "hf_token": "hf_writer", "epochs": 1}
    # The first run leaves more: TensorBoard events in a folder, and the charts.
    main(make_settings(**common, hub_revision="candidate", run_id="first", report_to="tensorboard"))
    first = set(hub.state.repos["acme/branchy"].branches["candidate"])
    assert any(name.startswith("tensorboard/") for name in first) and "training_curves.png" in first
    assert "docs/notes.md" not in first  # the branch started from main, but holds only the run

    main(make_settings(**common, hub_revision="candidate", run_id="second", charts=False))
    repo = hub.state.repos["acme/branchy"]
    branch = repo.branches["candidate"]
    listed = {f["path"] for f in json.loads(branch[COMPLETE])["files"]}
    assert set(branch) == listed | {COMPLETE, ".gitattributes"}
    assert not any(name.startswith("tensorboard/") or name.endswith(".png") for name in branch)
    assert json.loads(branch["run_manifest.json"])["run_id"] == "second"
    assert repo.branches["main"] == main_before  # the other branch is untouched
    # Deletions and additions were one commit: the run's.
    assert [c["title"].split(":")[0] for c in repo.commits["candidate"][-2:]] == ["ftjob run first", "ftjob run second"]
    assert not hub.state.unknown


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, "FT_OUTPUT=hf://acme/m: publishing to the Hub needs a token with write access; set HF_TOKEN, or log in"),
        ("hf_unknown", "FT_OUTPUT=hf://acme/m: the Hugging Face token was rejected by"),
        ("hf_reader", "FT_OUTPUT=hf://acme/m: the Hugging Face token may not write to acme/m"),
    ],
)
def test_token_problems_stop_before_training(make_settings, hub, tmp_path: Path, token, expected) -> None:
    settings = make_settings(dataset=data(tmp_path), output="hf://acme/m", hf_token=token)
    with pytest.raises(StorageError) as caught:
        main(settings)
    assert caught.value.message.startswith(expected) and "\n" not in caught.value.message
    assert token is None or token not in caught.value.message
    assert not (settings.run_work_dir() / "checkpoints").exists()


def test_cli_publish_never_logs_the_token(hub: HubStandIn, tmp_path: Path, tiny_model: Path) -> None:
    env = {**clean_environ(), **ft_env(tmp_path, tiny_model, data(tmp_path))}
    env.update(
        HF_ENDPOINT=hub.url, HF_TOKEN="hf_writer", HF_HUB_OFFLINE="0", FT_OUTPUT="hf://acme/cli", FT_EPOCHS="1",
        FT_RUN_ID="cli-hub", FT_LOG_LEVEL="debug",
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "job"], env=env, cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "hf_writer" not in result.stdout + result.stderr
    published = hub.state.repos["acme/cli"].branches["main"]
    assert "hf_writer" not in b"".join(published.values()).decode("utf-8", "replace")
    assert json.loads(result.stdout.splitlines()[-1])["location"] == "hf://acme/cli"

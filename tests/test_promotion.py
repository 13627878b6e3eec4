"""The promotion gate: a run becomes `latest` only when it clears the threshold and
beats the production run; otherwise it is published as a candidate and exits 7."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ft_env, rows, write

from job import cli
from job.errors import ExitCode, NotPromoted
from job.main import main

pytestmark = pytest.mark.slow


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write(tmp_path / "d" / "train.jsonl", rows("binary", 160)).parent


def test_first_run_is_promoted_and_a_worse_one_is_kept_as_candidate(make_settings, data: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    first = main(make_settings(dataset=str(data), run_id="first", promote_if_better=True))
    assert first["promoted"] and first["promotion"] == "no production model recorded yet"
    latest = json.loads((outputs / "latest.json").read_text())
    assert latest["run_id"] == "first" and latest["value"] == first["headline_value"]

    # Production now claims a score no run can beat: the next run stays a candidate.
    (outputs / "latest.json").write_text(json.dumps({**latest, "value": 1.0}))
    with pytest.raises(NotPromoted, match=r"^not promoted: f1_macro=\S+ does not beat production run first"):
        main(make_settings(dataset=str(data), run_id="second", promote_if_better=True))
    assert (outputs / "second" / "_COMPLETE.json").is_file()  # published, as a candidate
    assert json.loads((outputs / "latest.json").read_text())["run_id"] == "first"
    manifest = json.loads((outputs / "second" / "run_manifest.json").read_text())
    assert manifest["promotion"]["promoted"] is False and manifest["promotion"]["production"]["run_id"] == "first"

    # A production score it beats: promoted, and latest moves.
    (outputs / "latest.json").write_text(json.dumps({**latest, "value": 0.0}))
    third = main(make_settings(dataset=str(data), run_id="third", promote_if_better=True))
    assert third["promoted"]
    assert json.loads((outputs / "latest.json").read_text())["run_id"] == "third"


def test_threshold_not_reached_exits_7_through_the_cli(clean_env, data: Path, tmp_path: Path, tiny_model: Path) -> None:
    for name, value in ft_env(
        tmp_path, tiny_model, data, FT_RUN_ID="gated", FT_EPOCHS="1", FT_PROMOTE_MIN="1.01"
    ).items():
        clean_env.setenv(name, value)
    assert cli.run([]) == ExitCode.NOT_PROMOTED
    assert (tmp_path / "outputs" / "gated" / "_COMPLETE.json").is_file()
    assert not (tmp_path / "outputs" / "latest.json").exists()


def test_loss_like_metrics_compare_downwards(make_settings, data: Path, tmp_path: Path) -> None:
    result = main(make_settings(dataset=str(data), run_id="loss", metric_for_best_model="loss", promote_min=100.0))
    assert result["promoted"] and result["headline_metric"] == "loss"


def test_promotion_gate_with_s3_output(make_settings, data: Path, s3: Any, bucket: str) -> None:
    gate = {"dataset": str(data), "output": f"s3://{bucket}/runs", "promote_if_better": True}
    main(make_settings(run_id="one", **gate))
    latest = json.loads(s3.get_object(Bucket=bucket, Key="runs/latest.json")["Body"].read())
    assert latest["run_id"] == "one" and latest["location"] == f"s3://{bucket}/runs/one/"
    s3.put_object(Bucket=bucket, Key="runs/latest.json", Body=json.dumps({**latest, "value": 1.0}).encode())
    with pytest.raises(NotPromoted):
        main(make_settings(run_id="two", **gate))
    assert s3.head_object(Bucket=bucket, Key="runs/two/_COMPLETE.json")
    assert json.loads(s3.get_object(Bucket=bucket, Key="runs/latest.json")["Body"].read())["run_id"] == "one"


def test_gate_with_hub_output_is_a_config_error(make_settings, data: Path) -> None:
    from job.errors import ConfigError

    with pytest.raises(ConfigError, match="FT_PROMOTE_MIN / FT_PROMOTE_IF_BETTER need a local or s3://"):
        main(make_settings(dataset=str(data), output="hf://acme/model", promote_min=0.5))

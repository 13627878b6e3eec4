"""`make bench` end to end on a few rows: every recipe runs and the table is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cpu_bf16_expected

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_runs_every_recipe_and_writes_results(tmp_path: Path) -> None:
    env = {
        **os.environ, "BENCH_TRAIN_ROWS": "16", "BENCH_EVAL_ROWS": "16", "BENCH_GROWTH_ROWS": "32",
        "BENCH_LENGTHS": "64", "BENCH_ACCURACY_ROWS": "24", "BENCH_ACCURACY_EVAL_ROWS": "16",
        "BENCH_OUTPUT": str(tmp_path), "BENCH_WORK": str(tmp_path / "work"),
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads((tmp_path / "results.json").read_text())
    results = document["results"]
    # Where the job picks bf16 (a bf16 GPU, or a CPU with bf16 instructions), a Trainer with bf16 set by hand runs too.
    bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_bf16_expected()
    assert set(results) == {"walkthrough", "tuned", "job"} | ({"tuned-bf16"} if bf16 else set())
    assert results["job"]["precision"] == ("bf16" if bf16 else "no") and results["tuned"]["precision"] == "no"
    assert set(document["ratios"]) == {f"job_vs_{name}" for name in results if name != "job"}
    assert results["walkthrough"]["padding_efficiency"] < results["job"]["padding_efficiency"] <= 1.0
    assert all(r["peak_rss_mib"] > 100 and r["train_samples_per_second"] > 0 for r in results.values())
    assert document["ratios"]["job_vs_walkthrough"]["train_samples_per_second"] > 1.0
    checked = document["accuracy"]["results"]  # every recipe but the slow walkthrough, trained again
    assert set(checked) == set(results) - {"walkthrough"} and document["accuracy"]["eval_rows"] == 16
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["accuracy_standard_error"] <= 0.125 for r in checked.values())
    markdown = (tmp_path / "results.md").read_text()
    assert "Accuracy after 24 rows x 2 epochs (16 evaluation rows)" in markdown
    assert "| train samples/s |" in markdown and f"| precision | no | no |{' bf16 |' if bf16 else ''}" in markdown


@pytest.mark.slow  # five processes, each importing torch: about a minute on 2 cores
def test_gpu_bench_dry_run_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench_gpu.json"
    env = {**os.environ, "BENCH_GPU_OUTPUT": str(out), "BENCH_WORK": str(tmp_path / "work"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert {"machine", "config", "model", "comparison", "mfu", "end_to_end", "failures"} <= set(document)
    assert document["dry_run"] is True and document["machine"]["gpu"] is None and document["failures"] == []
    assert document["model"]["layers"] == 2 and document["model"]["hidden"] == 32
    comparison = document["comparison"]
    assert set(comparison["results"]) == {"tuned-bf16", "job"}  # both training paths ran
    assert comparison["job_vs_tuned_bf16_train_samples_per_second"] > 0
    assert all(len(curve) >= 2 for curve in comparison["loss_curves"].values())
    assert comparison["results"]["tuned-bf16"]["precision"] == "bf16"
    assert comparison["results"]["tuned-bf16"]["optimizer"] == "adamw_torch_fused"
    # On CPU there is no peak to measure against: null, with the reason.
    assert all(r["mfu"] is None and "CPU" in r["reason"] for r in document["mfu"]["per_recipe"].values())
    for name in ("train", "check", "predict"):
        ran = document["end_to_end"][name]
        assert ran["rc"] == 0 and ran["wall_s"] > 0, ran
        assert any(e.get("precision") for e in ran["events"]), ran["events"]
    assert document["end_to_end"]["train"]["training"]["device"] == "cpu"
    assert document["end_to_end"]["predict"]["predicted_rows"] == 16


@pytest.mark.slow  # 4 processes where only the demo's corpus is there (CI), 20 with all five: 1-6 minutes
def test_quality_bench_dry_run_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    env = {**os.environ, "BENCH_WORK": str(tmp_path / "work"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.quality", "--dry-run", "--seeds", "0,1", "--output", str(out)], cwd=ROOT,
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["dry_run"] is True and document["machine"]["cpu"] and document["config"]["seeds"] == [0, 1]
    assert set(document["recipes"]) == {"notebook", "job"}
    datasets = document["datasets"]
    names = {"rotten-tomatoes", "health-tweets", "news-articles", "pang-lee-reviews", "reuters-grain"}
    assert set(datasets) == names and all(d["shape"] and d["origin"] and d["license"] for d in datasets.values())
    # The demo's corpus is always installed; the others need make quality-assets, else they say so.
    ready = {name for name, d in datasets.items() if d["status"] == "ready"}
    assert "rotten-tomatoes" in ready
    assert all("make quality-assets" in datasets[name]["reason"] for name in names - ready)
    runs = [r for r in document["runs"] if r["dataset"] in ready]
    assert len(runs) == len(document["runs"]) == 4 * len(ready) and all(r["status"] == "ok" for r in runs)
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["f1_macro"] <= 1 and r["wall_s"] > 0 for r in runs)
    for r in runs:
        if r["recipe"] == "notebook":
            assert (r["train_rows"], r["test_rows"]) == (32, 16)
        else:  # the same rows; the job holds some of the training rows out for validation
            rows = r["rows"]
            assert rows["test"] == 16 and rows["train"] + rows["validation"] == 32 and rows["validation"] > 0
            assert r["schedule"]["epochs"] and r["precision"] in {"no", "bf16"}
    for name in ready:
        assert set(datasets[name]["samples"]) == {"0", "1"}
        found = document["summary"][name]
        for recipe in ("notebook", "job"):
            assert all(found[recipe][m]["n"] == 2 and found[recipe][m]["se"] is not None for m in found[recipe])
        assert -1 <= found["job_minus_notebook"]["accuracy"]["mean"] <= 1 and found["paired_seeds"] == [0, 1]
        assert found["wall_ratio_job_to_notebook"]["mean"] > 0
    markdown = out.with_suffix(".md").read_text()
    assert "(dry run: numbers mean nothing)" in markdown and markdown.count("| job − notebook |") == len(ready)

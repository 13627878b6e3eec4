"""`make bench` end to end on a few rows: every recipe runs and the table is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_runs_every_recipe_and_writes_results(tmp_path: Path) -> None:
    env = {
        **os.environ, "BENCH_TRAIN_ROWS": "16", "BENCH_EVAL_ROWS": "16", "BENCH_GROWTH_ROWS": "32",
        "BENCH_LENGTHS": "64", "BENCH_OUTPUT": str(tmp_path), "BENCH_WORK": str(tmp_path / "work"),
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads((tmp_path / "results.json").read_text())
    results = document["results"]
    assert set(results) == {"walkthrough", "tuned", "job"}
    assert results["walkthrough"]["padding_efficiency"] < results["job"]["padding_efficiency"] <= 1.0
    assert all(r["peak_rss_mib"] > 100 and r["train_samples_per_second"] > 0 for r in results.values())
    assert document["ratios"]["job_vs_walkthrough"]["train_samples_per_second"] > 1.0
    assert "| train samples/s |" in (tmp_path / "results.md").read_text()

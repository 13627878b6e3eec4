"""One recipe on one seed's rows, in a process of its own, timed from start to exit.

Both recipes run from an empty working folder (no `.env` can leak settings into the job),
with FT_* variables stripped from the environment, offline, and with a Hugging Face home
of their own (no dataset cache shared between the two). The repository root goes on
PYTHONPATH, so this checkout's job is the one measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ("notebook", "job")
RESULT_PREFIX = "QUALITY_RESULT "
KEPT = ("metrics.json", "run_manifest.json")  # of the job's output; the model itself is deleted
# The schedule the job chose for itself: its defaults may depend on the data, so each run says.
SCHEDULE = ("FT_EPOCHS", "FT_BATCH_SIZE", "FT_LEARNING_RATE", "FT_WARMUP_RATIO", "FT_WEIGHT_DECAY", "FT_MAX_LENGTH")


def environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FT_")}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(PYTHONPATH=path, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", HF_HOME=str(folder / "hf-home"))  # fmt: skip
    for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_TOKEN_PATH"):  # HF_HOME decides
        env.pop(name, None)
    return env


def command(
    recipe: str, *, model: str, data: Path, seed: int, folder: Path, run_id: str, job_env: dict[str, str] | None = None
) -> tuple[list[str], dict]:
    """argv and environment of one recipe run; `job_env`: settings the job gets beyond its defaults."""
    env = environment(folder)
    if recipe == "notebook":
        config = {"model": model, "data": str(data), "seed": seed, "output": str(folder / "model")}
        return [sys.executable, "-m", "bench.quality.notebook", json.dumps(config)], env
    # The job with its defaults: only what says which model, which rows, which seed and where.
    env.update(FT_MODEL=model, FT_DATASET=str(data), FT_SEED=str(seed), FT_OUTPUT=str(folder / "outputs"),
               FT_RUN_ID=run_id, FT_CACHE_DIR=str(folder / "cache"))  # fmt: skip
    env.update(job_env or {})
    return [sys.executable, "-m", "job"], env


def run(
    recipe: str, *, model: str, data: Path, seed: int, folder: Path, job_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Accuracy, macro-F1 and wall time of one run; `status` is `failed` with the log's
    tail when the process fails, so one bad run does not lose the others."""
    if folder.exists():
        shutil.rmtree(folder)  # a run interrupted earlier leaves no stale outputs behind
    folder.mkdir(parents=True)
    run_id = f"{data.name}-{recipe}"
    argv, env = command(recipe, model=model, data=data, seed=seed, folder=folder, run_id=run_id, job_env=job_env)
    log = folder / "log.txt"
    started = time.monotonic()
    with log.open("w") as handle:
        done = subprocess.run(argv, cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    record: dict[str, Any] = {"wall_s": round(time.monotonic() - started, 2), "exit_code": done.returncode}
    try:
        if done.returncode != 0:
            raise RuntimeError(f"exit code {done.returncode}")
        record.update(_notebook_result(log) if recipe == "notebook" else _job_result(folder / "outputs" / run_id, log))
        record["status"] = "ok"
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        record.update(status="failed", error=f"{exc}; log {log}: ...{log.read_text()[-1500:]}")
    _tidy(folder, run_id)
    return record


def _notebook_result(log: Path) -> dict[str, Any]:
    lines = [x for x in log.read_text().splitlines() if x.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError("the recipe printed no result line")
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def _job_result(run: Path, log: Path) -> dict[str, Any]:
    """The test split's scores from the job's metrics.json (<FT_OUTPUT>/<run id>/), and
    what the job chose by default: from its run manifest, and its class weights from the
    log (JSON lines when not on a terminal)."""
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "run_manifest.json").read_text())
    test, training, settings = metrics["test"], manifest.get("training", {}), manifest.get("settings", {})
    return {
        "accuracy": test["accuracy"],
        "f1_macro": test["f1_macro"],
        "train_runtime_s": metrics["train"]["train_runtime_s"],
        "steps": metrics["train"]["steps"],
        "rows": manifest.get("data", {}).get("rows"),  # train, validation (held out by the job), test
        "schedule": {name.removeprefix("FT_").lower(): settings.get(name) for name in SCHEDULE},
        "precision": training.get("precision"),
        "class_weights": _event(log, "train.class_weights").get("weights"),
        "decision_thresholds": metrics.get("decision_thresholds"),
    }


def _event(log: Path, name: str) -> dict[str, Any]:
    for line in log.read_text().splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                return event
    return {}


def _tidy(folder: Path, run_id: str) -> None:
    """Keeps the log and the job's metrics and manifest; the saved models (90 MB each for
    MiniLM), caches and Hugging Face home go."""
    run = folder / "outputs" / run_id
    for name in KEPT:
        if (run / name).is_file():
            shutil.copy(run / name, folder / name)
    for name in ("outputs", "model", "cache", "hf-home"):
        shutil.rmtree(folder / name, ignore_errors=True)

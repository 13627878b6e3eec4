"""The time guard: every phase runs in its own process under a time limit cut to what
the whole budget has left, and a phase that fails or overruns is recorded, not fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The job's log events worth keeping: where it ran and in what precision, and how it ended.
KEPT_FIELDS = ("event", "level", "device", "precision", "exit_code", "error", "steps", "rows")


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def allot(self, limit: float, keep: float = 0.0) -> float:
        """The seconds a phase may take: its own limit, less what the phases after it keep."""
        return max(0.0, min(limit, self.left() - keep))


def run(argv: list[str], env: dict[str, str], limit: float) -> dict[str, Any]:
    """Runs `argv` from the repository root; exit code, wall time and output tails.
    rc None: it ran past `limit` and was killed; `skipped`: no time was left to start it."""
    if limit < 5:
        return {"rc": None, "wall_s": 0.0, "limit_s": round(limit, 1), "skipped": "time budget spent"}
    started = time.monotonic()
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    try:
        done = subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=limit, check=False)
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = None, _text(exc.stdout), _text(exc.stderr)
    return {"rc": rc, "wall_s": round(time.monotonic() - started, 2), "limit_s": round(limit, 1),
            "timed_out": rc is None, "stdout": stdout, "stderr": stderr}  # fmt: skip


def python(module_args: list[str], env: dict[str, str], limit: float) -> dict[str, Any]:
    return run([sys.executable, "-m", *module_args], env, limit)


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def events(output: str) -> list[dict[str, Any]]:
    """The job's JSON log lines that name a device or precision, warn, or fail."""
    found = []
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if "device" in record or "precision" in record or record.get("level") in ("warning", "error", "critical"):
            found.append({k: record[k] for k in KEPT_FIELDS if k in record})
    return found[:40]


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """What goes in the JSON: the output itself only where the phase failed."""
    kept = {k: v for k, v in result.items() if k not in ("stdout", "stderr")}
    kept["ok"] = result.get("rc") == 0
    if not kept["ok"] and "skipped" not in result:
        kept["output_tail"] = (result.get("stderr", "")[-3000:] + result.get("stdout", "")[-1500:]).strip()
    return kept


def recipe_result(result: dict[str, Any]) -> dict[str, Any] | None:
    """The BENCH_RESULT line of a bench.recipes run, if it finished."""
    for line in result.get("stdout", "").splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line.removeprefix("BENCH_RESULT "))
    return None

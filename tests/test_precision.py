"""Mixed precision on CPU: `auto` picks bf16 exactly where the CPU has bf16
instructions, and a bf16 run trains, verifies and saves full-precision weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import cpu_bf16_expected, ft_env, rows, run_cli, write
from safetensors.torch import load_file

from job.device import cpu_has_native_bf16
from job.device import precision as resolve_precision


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks by the GPU when there is one")
def test_auto_picks_bf16_on_cpu_exactly_where_the_kernel_reports_bf16_instructions() -> None:
    native = cpu_bf16_expected()
    assert cpu_has_native_bf16() is native
    assert resolve_precision("auto") == ("bf16" if native else "no")
    assert resolve_precision("no") == "no"


@pytest.mark.slow
def test_a_bf16_run_on_cpu_learns_verifies_and_saves_fp32_weights(tmp_path: Path, tiny_model: Path) -> None:
    folder = tmp_path / "data"
    write(folder / "train.jsonl", rows("binary", 240))
    env = ft_env(
        tmp_path, tiny_model, folder, FT_OUTPUT=str(tmp_path / "out"), FT_RUN_ID="bf16", FT_EPOCHS="4",
        FT_LEARNING_RATE="3e-3", FT_WARMUP_RATIO="0", FT_BATCH_SIZE="16", FT_MIXED_PRECISION="bf16",
    )  # fmt: skip
    result, events = run_cli(env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Where bf16 is emulated the run still works, but says it is slow.
    assert any(e["event"] == "precision.emulated" for e in events) is not cpu_bf16_expected()
    run = tmp_path / "out" / "bf16"

    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["training"]["precision"] == "bf16"
    # The reload runs in fp32, so the check allows bf16's rounding, and no label may flip.
    assert manifest["verification"]["tolerance"] == 3e-2 and manifest["verification"]["label_mismatches"] == 0
    assert json.loads((run / "metrics.json").read_text())["headline"]["value"] >= 0.9  # it learned
    # Autocast computes in bf16 but keeps the weights, and so the saved model, in fp32.
    assert {tensor.dtype for tensor in load_file(run / "model.safetensors").values()} == {torch.float32}

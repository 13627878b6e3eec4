"""Model FLOPs utilisation, counted on real (unpadded) tokens: the work the data needs,
not the padding a recipe chose to compute."""

from __future__ import annotations

from typing import Any

FORMULA = (
    "training FLOPs per sample = (6 * N * sum(s_i) + 12 * L * h * sum(s_i^2)) / rows, over the training rows' "
    "real token counts s_i (truncated to max_length); N = non-embedding parameters (embedding lookups are not "
    "matmuls), L layers, h hidden size (the second term: attention scores and their weighted sum, forward and "
    "backward); achieved FLOP/s = that x train samples/s; MFU = achieved / peak dense bf16 FLOP/s of the GPU"
)

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, matched on the
# name torch reports; the most specific name first.
PEAKS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("A100", 312e12),
)


def peak_bf16(device_name: str | None) -> tuple[float | None, str]:
    if not device_name:
        return None, "no GPU: MFU is defined against a GPU's tensor-core peak; on CPU it is meaningless"
    for key, peak in PEAKS:
        if key.lower() in device_name.lower():
            return peak, f"{key} dense bf16 peak, {peak / 1e12:.0f} TFLOP/s"
    return None, f"no known bf16 peak for {device_name!r}"


def flops_per_sample(lengths: list[int], model: dict[str, Any]) -> float:
    linear = 6 * model["non_embedding_parameters"] * sum(lengths)
    attention = 12 * model["layers"] * model["hidden"] * sum(s * s for s in lengths)
    return (linear + attention) / len(lengths)


def mfu(samples_per_second: float | None, per_sample: float, peak: float | None) -> float | None:
    if not samples_per_second or peak is None:
        return None
    return samples_per_second * per_sample / peak

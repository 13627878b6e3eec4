"""The device policy, decided in one place for training, evaluation, check and predict:
device, precision, padding multiple, evaluation batch size, data-loader workers."""

from __future__ import annotations

import torch

from job.errors import ConfigError
from job.logs import get_logger
from job.settings import Settings

log = get_logger("job.device")


def cuda() -> bool:
    return torch.cuda.is_available()


def device() -> torch.device:
    return torch.device("cuda" if cuda() else "cpu")


def device_name(*, count: bool = False) -> str:
    """`cpu`, or the GPU's name (with `count`, how many the process sees)."""
    if not cuda():
        return "cpu"
    return f"cuda ({torch.cuda.get_device_name(0)}" + (f" x{torch.cuda.device_count()})" if count else ")")


def precision(setting: str) -> str:
    """`no`, `bf16` or `fp16` for FT_MIXED_PRECISION, checked against the hardware."""
    on_gpu = cuda()
    if setting == "auto":
        if not on_gpu:
            return "bf16" if cpu_has_native_bf16() else "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if setting == "fp16" and not on_gpu:
        raise ConfigError("FT_MIXED_PRECISION=fp16 needs a CUDA GPU; use bf16, no or auto on CPU")
    if setting == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError("FT_MIXED_PRECISION=bf16 is not supported by this GPU; use fp16 or auto")
    if setting == "bf16" and not on_gpu and not cpu_has_native_bf16():
        # Measured: 17x slower than fp32 per MiniLM step with oneDNN limited to AVX2 (bench/README.md).
        log.warning(
            "precision.emulated",
            detail="FT_MIXED_PRECISION=bf16 on a CPU without bf16 instructions (AVX512-BF16) is emulated and "
            "many times slower than fp32; use auto or no",
        )
    return setting


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16: AMD Zen 4 and
    later, Intel Cooper Lake, Sapphire Rapids and later), where bf16 autocast halves
    the time of a MiniLM training step (bench/README.md)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private; absent before torch 2.3
    return bool(probe and probe())


def autocast_dtype(chosen: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(chosen)


def tf32() -> bool | None:
    """TF32 matmuls on Ampere and later: fp32 accuracy where bf16/fp16 autocast does not reach."""
    return True if cuda() and torch.cuda.get_device_capability()[0] >= 8 else None


def pad_multiple() -> int | None:
    """Batches are padded to their longest row; on GPU up to a multiple of 8, which suits
    tensor cores. On CPU a multiple would only add padding."""
    return 8 if cuda() else None


def eval_batch_size(settings: Settings) -> int:
    # Unset batch size: `predict`, which has no training rows to choose it from.
    return settings.eval_batch_size or 2 * (settings.batch_size or 32)


def dataloader_workers(settings: Settings) -> int:
    """FT_DATALOADER_WORKERS; by default 2 on GPU (collation overlaps the step) and 0 on
    CPU (the cores are busy with the step itself)."""
    if settings.dataloader_workers is not None:
        return settings.dataloader_workers
    return 2 if cuda() else 0

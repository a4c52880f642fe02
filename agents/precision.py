"""Whether a device computes bfloat16 natively, where bf16 weights and autocast pay off.

A CUDA GPU that supports bf16, or a CPU with AVX-512 BF16 or AMX tiles: there bf16 matmuls
run faster than float32. A CPU without them (AVX2 only, say) emulates bf16 arithmetic, and a
bf16 matmul there ran 36x slower than float32 (BENCHMARKS.md, "Precision on the CPU").
"""

from __future__ import annotations

import torch


def native_bf16(device: str | torch.device) -> bool:
    """True where ``device`` ("cpu", "cuda", "cuda:1", ...) has bf16 arithmetic in hardware."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_bf16_if_fast(dtype: str, device: str | torch.device) -> str:
    """A dtype name with ``"bf16_if_fast"`` resolved for ``device``: ``"bfloat16"`` where it computes
    bf16 natively, ``"float32"`` elsewhere (emulated bf16 is slower); any other name unchanged."""
    if dtype == "bf16_if_fast":
        return "bfloat16" if native_bf16(device) else "float32"
    return dtype

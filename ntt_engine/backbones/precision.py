"""Mixed precision on GPUs: bf16 autocast (fp16 where bf16 is unsupported); CPUs always run fp32."""
from __future__ import annotations

import contextlib

import torch


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """`precision`: "fp32" (off), "bf16", "fp16", or "auto" (bf16/fp16 on CUDA, off elsewhere)."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    if precision == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)

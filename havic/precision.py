"""Numeric precision of inference: fp32, or bf16 / fp16 autocast with low-precision matmul weights.

Under ``torch.autocast`` the matrix products and attention run in the low precision while the
residual stream, LayerNorms and losses stay float32. Autocast casts every float32 Linear and
convolution weight to the low precision on every forward pass; for inference,
:func:`cast_matmul_weights` does that cast once (bit-identical results, half the weight memory, no
per-pass copies). The same two steps are the fast path on a GPU (bf16 or fp16 tensor cores) and
on a CPU with AVX512-BF16 / AMX (bf16 matrix products about 2.3x faster than fp32 on this
project's reference machine). ``tools/benchmark.py`` reports the logit difference to fp32.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["PRECISIONS", "autocast", "cast_matmul_weights", "check_precision", "prepare_for_inference"]

PRECISIONS: Mapping[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for fp32); a ValueError for an unknown name or fp16 off CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    if precision == "fp16" and device_type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (got {device_type}); use bf16 on a CPU")
    return PRECISIONS[precision]


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for "bf16"/"fp16", a no-op context for "fp32"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def cast_matmul_weights(module: nn.Module, dtype: torch.dtype) -> int:
    """Store the weights and biases of every Linear and convolution below ``module`` in ``dtype``.

    An inference fast path for ``torch.autocast(dtype=dtype)``: autocast casts these float32
    tensors to ``dtype`` in every forward pass; casting them once gives bit-identical results (the
    same rounding, done once) without the per-pass copies, and halves their memory. LayerNorms,
    tokens, positions and the q/v biases stay float32, so the residual stream does too. Only for
    inference under autocast (a float32 input meeting a ``dtype`` weight outside autocast raises),
    and not for training (the optimizer would update low-precision weights).

    Returns:
        The number of tensors converted.
    """
    n = 0
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            for p in (m.weight, m.bias):
                if p is not None and p.dtype != dtype:
                    p.data = p.data.to(dtype)
                    n += 1
    return n


def prepare_for_inference(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """Put ``model`` in eval mode on ``device`` and, for bf16/fp16, store its matmul weights in that dtype.

    Changes ``model`` in place (and returns it): after a low-precision preparation it must be run
    under :func:`autocast` with the same precision.
    """
    dtype = check_precision(precision, device.type)
    model = model.eval().to(device)
    if dtype is not None:
        cast_matmul_weights(model, dtype)
    return model

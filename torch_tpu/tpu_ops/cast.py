"""``tpu.cast``: convert between storage dtypes.

Semantics: float -> float rounds to nearest even (IEEE, as ``Tensor.to``; f32 -> bf16 keeps the top 16 bits
after rounding); float -> int truncates toward zero; bool/int -> float is exact where representable.
"""

from __future__ import annotations

import torch

from torch_tpu.tpu_ops._common import OpDef


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``y = x.to(dtype)`` (always a new tensor)."""
    y = x.to(dtype)
    return y.clone() if y is x else y


def _cast_fake(x, dtype):
    return x.new_empty(x.shape, dtype=dtype)


OPS = (OpDef("cast", cast, _cast_fake),)

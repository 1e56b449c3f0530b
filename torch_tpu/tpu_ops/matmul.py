"""Matrix products: ``tpu.linear`` (weight ``[N, K]``, optional bias, fused activation) and ``tpu.matmul``
(batched, broadcast batch dimensions).

Semantics (f32 accumulation, one rounding)::

    linear: y[..., n] = round(act(sum_k f32(x[..., k]) * f32(w[n, k]) + f32(b[n])))
    matmul: y[b..., m, n] = round(sum_k f32(a[b..., m, k]) * f32(b[b..., k, n]))   (batch dims broadcast)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from torch_tpu.tpu_ops._common import OpDef, broadcast_shape, finish, up
from torch_tpu.tpu_ops.conv import apply_fused_activation


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], act: str = "none",
           act_min: float = 0.0, act_max: float = 0.0) -> torch.Tensor:
    """Fully connected layer ``y = act(x @ w.T + b)``; ``x: [..., K]``, ``w: [N, K]``, ``b: [N]``."""
    y = F.linear(up(x), up(weight), None if bias is None else up(bias))
    return finish(apply_fused_activation(y, act, act_min, act_max), x.dtype)


def _linear_fake(x, weight, bias, act="none", act_min=0.0, act_max=0.0):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched matrix product ``[..., M, K] x [..., K, N] -> [..., M, N]``; both operands have rank >= 2
    and their batch dimensions broadcast."""
    return finish(torch.matmul(up(a), up(b)), a.dtype)


def _matmul_fake(a, b):
    batch = broadcast_shape(a.shape[:-2], b.shape[:-2])
    return a.new_empty((*batch, a.shape[-2], b.shape[-1]))


OPS = (
    OpDef("linear", linear, _linear_fake),
    OpDef("matmul", matmul, _matmul_fake),
)

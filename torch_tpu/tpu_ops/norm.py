"""Normalisations: ``tpu.softmax``, ``tpu.log_softmax``, ``tpu.layer_norm``, ``tpu.scale_shift``.

Semantics (f32, one rounding)::

    softmax(x, dim):      m = max(x); e = exp(x - m); y = round(e / sum(e))
    log_softmax(x, dim):  y = round((x - m) - log(sum(exp(x - m))))
    layer_norm(x, w, b, k, eps) over the last k dims:
                          mu = mean(x); var = mean((x - mu)^2); y = round((x - mu) * rsqrt(var + eps) * w + b)
    scale_shift(x, s, t, dim): y = round(f32(f32(x) * f32(s[c])) + f32(t[c]))  (no FMA), c the index along ``dim``
                          (inference batch norm: s = gamma / sqrt(var + eps), t = beta - mean * s)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from torch_tpu.tpu_ops._common import OpDef, fake_like, finish, up


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax along ``dim`` (max-subtracted, formula in the module docstring)."""
    return finish(torch.softmax(up(x), dim), x.dtype, x)


def log_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Log-softmax along ``dim``."""
    return finish(torch.log_softmax(up(x), dim), x.dtype, x)


def layer_norm(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], num_dims: int,
               eps: float) -> torch.Tensor:
    """Layer norm over the last ``num_dims`` dims, optional affine ``weight``/``bias`` of that shape."""
    shape = list(x.shape[x.dim() - num_dims:])
    y = F.layer_norm(up(x), shape, None if weight is None else up(weight), None if bias is None else up(bias), eps)
    return finish(y, x.dtype, x)


def scale_shift(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Per-channel affine ``y = x * scale[c] + shift[c]`` along ``dim`` (1-D ``scale``/``shift``)."""
    view = [1] * x.dim()
    view[dim] = -1
    y = up(x) * up(scale).reshape(view) + up(shift).reshape(view)
    return finish(y, x.dtype, x)


OPS = (
    OpDef("softmax", softmax, fake_like),
    OpDef("log_softmax", log_softmax, fake_like),
    OpDef("layer_norm", layer_norm, fake_like),
    OpDef("scale_shift", scale_shift, fake_like),
)

"""Reductions over a list of dims: ``tpu.reduce_sum|mean|max|min`` (floats) and ``tpu.reduce_any`` (bool).

Semantics: ``y = round(R(f32(x)) over dims)`` with R = sum, mean (sum / count), max, min; ``keepdim`` keeps
the reduced dims with size 1. ``reduce_any`` is the logical OR of a bool mask.
"""

from __future__ import annotations

from typing import Callable

import torch

from torch_tpu.tpu_ops._common import OpDef, finish, up


def _amax(x, dims, keepdim):
    return torch.amax(x, dims, keepdim)


def _amin(x, dims, keepdim):
    return torch.amin(x, dims, keepdim)


REDUCTIONS: dict[str, Callable] = {
    "sum": lambda x, d, k: torch.sum(x, d, k),
    "mean": lambda x, d, k: torch.mean(x, d, k),
    "max": _amax,
    "min": _amin,
}


def _reduced_shape(shape, dims, keepdim):
    nd = len(shape)
    dd = {d % nd for d in dims} if dims else set(range(nd))
    return [1 if i in dd else s for i, s in enumerate(shape) if keepdim or i not in dd]


def _make_reduce(name: str, fn: Callable) -> OpDef:
    def impl(x: torch.Tensor, dims: list[int], keepdim: bool = False) -> torch.Tensor:
        return finish(fn(up(x), dims, keepdim), x.dtype, x)

    def fake(x, dims, keepdim=False):
        return x.new_empty(_reduced_shape(x.shape, dims, keepdim))

    impl.__name__ = f"reduce_{name}"
    impl.__doc__ = f"``{name}`` over ``dims`` in f32, rounded once."
    return OpDef(f"reduce_{name}", impl, fake)


def reduce_any(x: torch.Tensor, dims: list[int], keepdim: bool = False) -> torch.Tensor:
    """Logical OR of a bool mask over ``dims``."""
    y = x
    for d in sorted({d % x.dim() for d in dims}, reverse=True):
        y = torch.any(y, d, keepdim)
    return y.clone() if y is x else y


def _reduce_any_fake(x, dims, keepdim=False):
    return x.new_empty(_reduced_shape(x.shape, dims, keepdim), dtype=torch.bool)


OPS = (
    *(_make_reduce(n, f) for n, f in REDUCTIONS.items()),
    OpDef("reduce_any", reduce_any, _reduce_any_fake),
)

"""Reductions: MEAN, SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD over constant axes (``keep_dims`` option).

``y = reduce(x, axes)``, reshaped to the output tensor's shape (which already says whether dims are kept).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from torch_tpu.frontends.tflite.common import axis
from torch_tpu.frontends.tflite.context import OpContext, OpFn


def _amax(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.amax(x, dims, keepdim)


def _amin(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    return torch.amin(x, dims, keepdim)


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, d, keepdim)
    return x


def convert_reduce(ctx: OpContext, fn: Callable[[torch.Tensor, list[int], bool], torch.Tensor]) -> OpFn:
    """``y = fn(x, axes, keep_dims)``."""
    rank = len(ctx.in_shape(0))
    dims = sorted({axis(ctx, a, rank) for a in ctx.const_ints(1)})
    keep = bool(ctx.options.KeepDims()) if ctx.op.options is not None else False
    out_shape = tuple(ctx.out_shape())
    name = ctx.op.op.lower()

    def reduce(v: list) -> torch.Tensor:
        if not dims:
            return v[0]
        y = fn(v[0], dims, keep)
        return y if tuple(y.shape) == out_shape else y.reshape(out_shape)

    reduce.__name__ = name
    return reduce


CONVERTERS = {
    "MEAN": partial(convert_reduce, fn=torch.mean),
    "SUM": partial(convert_reduce, fn=torch.sum),
    "REDUCE_MAX": partial(convert_reduce, fn=_amax),
    "REDUCE_MIN": partial(convert_reduce, fn=_amin),
    "REDUCE_PROD": partial(convert_reduce, fn=_prod),
}

"""Pooling (MAX / AVE, global pooling) with Caffe's output-size rounding and clipping.

Per spatial axis (input ``H``, kernel ``k``, pad ``p``, stride ``s``)::

    out = ceil((H + 2p - k) / s) + 1        (round_mode CEIL, the default; FLOOR uses floor)
    if p > 0 and (out - 1) * s >= H + p:    out -= 1      # the last window must start inside H + p

AVE divides each window by its size clipped to the padded extent ``[-p, H + p)`` (padding counts,
the overhang past ``H + p`` does not); MAX ignores padding. PyTorch's ``max_pool2d`` / ``avg_pool2d``
with ``ceil_mode=True, count_include_pad=True`` implement the same rules, except that PyTorch also
clips when ``p == 0`` -- that only matters when the last window starts past the input, where Caffe
itself reads no element (refused here). PyTorch limits ``p <= k/2``; larger pads are made explicit
(``-inf`` or ``0``), the output cut to Caffe's size.
"""

from __future__ import annotations

import math

import torch.nn.functional as F

from torch_tpu.frontends.caffe.context import Converted, LayerContext, single


def caffe_pool_size(size: int, k: int, p: int, s: int, ceil: bool = True) -> int:
    """Caffe's pooled output size along one axis (formula in the module docstring)."""
    span = size + 2 * p - k
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def _torch_size(size: int, k: int, p: int, s: int, ceil: bool) -> int:
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _hw(ctx: LayerContext, p, name: str, default: int | None) -> tuple[int, int]:
    has_h, has_w = p.HasField(f"{name}_h"), p.HasField(f"{name}_w")
    single_field = {"kernel": "kernel_size"}.get(name, name)
    if has_h or has_w:
        if not (has_h and has_w):
            raise ctx.error(f"{name}_h and {name}_w must be given together")
        if p.HasField(single_field):
            raise ctx.error(f"give either {single_field} or {name}_h/{name}_w, not both")
        return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
    if not p.HasField(single_field) and default is None:
        raise ctx.error(f"{single_field} (or {name}_h and {name}_w) is required")
    v = int(getattr(p, single_field))
    return v, v


def convert_pooling(ctx: LayerContext) -> Converted:
    """Pooling -> ``max_pool2d`` / ``avg_pool2d`` (formulas in the module docstring)."""
    ctx.expect_bottoms(1)
    if len(ctx.layer.tops) > 1:
        raise ctx.unsupported("a second top (the max-pooling mask) is not supported")
    ctx.expect_tops(1)
    ctx.expect_blobs(0)
    p = ctx.param("pooling_param")
    if len(ctx.shape) != 4:
        raise ctx.unsupported(f"a {len(ctx.shape)}-D bottom: only 2-D (N, C, H, W) pooling is supported")
    method = p.pool  # 0 MAX, 1 AVE, 2 STOCHASTIC
    if method not in (0, 1):
        raise ctx.unsupported("pool: STOCHASTIC is a training-time method")
    H, W = ctx.shape[2:]
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
            raise ctx.error("global_pooling takes no kernel size")
        kernel, stride = (H, W), (1, 1)
        pad = _hw(ctx, p, "pad", 0)
        if pad != (0, 0):
            raise ctx.error("global_pooling requires pad 0")
    else:
        kernel = _hw(ctx, p, "kernel", None)
        stride = _hw(ctx, p, "stride", 1)
        pad = _hw(ctx, p, "pad", 0)
    if min(kernel) < 1 or min(stride) < 1:
        raise ctx.error(f"kernel {kernel} and stride {stride} must be >= 1")
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise ctx.error(f"pad {pad} must be smaller than the kernel {kernel}")
    ceil = p.round_mode == 0
    out = tuple(caffe_pool_size(n, k, q, s, ceil) for n, k, q, s in zip((H, W), kernel, pad, stride))
    if min(out) < 1:
        raise ctx.error(f"kernel {kernel} is larger than the padded input {H + 2 * pad[0]}x{W + 2 * pad[1]}")
    for n, k, q, s, o in zip((H, W), kernel, pad, stride, out):
        if (o - 1) * s - q >= n:
            raise ctx.unsupported(f"the last pooling window starts past the input (size {n}, kernel {k}, "
                                  f"stride {s}, pad {q}): Caffe reads no element there")
    implicit = all(2 * q <= k for q, k in zip(pad, kernel))
    is_max = method == 0

    def pool(x):
        if is_max:
            return F.max_pool2d(x, kernel, stride, pad if implicit else 0, 1, ceil)
        return F.avg_pool2d(x, kernel, stride, pad if implicit else 0, ceil, True)

    if implicit:
        torch_out = tuple(_torch_size(n, k, q, s, ceil) for n, k, q, s in zip((H, W), kernel, pad, stride))
        if torch_out != out:
            raise ctx.unsupported(f"output size {out} differs from PyTorch's {torch_out}")

        def pooling(xs, w):
            return pool(xs[0])
    else:
        fill = float("-inf") if is_max else 0.0

        def pooling(xs, w):
            x = F.pad(xs[0], (pad[1], pad[1], pad[0], pad[0]), value=fill)
            return pool(x)[:, :, :out[0], :out[1]]

    return single(pooling)

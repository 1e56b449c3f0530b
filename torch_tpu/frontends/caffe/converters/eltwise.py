"""Eltwise: SUM (with per-bottom coefficients), PROD, MAX over two or more same-shaped bottoms.

``SUM: y = sum_i c_i x_i`` (``c_i = 1`` without ``coeff``); ``PROD: y = prod_i x_i``; ``MAX: y = max_i x_i``.
A coefficient of 1 emits a plain ``add``; -1 emits ``sub``.
"""

from __future__ import annotations

import torch

from torch_tpu.frontends.caffe.context import Converted, LayerContext, single

_OPS = {0: "PROD", 1: "SUM", 2: "MAX"}


def convert_eltwise(ctx: LayerContext) -> Converted:
    """Eltwise -> a chain of ``add``/``sub``/``mul``/``maximum``."""
    ctx.expect_bottoms(2, 1 << 30)
    ctx.expect_tops(1)
    ctx.expect_blobs(0)
    p = ctx.param("eltwise_param")
    op = _OPS.get(p.operation)
    if op is None:
        raise ctx.unsupported(f"operation {p.operation}")
    n = len(ctx.layer.bottoms)
    for i, s in enumerate(ctx.bottom_shapes[1:], 1):
        if s != ctx.shape:
            raise ctx.error(f"bottom {i} has shape {list(s)}, bottom 0 has {list(ctx.shape)}")
    coeff = [float(c) for c in p.coeff]
    if coeff and op != "SUM":
        raise ctx.error(f"coeff is only allowed for SUM, not {op}")
    if coeff and len(coeff) != n:
        raise ctx.error(f"{len(coeff)} coefficients for {n} bottoms")
    coeff = coeff or [1.0] * n

    def scaled(x, c):
        return x if c == 1.0 else x * c

    def eltwise(xs, w):
        if op == "PROD":
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return y
        if op == "MAX":
            y = xs[0]
            for x in xs[1:]:
                y = torch.maximum(y, x)
            return y
        y = scaled(xs[0], coeff[0])
        for x, c in zip(xs[1:], coeff[1:]):
            y = y - x if c == -1.0 else y + scaled(x, c)
        return y

    return single(eltwise)

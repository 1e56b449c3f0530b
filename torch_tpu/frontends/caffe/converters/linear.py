"""InnerProduct (fully connected), with ``axis`` and ``transpose``.

``y = reshape(x, x.shape[:axis] + (K,)) @ W^T + b`` with ``K = prod(x.shape[axis:])``; the weight blob is
``(num_output, K)``, or ``(K, num_output)`` when ``transpose: true``. The output shape is
``x.shape[:axis] + (num_output,)``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F

from torch_tpu.frontends.caffe.context import Converted, LayerContext, single


def convert_inner_product(ctx: LayerContext) -> Converted:
    """InnerProduct -> ``F.linear`` on the input flattened from ``axis``."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    p = ctx.param("inner_product_param")
    if not p.HasField("num_output") or p.num_output < 1:
        raise ctx.error("num_output must be given and positive")
    axis = ctx.axis(p.axis, len(ctx.shape))
    k = math.prod(ctx.shape[axis:])
    n = int(p.num_output)
    ctx.expect_blobs(2 if p.bias_term else 1)
    weight = ctx.blob(0, (k, n)).t().contiguous() if p.transpose else ctx.blob(0, (n, k))
    weights = {"weight": weight}
    if p.bias_term:
        weights["bias"] = ctx.blob(1, (n,))
    lead = tuple(ctx.shape[:axis])

    def inner_product(xs, w):
        x = xs[0].reshape(*lead, k) if axis != len(ctx.shape) - 1 else xs[0]
        return F.linear(x, w["weight"], w.get("bias"))

    return single(inner_product, weights)

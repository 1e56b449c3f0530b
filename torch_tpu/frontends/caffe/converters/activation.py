"""Element-wise activations and Softmax.

* ReLU: ``y = max(x, 0) + negative_slope * min(x, 0)`` (``leaky_relu`` when the slope is non-zero);
* PReLU: the same with a learned slope per channel (``channel_shared``: one slope);
* Sigmoid ``1/(1+e^-x)``, TanH, AbsVal ``|x|``, ELU ``x if x > 0 else alpha(e^x - 1)``;
* Power: ``y = (shift + scale * x) ^ power``;
* Softmax over ``axis``: ``y_i = e^{x_i} / sum_j e^{x_j}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_tpu.frontends.caffe.context import Converted, LayerContext, single


def _unary(ctx: LayerContext) -> None:
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    ctx.expect_blobs(0)


def convert_relu(ctx: LayerContext) -> Converted:
    """ReLU / leaky ReLU."""
    _unary(ctx)
    slope = float(ctx.param("relu_param").negative_slope)
    if slope == 0.0:
        return single(lambda xs, w: F.relu(xs[0]))
    return single(lambda xs, w: F.leaky_relu(xs[0], slope))


def convert_prelu(ctx: LayerContext) -> Converted:
    """PReLU with per-channel (or one shared) slopes."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    ctx.expect_blobs(1)
    if len(ctx.shape) < 2:
        raise ctx.error(f"needs a bottom with a channel axis, got shape {list(ctx.shape)}")
    shared = ctx.param("prelu_param").channel_shared
    slope = ctx.blob(0, (1,) if shared else (ctx.shape[1],))

    def prelu(xs, w):
        return F.prelu(xs[0], w["weight"])

    return single(prelu, {"weight": slope})


def convert_sigmoid(ctx: LayerContext) -> Converted:
    """Sigmoid."""
    _unary(ctx)
    return single(lambda xs, w: torch.sigmoid(xs[0]))


def convert_tanh(ctx: LayerContext) -> Converted:
    """TanH."""
    _unary(ctx)
    return single(lambda xs, w: torch.tanh(xs[0]))


def convert_absval(ctx: LayerContext) -> Converted:
    """AbsVal."""
    _unary(ctx)
    return single(lambda xs, w: torch.abs(xs[0]))


def convert_elu(ctx: LayerContext) -> Converted:
    """ELU."""
    _unary(ctx)
    alpha = float(ctx.param("elu_param").alpha)
    return single(lambda xs, w: F.elu(xs[0], alpha))


def convert_power(ctx: LayerContext) -> Converted:
    """Power: the affine part and the power are emitted only when they are not identities
    (``power: 1 scale: 1 shift: 0`` is an alias of its bottom)."""
    _unary(ctx)
    p = ctx.param("power_param")
    power, scale, shift = float(p.power), float(p.scale), float(p.shift)

    def power_fn(xs, w):
        y = xs[0]
        if scale != 1.0:
            y = y * scale
        if shift != 0.0:
            y = y + shift
        if power != 1.0:
            y = torch.pow(y, power)
        return y

    return single(power_fn)


def convert_softmax(ctx: LayerContext) -> Converted:
    """Softmax over ``axis``."""
    _unary(ctx)
    axis = ctx.axis(ctx.param("softmax_param").axis, len(ctx.shape))
    return single(lambda xs, w: torch.softmax(xs[0], axis))

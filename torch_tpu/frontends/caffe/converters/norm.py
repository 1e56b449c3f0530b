"""BatchNorm, Scale and Bias.

* BatchNorm (inference, ``use_global_stats``): blobs ``mean``, ``variance``, ``scale_factor`` (a
  one-element moving-average normaliser ``s``); with ``f = 0 if s == 0 else 1/s``::

      y = (x - f*mean) / sqrt(f*variance + eps)

  ``f*mean`` and ``f*variance`` are folded at import (weights ``<layer>.mean``, ``<layer>.variance``).
* Scale: ``y = x * a (+ b)``; ``a`` is blob 0 (or bottom 1), shaped like ``x.shape[axis:axis+num_axes]``
  and broadcast over the other axes; ``b`` is blob 1 (or blob 0 with two bottoms) when ``bias_term``.
* Bias: ``y = x + b`` with the same placement rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_tpu.frontends.caffe.context import Converted, LayerContext, broadcast_shape, single


def convert_batch_norm(ctx: LayerContext) -> Converted:
    """BatchNorm with stored statistics -> ``F.batch_norm(training=False)`` without affine terms."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    p = ctx.param("batch_norm_param")
    if p.HasField("use_global_stats") and not p.use_global_stats:
        raise ctx.unsupported("use_global_stats: false (batch statistics at inference) is not supported")
    if len(ctx.shape) < 2:
        raise ctx.error(f"needs a bottom with a channel axis, got shape {list(ctx.shape)}")
    c = ctx.shape[1]
    ctx.expect_blobs(3)
    mean, var = ctx.blob(0, (c,)), ctx.blob(1, (c,))
    s = float(ctx.blob(2, (1,))[0])
    factor = 0.0 if s == 0 else 1.0 / s
    eps = float(p.eps)
    weights = {"mean": mean * factor, "variance": var * factor}

    def batch_norm(xs, w):
        return F.batch_norm(xs[0], w["mean"], w["variance"], None, None, False, 0.0, eps)

    return single(batch_norm, weights)


def _placement(ctx: LayerContext, axis: int, num_axes: int, param_shape: tuple[int, ...] | None) -> tuple[
        int, tuple[int, ...]]:
    """(canonical axis, parameter shape) of a Scale/Bias parameter; Caffe's rules."""
    ndim = len(ctx.shape)
    if param_shape is not None and len(param_shape) == 0:
        return 0, ()
    axis = ctx.axis(axis, ndim) if ndim else 0
    if param_shape is None:
        if num_axes < -1:
            raise ctx.error(f"num_axes {num_axes} must be >= -1")
        end = ndim if num_axes == -1 else axis + num_axes
        if end > ndim:
            raise ctx.error(f"axis {axis} + num_axes {num_axes} exceeds the bottom's {ndim} axes")
        param_shape = tuple(ctx.shape[axis:end])
    if tuple(ctx.shape[axis:axis + len(param_shape)]) != tuple(param_shape):
        raise ctx.error(f"parameter shape {list(param_shape)} does not match bottom shape {list(ctx.shape)} "
                        f"at axis {axis}")
    return axis, tuple(param_shape)


def convert_scale(ctx: LayerContext) -> Converted:
    """Scale (optionally with bias) -> broadcast ``mul`` (+ ``add``)."""
    ctx.expect_bottoms(1, 2)
    ctx.expect_tops(1)
    p = ctx.param("scale_param")
    ndim = len(ctx.shape)
    two = len(ctx.layer.bottoms) == 2
    axis, shape = _placement(ctx, p.axis, p.num_axes, ctx.bottom_shapes[1] if two else None)
    bshape = broadcast_shape(ndim, axis, shape)
    n_blobs = (0 if two else 1) + (1 if p.bias_term else 0)
    ctx.expect_blobs(n_blobs)
    weights: dict[str, torch.Tensor] = {}
    if not two:
        weights["weight"] = ctx.blob(0, shape).reshape(bshape)
    if p.bias_term:
        weights["bias"] = ctx.blob(n_blobs - 1, shape).reshape(bshape)

    def scale(xs, w):
        a = xs[1].reshape(bshape) if two else w["weight"]
        y = xs[0] * a
        return y + w["bias"] if "bias" in w else y

    return single(scale, weights)


def convert_bias(ctx: LayerContext) -> Converted:
    """Bias -> broadcast ``add``."""
    ctx.expect_bottoms(1, 2)
    ctx.expect_tops(1)
    p = ctx.param("bias_param")
    two = len(ctx.layer.bottoms) == 2
    axis, shape = _placement(ctx, p.axis, p.num_axes, ctx.bottom_shapes[1] if two else None)
    bshape = broadcast_shape(len(ctx.shape), axis, shape)
    ctx.expect_blobs(0 if two else 1)
    weights = {} if two else {"bias": ctx.blob(0, shape).reshape(bshape)}

    def bias(xs, w):
        return xs[0] + (xs[1].reshape(bshape) if two else w["bias"])

    return single(bias, weights)

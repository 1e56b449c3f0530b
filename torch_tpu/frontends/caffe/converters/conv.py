"""Convolution and Deconvolution (2-D, groups, dilation, the ``*_h``/``*_w`` variants).

Caffe's output size (per spatial axis, kernel ``k``, pad ``p``, stride ``s``, dilation ``d``)::

    Convolution:    out = (in + 2p - (d(k-1)+1)) // s + 1
    Deconvolution:  out = s(in - 1) + d(k-1) + 1 - 2p

which is exactly ``torch.nn.functional.conv2d`` / ``conv_transpose2d`` (output_padding 0). Weights:
Convolution ``(num_output, C/group, kh, kw)``; Deconvolution ``(C, num_output/group, kh, kw)``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from torch_tpu.frontends.caffe.context import Converted, LayerContext, single


def _pair(ctx: LayerContext, p: Any, name: str, default: int) -> tuple[int, int]:
    """``name``/``name_h``+``name_w`` of a ConvolutionParameter -> (h, w); Caffe's rules for 2-D."""
    rep_field = {"kernel": "kernel_size", "stride": "stride", "pad": "pad"}[name]
    has_h, has_w = p.HasField(f"{name}_h"), p.HasField(f"{name}_w")
    values = list(getattr(p, rep_field))
    if has_h or has_w:
        if not (has_h and has_w):
            raise ctx.error(f"{name}_h and {name}_w must be given together")
        if values:
            raise ctx.error(f"give either {rep_field} or {name}_h/{name}_w, not both")
        return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
    if not values:
        if name == "kernel":
            raise ctx.error("kernel_size (or kernel_h and kernel_w) is required")
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ctx.unsupported(f"{len(values)} {rep_field} values: only 2-D convolution is supported")


def conv_geometry(ctx: LayerContext) -> dict[str, Any]:
    """Kernel, stride, pad, dilation, group and num_output of a (De)Convolution layer."""
    p = ctx.param("convolution_param")
    if len(ctx.shape) != 4:
        raise ctx.unsupported(f"a {len(ctx.shape)}-D bottom: only 2-D (N, C, H, W) convolution is supported")
    if ctx.axis(p.axis, 4) != 1:
        raise ctx.unsupported(f"axis {p.axis}: only the channel axis 1 is supported")
    kernel = _pair(ctx, p, "kernel", 1)
    stride = _pair(ctx, p, "stride", 1)
    pad = _pair(ctx, p, "pad", 0)
    dil = list(p.dilation)
    if len(dil) > 2:
        raise ctx.unsupported(f"{len(dil)} dilation values: only 2-D convolution is supported")
    dilation = (1, 1) if not dil else (int(dil[0]), int(dil[-1]))
    group = int(p.group)
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1 or group < 1:
        raise ctx.error(f"kernel {kernel}, stride {stride}, dilation {dilation} and group {group} must be >= 1")
    if not p.HasField("num_output") or p.num_output < 1:
        raise ctx.error("num_output must be given and positive")
    channels = ctx.shape[1]
    if channels % group or p.num_output % group:
        raise ctx.error(f"channels {channels} and num_output {p.num_output} must be divisible by group {group}")
    return {"kernel": kernel, "stride": stride, "pad": pad, "dilation": dilation, "group": group,
            "num_output": int(p.num_output), "channels": channels, "bias_term": bool(p.bias_term)}


def _weights(ctx: LayerContext, weight_shape: tuple[int, ...], num_output: int, bias_term: bool) -> dict:
    ctx.expect_blobs(2 if bias_term else 1)
    weights = {"weight": ctx.blob(0, weight_shape)}
    if bias_term:
        weights["bias"] = ctx.blob(1, (num_output,))
    return weights


def convert_convolution(ctx: LayerContext) -> Converted:
    """Convolution: ``y = conv2d(x, W, b, stride, pad, dilation, group)``."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    g = conv_geometry(ctx)
    w_shape = (g["num_output"], g["channels"] // g["group"], *g["kernel"])
    weights = _weights(ctx, w_shape, g["num_output"], g["bias_term"])

    def convolution(xs, w):
        return F.conv2d(xs[0], w["weight"], w.get("bias"), g["stride"], g["pad"], g["dilation"], g["group"])

    return single(convolution, weights)


def convert_deconvolution(ctx: LayerContext) -> Converted:
    """Deconvolution: ``y = conv_transpose2d(x, W, b, stride, pad, output_padding=0, group, dilation)``."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    g = conv_geometry(ctx)
    w_shape = (g["channels"], g["num_output"] // g["group"], *g["kernel"])
    weights = _weights(ctx, w_shape, g["num_output"], g["bias_term"])

    def deconvolution(xs, w):
        return F.conv_transpose2d(xs[0], w["weight"], w.get("bias"), g["stride"], g["pad"], 0, g["group"],
                                  g["dilation"])

    return single(deconvolution, weights)


__all__ = ["conv_geometry", "convert_convolution", "convert_deconvolution"]

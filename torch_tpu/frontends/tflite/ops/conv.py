"""Convolutions: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED.

Each runs in NCHW between explicit permutes (NHWC -> NCHW, compute, NCHW -> NHWC); weights are re-laid
out once at import:

* CONV_2D ``[O, H, W, I]`` -> ``[O, I, H, W]``;
* DEPTHWISE_CONV_2D ``[1, H, W, I*M]`` -> ``[I*M, 1, H, W]``, ``groups = I`` (output channel
  ``c*M + m`` reads input channel ``c``, in both frameworks);
* TRANSPOSE_CONV ``[O, H, W, I]`` -> ``[I, O, H, W]``;
* FULLY_CONNECTED ``[O, I]`` as is: ``y = x.reshape(-1, I) @ W^T + b``.

SAME padding is TFLite's (``same_padding``): symmetric cases use the conv's own padding, asymmetric
ones an explicit zero ``pad`` first. TRANSPOSE_CONV computes the full transposed convolution and crops
``before = total // 2`` rows/columns at the start, ``total = max((in - 1) * s + k - out, 0)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tflite.Padding import Padding

from torch_tpu.frontends.tflite.common import fused_activation, pad_nchw, require_rank, spatial_padding, to_nchw, \
    to_nhwc
from torch_tpu.frontends.tflite.context import OpContext, OpFn


def _conv_common(ctx: OpContext, weight: torch.Tensor, kernel: tuple[int, int], groups: int) -> OpFn:
    o = ctx.options
    require_rank(ctx, 0, 4)
    stride = (int(o.StrideH()), int(o.StrideW()))
    dilation = (int(o.DilationHFactor()), int(o.DilationWFactor()))
    if min(stride) < 1 or min(dilation) < 1:
        raise ctx.error(f"bad stride {stride} or dilation {dilation}")
    _, h, w, _ = ctx.in_shape(0)
    pads = spatial_padding(ctx, int(o.Padding()), (h, w), kernel, stride, dilation)
    symmetric = pads[0] == pads[1] and pads[2] == pads[3]
    conv_pad = (pads[0], pads[2]) if symmetric else (0, 0)
    ctx.weight(1, weight)
    if ctx.has_input(2):
        ctx.weight(2)
    act = fused_activation(ctx)

    def conv2d(v: list) -> torch.Tensor:
        x = to_nchw(v[0])
        if not symmetric:
            x = pad_nchw(x, pads)
        y = F.conv2d(x, v[1], v[2], stride, conv_pad, dilation, groups)
        return to_nhwc(act(y))

    return conv2d


def convert_conv_2d(ctx: OpContext) -> OpFn:
    """CONV_2D: ``y = act(conv(pad(x), W) + b)`` with weights OHWI -> OIHW."""
    w = ctx.const_float(1)
    if w.ndim != 4:
        raise ctx.error(f"filter must be 4-D OHWI, has shape {list(w.shape)}")
    cin = ctx.in_shape(0)[3]
    if cin % w.shape[3]:
        raise ctx.error(f"input channels {cin} not a multiple of filter channels {w.shape[3]}")
    return _conv_common(ctx, w.permute(0, 3, 1, 2), (w.shape[1], w.shape[2]), cin // w.shape[3])


def convert_depthwise_conv_2d(ctx: OpContext) -> OpFn:
    """DEPTHWISE_CONV_2D: grouped conv, ``groups = I``, weights ``[1, H, W, I*M]`` -> ``[I*M, 1, H, W]``."""
    w = ctx.const_float(1)
    cin = ctx.in_shape(0)[3]
    if w.ndim != 4 or w.shape[0] != 1 or w.shape[3] % cin:
        raise ctx.error(f"depthwise filter {list(w.shape)} does not fit {cin} input channels")
    return _conv_common(ctx, w.permute(3, 0, 1, 2), (w.shape[1], w.shape[2]), cin)


def convert_transpose_conv(ctx: OpContext) -> OpFn:
    """TRANSPOSE_CONV (inputs: output_shape, weights OHWI, x, optional bias).

    ``full = conv_transpose(x, W)``, size ``(in - 1) * s + k``; ``y = act(full[before : before + out] + b)``.
    """
    o = ctx.options
    out_shape = ctx.const_ints(0)
    w = ctx.const_float(1)
    x_shape = ctx.in_shape(2)
    if w.ndim != 4 or len(x_shape) != 4 or len(out_shape) != 4 or w.shape[3] != x_shape[3]:
        raise ctx.error(f"filter {list(w.shape)}, input {list(x_shape)} and output shape {out_shape} do not fit")
    stride = (int(o.StrideH()), int(o.StrideW()))
    if min(stride) < 1:
        raise ctx.error(f"bad stride {stride}")
    return _transpose_conv(ctx, w, x_shape, out_shape, stride, int(o.Padding()), x_slot=2, bias_slot=3,
                           act_code=int(o.FusedActivationFunction()) if hasattr(o, "FusedActivationFunction")
                           else 0)


def _transpose_conv(ctx: OpContext, w: torch.Tensor, x_shape, out_shape, stride, padding: int, *, x_slot: int,
                    bias_slot: int, act_code: int) -> OpFn:
    kh, kw = w.shape[1], w.shape[2]
    oh, ow = out_shape[1], out_shape[2]
    crops = []
    if padding not in (Padding.SAME, Padding.VALID):
        raise ctx.unsupported(f"padding mode {padding}")
    for size_in, size_out, k, s in ((x_shape[1], oh, kh, stride[0]), (x_shape[2], ow, kw, stride[1])):
        full = (size_in - 1) * s + k
        total = max(full - size_out, 0) if padding == Padding.SAME else 0
        before = total // 2
        if before + size_out > full:
            raise ctx.error(f"output size {size_out} larger than the transposed convolution gives ({full})")
        crops.append((before, size_out, full))
    ctx.weight(1, w.permute(3, 0, 1, 2))
    has_bias = ctx.has_input(bias_slot)
    if has_bias:
        ctx.weight(bias_slot)
    act = fused_activation(ctx, act_code)
    (top, oh_, fh), (left, ow_, fw) = crops

    def transpose_conv(v: list) -> torch.Tensor:
        y = F.conv_transpose2d(to_nchw(v[x_slot]), v[1], None, stride)
        if (top, oh_, left, ow_) != (0, fh, 0, fw):
            y = y[:, :, top:top + oh_, left:left + ow_]
        if has_bias:
            y = y + v[bias_slot].reshape(1, -1, 1, 1)
        return to_nhwc(act(y))

    return transpose_conv


def convert_fully_connected(ctx: OpContext) -> OpFn:
    """FULLY_CONNECTED: ``y = act(x.reshape(-1, I) @ W^T + b)``, reshaped to the output tensor's shape."""
    o = ctx.options
    if int(o.WeightsFormat()) != 0:
        raise ctx.unsupported("shuffled weights format")
    w = ctx.const_float(1)
    if w.ndim != 2:
        raise ctx.error(f"weights must be 2-D [O, I], have shape {list(w.shape)}")
    n_in = w.shape[1]
    x_numel = 1
    for d in ctx.in_shape(0):
        x_numel *= d
    if x_numel % n_in:
        raise ctx.error(f"input of {x_numel} elements cannot be split into rows of {n_in}")
    ctx.weight(1)
    if ctx.has_input(2):
        ctx.weight(2)
    act = fused_activation(ctx)
    out_shape = ctx.out_shape()

    def fully_connected(v: list) -> torch.Tensor:
        y = F.linear(v[0].reshape(-1, n_in), v[1], v[2])
        return act(y).reshape(out_shape)

    return fully_connected


def convert_convolution_2d_transpose_bias(ctx: OpContext) -> OpFn:
    """CUSTOM:Convolution2DTransposeBias (MediaPipe): TRANSPOSE_CONV with inputs (x, W, b).

    Custom options are the C struct ``{int32 padding (1 SAME, 2 VALID), int32 stride_w, int32 stride_h}``.
    """
    raw = ctx.op.custom_options
    if len(raw) < 12:
        raise ctx.error(f"custom options of {len(raw)} bytes, expected 12")
    padding_c, sw, sh = (int.from_bytes(raw[i:i + 4], "little", signed=True) for i in (0, 4, 8))
    padding = {1: Padding.SAME, 2: Padding.VALID}.get(padding_c)
    if padding is None or min(sw, sh) < 1:
        raise ctx.error(f"bad custom options padding={padding_c} stride=({sh}, {sw})")
    w = ctx.const_float(1)
    x_shape = ctx.in_shape(0)
    if w.ndim != 4 or len(x_shape) != 4 or w.shape[3] != x_shape[3]:
        raise ctx.error(f"filter {list(w.shape)} and input {list(x_shape)} do not fit")
    return _transpose_conv(ctx, w, x_shape, list(ctx.out_shape()), (sh, sw), padding, x_slot=0, bias_slot=2,
                           act_code=0)


CONVERTERS = {
    "CONV_2D": convert_conv_2d,
    "DEPTHWISE_CONV_2D": convert_depthwise_conv_2d,
    "TRANSPOSE_CONV": convert_transpose_conv,
    "FULLY_CONNECTED": convert_fully_connected,
    "CUSTOM:Convolution2DTransposeBias": convert_convolution_2d_transpose_bias,
}

"""Pooling: AVERAGE_POOL_2D, MAX_POOL_2D (NCHW between explicit permutes).

TFLite pools never count padding: MAX_POOL_2D pads with ``-inf``; AVERAGE_POOL_2D divides by the number
of real pixels in each window. Symmetric SAME padding uses the pool's own padding
(``count_include_pad=False``); asymmetric padding pads with zeros, pools with the full window and
rescales: ``y = avg_pool(pad0(x)) * (kh * kw / count)``, ``count[i, j]`` the real pixels of window
``(i, j)`` (a constant computed at import).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_tpu.frontends.tflite.common import fused_activation, pad_nchw, require_rank, spatial_padding, to_nchw, \
    to_nhwc
from torch_tpu.frontends.tflite.context import OpContext, OpFn


def _window(ctx: OpContext):
    o = ctx.options
    require_rank(ctx, 0, 4)
    kernel = (int(o.FilterHeight()), int(o.FilterWidth()))
    stride = (int(o.StrideH()), int(o.StrideW()))
    if min(kernel) < 1 or min(stride) < 1:
        raise ctx.error(f"bad window {kernel} or stride {stride}")
    _, h, w, _ = ctx.in_shape(0)
    pads = spatial_padding(ctx, int(o.Padding()), (h, w), kernel, stride)
    own = pads[0] == pads[1] and pads[2] == pads[3] and 2 * pads[0] <= kernel[0] and 2 * pads[2] <= kernel[1]
    return kernel, stride, pads, own, fused_activation(ctx)


def _counts(size: int, kernel: int, stride: int, before: int, after: int) -> torch.Tensor:
    """Real (unpadded) pixels per window along one axis."""
    n_out = (size + before + after - kernel) // stride + 1
    starts = torch.arange(n_out) * stride - before
    return (torch.clamp(starts + kernel, max=size) - torch.clamp(starts, min=0)).to(torch.float32)


def convert_average_pool_2d(ctx: OpContext) -> OpFn:
    """AVERAGE_POOL_2D: mean over the real pixels of each window, then the fused activation."""
    kernel, stride, pads, own, act = _window(ctx)
    if own:
        def average_pool_2d(v: list) -> torch.Tensor:
            y = F.avg_pool2d(to_nchw(v[0]), kernel, stride, (pads[0], pads[2]), count_include_pad=False)
            return to_nhwc(act(y))

        return average_pool_2d
    _, h, w, _ = ctx.in_shape(0)
    count = _counts(h, kernel[0], stride[0], pads[0], pads[1])[:, None] * _counts(w, kernel[1], stride[1],
                                                                                   pads[2], pads[3])[None, :]
    slot = ctx.extra_weight("pool_rescale", (kernel[0] * kernel[1] / count)[None, None])

    def average_pool_2d_asymmetric(v: list) -> torch.Tensor:
        y = F.avg_pool2d(pad_nchw(to_nchw(v[0]), pads), kernel, stride) * v[slot]
        return to_nhwc(act(y))

    return average_pool_2d_asymmetric


def convert_max_pool_2d(ctx: OpContext) -> OpFn:
    """MAX_POOL_2D: max over each window (padding never wins: ``-inf``), then the fused activation."""
    kernel, stride, pads, own, act = _window(ctx)

    def max_pool_2d(v: list) -> torch.Tensor:
        x = to_nchw(v[0])
        if own:
            y = F.max_pool2d(x, kernel, stride, (pads[0], pads[2]))
        else:
            y = F.max_pool2d(pad_nchw(x, pads, float("-inf")), kernel, stride)
        return to_nhwc(act(y))

    return max_pool_2d


CONVERTERS = {
    "AVERAGE_POOL_2D": convert_average_pool_2d,
    "MAX_POOL_2D": convert_max_pool_2d,
}

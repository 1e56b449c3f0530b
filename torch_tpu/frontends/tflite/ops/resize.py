"""Resizing: RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR (NHWC, output size from the output tensor).

Source coordinate of output pixel ``d`` (``scale = in / out``, or ``(in - 1) / (out - 1)`` with
``align_corners``):

* bilinear, ``half_pixel_centers``: ``s = (d + 0.5) * scale - 0.5`` -> ``F.interpolate(align_corners=False)``;
* bilinear, ``align_corners``: ``s = d * scale`` -> ``F.interpolate(align_corners=True)``;
* bilinear, neither (TF1 legacy): ``s = d * scale``, ``y = (1 - f) x[floor s] + f x[min(floor s + 1, in - 1)]``,
  done as two constant interpolation matrices: ``y = A_h @ x @ A_w^T`` (NCHW);
* nearest: ``floor(d * scale)`` -> ``mode="nearest"``; ``floor((d + 0.5) * scale)`` (half pixel) ->
  ``mode="nearest-exact"``; ``round(d * scale)`` (align corners) -> ``index_select`` with constant indices.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from torch_tpu.frontends.tflite.common import require_rank, to_nchw, to_nhwc
from torch_tpu.frontends.tflite.context import OpContext, OpFn


def _sizes(ctx: OpContext) -> tuple[int, int, int, int]:
    require_rank(ctx, 0, 4)
    _, h, w, _ = ctx.in_shape(0)
    out = ctx.out_shape()
    if len(out) != 4:
        raise ctx.error(f"output must be 4-D, has shape {list(out)}")
    if ctx.is_const(1) and ctx.const_ints(1) != [out[1], out[2]]:
        raise ctx.error(f"size input {ctx.const_ints(1)} disagrees with the output shape {list(out)}")
    return h, w, out[1], out[2]


def _legacy_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``A[d, :]``: weights of input rows for output row ``d`` with ``s = d * n_in / n_out``."""
    a = torch.zeros(n_out, n_in, dtype=torch.float32)
    scale = n_in / n_out
    for d in range(n_out):
        s = d * scale
        lo = min(int(math.floor(s)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        f = s - lo
        a[d, lo] += 1.0 - f
        a[d, hi] += f
    return a


def convert_resize_bilinear(ctx: OpContext) -> OpFn:
    """RESIZE_BILINEAR (modes in the module doc)."""
    o = ctx.options
    align, half = bool(o.AlignCorners()), bool(o.HalfPixelCenters())
    h, w, oh, ow = _sizes(ctx)
    if align or half:
        def resize_bilinear(v: list) -> torch.Tensor:
            return to_nhwc(F.interpolate(to_nchw(v[0]), size=(oh, ow), mode="bilinear", align_corners=align))

        return resize_bilinear
    sh = ctx.extra_weight("interp_h", _legacy_matrix(h, oh))
    sw = ctx.extra_weight("interp_w", _legacy_matrix(w, ow).t())

    def resize_bilinear_legacy(v: list) -> torch.Tensor:
        return to_nhwc(torch.matmul(torch.matmul(v[sh], to_nchw(v[0])), v[sw]))

    return resize_bilinear_legacy


def convert_resize_nearest_neighbor(ctx: OpContext) -> OpFn:
    """RESIZE_NEAREST_NEIGHBOR (modes in the module doc)."""
    o = ctx.options
    align, half = bool(o.AlignCorners()), bool(o.HalfPixelCenters())
    h, w, oh, ow = _sizes(ctx)
    if not align:
        mode = "nearest-exact" if half else "nearest"

        def resize_nearest(v: list) -> torch.Tensor:
            return to_nhwc(F.interpolate(to_nchw(v[0]), size=(oh, ow), mode=mode))

        return resize_nearest

    def indices(n_in: int, n_out: int) -> torch.Tensor:
        """``min(round((d + offset) * scale), in - 1)`` in float32 arithmetic, as LiteRT computes it."""
        scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(n_in) / np.float32(n_out)
        offset = np.float32(0.5 if half else 0.0)
        src = np.floor((np.arange(n_out, dtype=np.float32) + offset) * scale + np.float32(0.5))
        return torch.from_numpy(np.minimum(src.astype(np.int64), n_in - 1))

    ih = ctx.extra_weight("index_h", indices(h, oh))
    iw = ctx.extra_weight("index_w", indices(w, ow))

    def resize_nearest_align_corners(v: list) -> torch.Tensor:
        return v[0].index_select(1, v[ih]).index_select(2, v[iw])

    return resize_nearest_align_corners


CONVERTERS = {
    "RESIZE_BILINEAR": convert_resize_bilinear,
    "RESIZE_NEAREST_NEIGHBOR": convert_resize_nearest_neighbor,
}

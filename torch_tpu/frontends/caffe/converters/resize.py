"""Interp (PSPNet / DeepLab) and Upsample (nearest, YOLO-style forks).

Interp: bilinear with aligned corners; output size from ``height``/``width``, or
``zoom_factor`` ``z`` (``out = in + (in - 1)(z - 1)``), or ``shrink_factor`` ``s`` (``out = (in - 1)/s + 1``),
or both (shrink, then zoom), or bottom 1's spatial size. Upsample: nearest neighbour by integer
``scale`` (or ``scale_h``/``scale_w``).
"""

from __future__ import annotations

import torch.nn.functional as F

from torch_tpu.frontends.caffe.context import Converted, LayerContext, single


def _interp_size(ctx: LayerContext, h: int, w: int) -> tuple[int, int]:
    p = ctx.param("interp_param")
    if p.pad_beg != 0 or p.pad_end != 0:
        raise ctx.unsupported("pad_beg/pad_end other than 0")
    if len(ctx.layer.bottoms) == 2:
        return tuple(ctx.bottom_shapes[1][2:4])
    zoom, shrink = ctx.has_param("interp_param", "zoom_factor"), ctx.has_param("interp_param", "shrink_factor")
    if zoom or shrink:
        if (zoom and p.zoom_factor < 1) or (shrink and p.shrink_factor < 1):
            raise ctx.error("zoom_factor and shrink_factor must be >= 1")
        if shrink:
            h, w = (h - 1) // p.shrink_factor + 1, (w - 1) // p.shrink_factor + 1
        if zoom:
            h, w = h + (h - 1) * (p.zoom_factor - 1), w + (w - 1) * (p.zoom_factor - 1)
        return h, w
    if p.height > 0 and p.width > 0:
        return int(p.height), int(p.width)
    raise ctx.error("give height and width, zoom_factor, shrink_factor or a second bottom")


def convert_interp(ctx: LayerContext) -> Converted:
    """Interp -> ``interpolate(mode="bilinear", align_corners=True)``."""
    ctx.expect_bottoms(1, 2)
    ctx.expect_tops(1)
    if len(ctx.shape) != 4:
        raise ctx.unsupported(f"a {len(ctx.shape)}-D bottom: only (N, C, H, W) is supported")
    size = _interp_size(ctx, *ctx.shape[2:4])
    if min(size) < 1:
        raise ctx.error(f"output size {size} is empty")
    return single(lambda xs, w: F.interpolate(xs[0], size=size, mode="bilinear", align_corners=True))


def convert_upsample(ctx: LayerContext) -> Converted:
    """Upsample (one bottom) -> nearest-neighbour ``interpolate`` by an integer factor."""
    if len(ctx.layer.bottoms) == 2:
        raise ctx.unsupported("the two-bottom (max-unpooling with a mask) form is not supported")
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    if len(ctx.shape) != 4:
        raise ctx.unsupported(f"a {len(ctx.shape)}-D bottom: only (N, C, H, W) is supported")
    p = ctx.param("upsample_param")
    if ctx.has_param("upsample_param", "upsample_h") or ctx.has_param("upsample_param", "upsample_w"):
        raise ctx.unsupported("upsample_h/upsample_w (output sizes) are not supported; use scale")
    sh = int(p.scale_h) if ctx.has_param("upsample_param", "scale_h") else int(p.scale)
    sw = int(p.scale_w) if ctx.has_param("upsample_param", "scale_w") else int(p.scale)
    if sh < 1 or sw < 1:
        raise ctx.error(f"scale ({sh}, {sw}) must be >= 1")
    h, w = ctx.shape[2:4]
    size = (h * sh, w * sw)
    return single(lambda xs, w_: F.interpolate(xs[0], size=size, mode="nearest"))

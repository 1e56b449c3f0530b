"""Layers that move data without arithmetic: Concat, Slice, Split, Flatten, Reshape, Permute, Crop,
plus the inference no-ops Dropout and Silence.

Layers whose output *is* their input (Split, Dropout, a Flatten over one axis) produce no node: their
tops are aliases of the bottom (see :mod:`torch_tpu.frontends.caffe.builder`).
"""

from __future__ import annotations

import math

import torch

from torch_tpu.frontends.caffe.context import Converted, LayerContext, single


def convert_concat(ctx: LayerContext) -> Converted:
    """Concat along ``axis`` (or the legacy ``concat_dim``) -> ``cat``."""
    ctx.expect_bottoms(1, 1 << 30)
    ctx.expect_tops(1)
    ndim = len(ctx.shape)
    axis = (int(ctx.param("concat_param").concat_dim) if ctx.has_param("concat_param", "concat_dim")
            else ctx.axis(ctx.param("concat_param").axis, ndim))
    if axis >= ndim:
        raise ctx.error(f"concat_dim {axis} is out of range for a {ndim}-D bottom")
    for i, s in enumerate(ctx.bottom_shapes[1:], 1):
        if len(s) != ndim or any(a != b for j, (a, b) in enumerate(zip(s, ctx.shape)) if j != axis):
            raise ctx.error(f"bottom {i} has shape {list(s)}, incompatible with {list(ctx.shape)} on axis {axis}")
    if len(ctx.layer.bottoms) == 1:
        return single(lambda xs, w: xs[0])
    return single(lambda xs, w: torch.cat(list(xs), axis))


def convert_slice(ctx: LayerContext) -> Converted:
    """Slice along ``axis`` (or ``slice_dim``) at ``slice_point`` (or into equal parts) -> one ``slice`` per top."""
    ctx.expect_bottoms(1)
    p = ctx.param("slice_param")
    ndim = len(ctx.shape)
    axis = int(p.slice_dim) if ctx.has_param("slice_param", "slice_dim") else ctx.axis(p.axis, ndim)
    if axis >= ndim:
        raise ctx.error(f"slice_dim {axis} is out of range for a {ndim}-D bottom")
    n, size = len(ctx.layer.tops), ctx.shape[axis]
    if n < 1:
        raise ctx.error("needs at least one top")
    points = [int(q) for q in p.slice_point]
    if points:
        if len(points) != n - 1:
            raise ctx.error(f"{len(points)} slice points for {n} tops (need {n - 1})")
        bounds = [0, *points, size]
        if any(b >= e for b, e in zip(bounds, bounds[1:])):
            raise ctx.error(f"slice points {points} must increase strictly inside (0, {size})")
    else:
        if size % n:
            raise ctx.error(f"axis {axis} of size {size} cannot be split into {n} equal parts")
        bounds = [i * size // n for i in range(n + 1)]

    def make(start: int, length: int):
        return lambda xs, w: xs[0].narrow(axis, start, length)

    return Converted(fns=tuple(make(b, e - b) for b, e in zip(bounds, bounds[1:])))


def convert_split(ctx: LayerContext) -> Converted:
    """Split: every top is the bottom (no node)."""
    ctx.expect_bottoms(1)
    return Converted(fns=tuple((lambda xs, w: xs[0]) for _ in ctx.layer.tops))


def convert_dropout(ctx: LayerContext) -> Converted:
    """Dropout: identity at inference (no node)."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    return single(lambda xs, w: xs[0])


def convert_silence(ctx: LayerContext) -> Converted:
    """Silence: consumes its bottoms, produces nothing."""
    ctx.expect_tops(0)
    return Converted(fns=())


def convert_flatten(ctx: LayerContext) -> Converted:
    """Flatten axes ``axis..end_axis`` -> ``view``."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    p = ctx.param("flatten_param")
    ndim = len(ctx.shape)
    start, end = ctx.axis(p.axis, ndim), ctx.axis(p.end_axis, ndim, "end_axis")
    if end < start:
        raise ctx.error(f"end_axis {p.end_axis} comes before axis {p.axis}")
    return single(lambda xs, w: torch.flatten(xs[0], start, end))


def reshape_shape(ctx: LayerContext, dims: list[int], axis: int, num_axes: int) -> tuple[int, ...]:
    """Caffe's Reshape output shape: ``0`` copies the bottom dim, one ``-1`` is inferred."""
    shape = ctx.shape
    ndim = len(shape)
    start = axis if axis >= 0 else ndim + axis + 1
    if not 0 <= start <= ndim:
        raise ctx.error(f"axis {axis} is out of range for a {ndim}-D bottom")
    end = ndim if num_axes == -1 else start + num_axes
    if num_axes < -1 or end > ndim:
        raise ctx.error(f"num_axes {num_axes} is out of range for axis {axis} of a {ndim}-D bottom")
    new: list[int] = []
    infer = [i for i, d in enumerate(dims) if d == -1]
    if len(infer) > 1:
        raise ctx.error("at most one dimension may be -1")
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= ndim:
                raise ctx.error(f"dim {i} is 0 but the bottom has no axis {start + i} to copy")
            new.append(shape[start + i])
        elif d < -1:
            raise ctx.error(f"dim {i} is {d}; dims must be >= -1")
        else:
            new.append(d)
    out = [*shape[:start], *new, *shape[end:]]
    total = math.prod(shape)
    if infer:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise ctx.error(f"cannot infer dim {infer[0]}: {total} elements over known size {known}")
        out[start + infer[0]] = total // known
    if math.prod(out) != total:
        raise ctx.error(f"cannot reshape {list(shape)} ({total} elements) to {out}")
    return tuple(out)


def convert_reshape(ctx: LayerContext) -> Converted:
    """Reshape -> ``view`` to the shape computed by :func:`reshape_shape`."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    p = ctx.param("reshape_param")
    out = reshape_shape(ctx, [int(d) for d in p.shape.dim], int(p.axis), int(p.num_axes))
    return single(lambda xs, w: xs[0].reshape(out))


def convert_permute(ctx: LayerContext) -> Converted:
    """Permute (SSD): ``order`` lists leading axes; the other axes follow in their order."""
    ctx.expect_bottoms(1)
    ctx.expect_tops(1)
    ndim = len(ctx.shape)
    order = [int(o) for o in ctx.param("permute_param").order]
    if any(o >= ndim for o in order) or len(set(order)) != len(order):
        raise ctx.error(f"order {order} must list distinct axes below {ndim}")
    full = order + [a for a in range(ndim) if a not in order]
    if full == list(range(ndim)):
        return single(lambda xs, w: xs[0])
    return single(lambda xs, w: xs[0].permute(full))


def convert_crop(ctx: LayerContext) -> Converted:
    """Crop bottom 0 to bottom 1's shape from ``axis`` on, starting at ``offset`` -> ``slice`` per axis."""
    ctx.expect_bottoms(2)
    ctx.expect_tops(1)
    p = ctx.param("crop_param")
    shape, ref = ctx.bottom_shapes
    ndim = len(shape)
    if len(ref) != ndim:
        raise ctx.error(f"bottoms have {ndim} and {len(ref)} axes")
    axis = ctx.axis(p.axis, ndim)
    offsets = [int(o) for o in p.offset]
    if len(offsets) > 1 and len(offsets) != ndim - axis:
        raise ctx.error(f"{len(offsets)} offsets for {ndim - axis} cropped axes")
    crops = []
    for i in range(axis, ndim):
        off = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - axis]
        if off + ref[i] > shape[i]:
            raise ctx.error(f"axis {i}: offset {off} + size {ref[i]} exceeds the bottom's size {shape[i]}")
        if off != 0 or ref[i] != shape[i]:
            crops.append((i, off, ref[i]))

    def crop(xs, w):
        y = xs[0]
        for i, off, size in crops:
            y = y.narrow(i, off, size)
        return y

    return single(crop)

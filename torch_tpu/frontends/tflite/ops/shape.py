"""Shape and data-movement ops: RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE, CONCATENATION, PACK, UNPACK,
SPLIT, SPLIT_V, PAD, PADV2, STRIDED_SLICE, SLICE, DEPTH_TO_SPACE, SPACE_TO_DEPTH.

All work in TFLite's layout (NHWC) on the axes the model names. Shapes are static: RESHAPE, SQUEEZE
and EXPAND_DIMS reshape to the output tensor's shape (and vanish when it equals the input's).
DEPTH_TO_SPACE (block ``b``, DCR order):
``y[n, h*b + i, w*b + j, c] = x[n, h, w, (i*b + j) * C' + c]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from torch_tpu.frontends.tflite.common import axis, fused_activation, require_rank
from torch_tpu.frontends.tflite.context import OpContext, OpFn


def convert_reshape(ctx: OpContext) -> OpFn:
    """RESHAPE / SQUEEZE / EXPAND_DIMS: ``y = x.reshape(output shape)``."""
    shape_in, shape_out = ctx.in_shape(0), ctx.out_shape()
    if math.prod(shape_in) != math.prod(shape_out):
        raise ctx.error(f"cannot reshape {list(shape_in)} ({math.prod(shape_in)} elements) to {list(shape_out)}")
    if ctx.is_const(0):
        ctx.weight(0)
    if shape_in == shape_out:
        def same_shape(v: list) -> torch.Tensor:
            return v[0]

        return same_shape

    def reshape(v: list) -> torch.Tensor:
        return v[0].reshape(shape_out)

    return reshape


def convert_transpose(ctx: OpContext) -> OpFn:
    """TRANSPOSE: ``y = x.permute(perm)``."""
    rank = len(ctx.in_shape(0))
    perm = [axis(ctx, p, rank) for p in ctx.const_ints(1)]
    if sorted(perm) != list(range(rank)):
        raise ctx.error(f"perm {perm} is not a permutation of {rank} axes")

    def transpose(v: list) -> torch.Tensor:
        return v[0].permute(*perm)

    return transpose


def convert_concatenation(ctx: OpContext) -> OpFn:
    """CONCATENATION: ``y = act(cat(xs, axis))``; constant inputs become weights."""
    rank = len(ctx.out_shape())
    dim = axis(ctx, int(ctx.options.Axis()), rank)
    for i in range(ctx.n_inputs):
        ctx.operand(i)
    act = fused_activation(ctx)
    n = ctx.n_inputs

    def concatenation(v: list) -> torch.Tensor:
        return act(torch.cat(v[:n], dim))

    return concatenation


def convert_pack(ctx: OpContext) -> OpFn:
    """PACK: ``y = stack(xs, axis)``."""
    dim = axis(ctx, int(ctx.options.Axis()), len(ctx.out_shape()))
    for i in range(ctx.n_inputs):
        ctx.operand(i)
    n = ctx.n_inputs

    def pack(v: list) -> torch.Tensor:
        return torch.stack(v[:n], dim)

    return pack


def convert_unpack(ctx: OpContext) -> OpFn:
    """UNPACK: ``ys = unbind(x, axis)``."""
    dim = axis(ctx, int(ctx.options.Axis()), len(ctx.in_shape(0)))

    def unpack(v: list) -> tuple:
        return tuple(torch.unbind(v[0], dim))

    return unpack


def convert_split(ctx: OpContext) -> OpFn:
    """SPLIT (inputs: axis, x): ``num_splits`` equal parts along ``axis``."""
    shape = ctx.in_shape(1)
    (a,) = ctx.const_ints(0)
    dim = axis(ctx, a, len(shape))
    n = int(ctx.options.NumSplits())
    if n < 1 or shape[dim] % n:
        raise ctx.error(f"cannot split {shape[dim]} into {n} equal parts")
    size = shape[dim] // n

    def split(v: list) -> tuple:
        return tuple(torch.split(v[1], size, dim))

    return split


def convert_split_v(ctx: OpContext) -> OpFn:
    """SPLIT_V (inputs: x, size_splits, axis): parts of the given sizes (one ``-1`` takes the rest)."""
    shape = ctx.in_shape(0)
    (a,) = ctx.const_ints(2)
    dim = axis(ctx, a, len(shape))
    sizes = ctx.const_ints(1)
    if sizes.count(-1) == 1:
        sizes[sizes.index(-1)] = shape[dim] - (sum(sizes) + 1)
    if sum(sizes) != shape[dim] or min(sizes) < 0:
        raise ctx.error(f"split sizes {sizes} do not add up to {shape[dim]}")

    def split_v(v: list) -> tuple:
        return tuple(torch.split(v[0], sizes, dim))

    return split_v


def convert_pad(ctx: OpContext) -> OpFn:
    """PAD / PADV2: constant padding (zero, or PADV2's value) by ``paddings[rank, 2]`` (before, after)."""
    rank = len(ctx.in_shape(0))
    pads = ctx.const_ints(1)
    if len(pads) != 2 * rank or min(pads) < 0:
        raise ctx.error(f"paddings {pads} do not fit rank {rank}")
    value = float(ctx.const_float(2).reshape(-1)[0]) if ctx.has_input(2) else 0.0
    torch_pads: list[int] = []
    for d in reversed(range(rank)):
        torch_pads += [pads[2 * d], pads[2 * d + 1]]
    while torch_pads and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]

    def pad(v: list) -> torch.Tensor:
        return F.pad(v[0], torch_pads, value=value) if torch_pads else v[0]

    return pad


def _slice_bound(value: int, dim: int) -> int:
    return min(max(value + dim if value < 0 else value, 0), dim)


def convert_strided_slice(ctx: OpContext) -> OpFn:
    """STRIDED_SLICE with begin/end masks, shrink-axis mask and positive strides."""
    o = ctx.options
    shape = ctx.in_shape(0)
    begin, end, strides = ctx.const_ints(1), ctx.const_ints(2), ctx.const_ints(3)
    if not len(begin) == len(end) == len(strides) <= len(shape):
        raise ctx.error(f"begin {begin}, end {end}, strides {strides} do not fit shape {list(shape)}")
    if int(o.EllipsisMask()) or int(o.NewAxisMask()):
        raise ctx.unsupported("ellipsis_mask / new_axis_mask")
    if any(s <= 0 for s in strides):
        raise ctx.unsupported(f"non-positive strides {strides}")
    offset = bool(o.Offset()) if hasattr(o, "Offset") else False
    bmask, emask, smask = int(o.BeginMask()), int(o.EndMask()), int(o.ShrinkAxisMask())
    index = []
    for d, (b, e, s) in enumerate(zip(begin, end, strides)):
        size = shape[d]
        start = 0 if bmask >> d & 1 else _slice_bound(b, size)
        if smask >> d & 1:
            stop, s = start + 1, 1
        elif offset:
            stop = _slice_bound(b + e, size)
        else:
            stop = size if emask >> d & 1 else _slice_bound(e, size)
        index.append(slice(start, max(stop, start), s))
    out_shape = ctx.out_shape()
    full = all(sl == slice(0, shape[d], 1) for d, sl in enumerate(index))

    def strided_slice(v: list) -> torch.Tensor:
        y = v[0] if full else v[0][tuple(index)]
        return y.reshape(out_shape) if tuple(y.shape) != tuple(out_shape) else y

    return strided_slice


def convert_slice(ctx: OpContext) -> OpFn:
    """SLICE: ``y = x[begin : begin + size]`` per axis (``size = -1``: to the end)."""
    shape = ctx.in_shape(0)
    begin, size = ctx.const_ints(1), ctx.const_ints(2)
    if not len(begin) == len(size) == len(shape):
        raise ctx.error(f"begin {begin} / size {size} do not fit shape {list(shape)}")
    index = tuple(slice(b, shape[d] if s == -1 else b + s) for d, (b, s) in enumerate(zip(begin, size)))

    def slice_(v: list) -> torch.Tensor:
        return v[0][index]

    slice_.__name__ = "slice"
    return slice_


def convert_depth_to_space(ctx: OpContext) -> OpFn:
    """DEPTH_TO_SPACE (NHWC, DCR): ``[N, H, W, b*b*C] -> [N, H*b, W*b, C]``."""
    require_rank(ctx, 0, 4)
    b = int(ctx.options.BlockSize())
    n, h, w, c = ctx.in_shape(0)
    if b < 1 or c % (b * b):
        raise ctx.error(f"block size {b} does not divide {c} channels")

    def depth_to_space(v: list) -> torch.Tensor:
        y = v[0].reshape(n, h, w, b, b, c // (b * b)).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(n, h * b, w * b, c // (b * b))

    return depth_to_space


def convert_space_to_depth(ctx: OpContext) -> OpFn:
    """SPACE_TO_DEPTH (NHWC): ``[N, H*b, W*b, C] -> [N, H, W, b*b*C]``."""
    require_rank(ctx, 0, 4)
    b = int(ctx.options.BlockSize())
    n, h, w, c = ctx.in_shape(0)
    if b < 1 or h % b or w % b:
        raise ctx.error(f"block size {b} does not divide {h}x{w}")

    def space_to_depth(v: list) -> torch.Tensor:
        y = v[0].reshape(n, h // b, b, w // b, b, c).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(n, h // b, w // b, b * b * c)

    return space_to_depth


CONVERTERS = {
    "RESHAPE": convert_reshape,
    "SQUEEZE": convert_reshape,
    "EXPAND_DIMS": convert_reshape,
    "TRANSPOSE": convert_transpose,
    "CONCATENATION": convert_concatenation,
    "PACK": convert_pack,
    "UNPACK": convert_unpack,
    "SPLIT": convert_split,
    "SPLIT_V": convert_split_v,
    "PAD": convert_pad,
    "PADV2": convert_pad,
    "STRIDED_SLICE": convert_strided_slice,
    "SLICE": convert_slice,
    "DEPTH_TO_SPACE": convert_depth_to_space,
    "SPACE_TO_DEPTH": convert_space_to_depth,
}

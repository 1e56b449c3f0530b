"""Data movement: reshape, permute, expand, concat, slice, pad, resize, gather, copy, full.

All of them move or select values without arithmetic (exact in any dtype; bilinear resize is the one
computing op: f32 weights, one rounding). Each returns a new contiguous tensor, never a view of an input.

    reshape(x, shape)                 row-major reinterpretation
    permute(x, dims)                  y[i_dims[0], ...] = x[i_0, ...]
    expand(x, shape)                  broadcast copy (numpy rules)
    concat(xs, dim)                   along ``dim``; all operands share a dtype
    slice(x, dim, start, end, step)   x[..., start:end:step, ...] (python slice semantics, clamped)
    pad(x, pads, value)               constant pad, ``pads`` in torch order (last dim first: lo, hi, ...)
    upsample_nearest2d(x, size, scales)   src = floor(dst * (1/scale if scale > 0 else in/out))
    upsample_bilinear2d(x, size, align_corners, scales)  PyTorch's half-pixel (or corner-aligned) rule
    embedding(table, idx)             y[..., :] = table[idx[...], :]
    gather(x, dim, idx)               y[i][j] = x[i][idx[i][j]] along ``dim`` (torch.gather)
    copy(x)                           y = x
    full(size, value, dtype)          constant tensor (value rounded to dtype)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import builtins

from torch_tpu.tpu_ops._common import OpDef, fake_by_reference, fake_like, finish, up


def _copy(y: torch.Tensor) -> torch.Tensor:
    return y.clone(memory_format=torch.contiguous_format)


def reshape(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """Row-major reshape (one ``-1`` allowed)."""
    return _copy(x.reshape(shape))


def permute(x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Transpose dimensions: output dim ``i`` is input dim ``dims[i]``."""
    return _copy(x.permute(dims))


def expand(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """Broadcast copy to ``shape`` (``-1`` keeps a dimension)."""
    return _copy(x.expand(shape))


def concat(xs: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Concatenate along ``dim``."""
    return torch.cat(xs, dim)


def slice(x: torch.Tensor, dim: int, start: int, end: int, step: int = 1) -> torch.Tensor:  # noqa: A001
    """``x[..., start:end:step, ...]`` along ``dim`` (python slice semantics)."""
    return _copy(torch.ops.aten.slice.Tensor(x, dim, start, end, step))


def pad(x: torch.Tensor, pads: list[int], value: float = 0.0) -> torch.Tensor:
    """Constant padding, ``pads`` in torch order (last dim first); negative pads crop."""
    return finish(F.pad(x, pads, value=value), x.dtype, x)


def upsample_nearest2d(x: torch.Tensor, output_size: list[int], scale_h: float = 0.0,
                       scale_w: float = 0.0) -> torch.Tensor:
    """Nearest resize of NCHW to ``output_size``; ``scale_*`` > 0 replaces ``in/out`` in the index rule."""
    return _copy(torch.ops.aten.upsample_nearest2d.default(x, output_size, scale_h or None, scale_w or None))


def upsample_bilinear2d(x: torch.Tensor, output_size: list[int], align_corners: bool, scale_h: float = 0.0,
                        scale_w: float = 0.0) -> torch.Tensor:
    """Bilinear resize of NCHW (f32 interpolation, one rounding)."""
    y = torch.ops.aten.upsample_bilinear2d.default(up(x), output_size, align_corners, scale_h or None,
                                                   scale_w or None)
    return finish(y, x.dtype, x)


def embedding(table: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Row lookup ``y[..., :] = table[indices[...], :]`` (index_select on a constant table)."""
    return torch.index_select(table, 0, indices.reshape(-1)).reshape(*indices.shape, table.shape[-1])


def _embedding_fake(table, indices):
    return table.new_empty((*indices.shape, table.shape[-1]))


def gather(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``torch.gather``: ``y[i][j] = x[i][index[i][j]]`` along ``dim``."""
    return torch.gather(x, dim, index)


def _gather_fake(x, dim, index):
    return x.new_empty(index.shape)


def copy(x: torch.Tensor) -> torch.Tensor:
    """A new tensor equal to ``x``."""
    return _copy(x)


def full(size: list[int], value: float, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of ``size`` filled with ``value`` rounded to ``dtype``."""
    return torch.full(size, value, dtype=dtype)


def _reshape_fake(x, shape):
    return x.new_empty(x.reshape(shape).shape)


def _permute_fake(x, dims):
    return x.new_empty([x.shape[d] for d in dims])


def _expand_fake(x, shape):
    return x.new_empty(x.expand(shape).shape)


def _concat_fake(xs, dim):
    shape = list(xs[0].shape)
    shape[dim] = sum(t.shape[dim] for t in xs)
    return xs[0].new_empty(shape)


def _slice_fake(x, dim, start, end, step=1):
    shape = list(x.shape)
    shape[dim] = len(range(*builtins.slice(start, end, step).indices(x.shape[dim])))
    return x.new_empty(shape)


OPS = (
    OpDef("reshape", reshape, _reshape_fake),
    OpDef("permute", permute, _permute_fake),
    OpDef("expand", expand, _expand_fake),
    OpDef("concat", concat, _concat_fake),
    OpDef("slice", slice, _slice_fake),
    OpDef("pad", pad, fake_by_reference(pad)),
    OpDef("upsample_nearest2d", upsample_nearest2d, fake_by_reference(upsample_nearest2d)),
    OpDef("upsample_bilinear2d", upsample_bilinear2d, fake_by_reference(upsample_bilinear2d)),
    OpDef("embedding", embedding, _embedding_fake),
    OpDef("gather", gather, _gather_fake),
    OpDef("copy", copy, fake_like),
    OpDef("full", full, fake_by_reference(full)),
)

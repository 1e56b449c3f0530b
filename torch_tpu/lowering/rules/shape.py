"""Shape and data-movement ops: view/reshape, squeeze/unsqueeze, permute, expand, cat, slice, select,
split, clone/alias (copy), ``_to_copy`` (copy or cast), embedding, gather, index_select, constant pad,
nearest / bilinear upsampling.

Reshape-like ops take the output shape from ``meta['val']`` (so ``-1`` and squeeze rules are resolved once).
"""

from __future__ import annotations

import functools
import sys

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.registry import RuleTable, is_constant

aten = torch.ops.aten


def lower_reshape(ctx: LowerCtx) -> fx.Node:
    """``view/_unsafe_view/reshape/squeeze/unsqueeze/flatten`` -> ``tpu.reshape`` to the output shape."""
    return ctx.emit("reshape", ctx.operand(0), list(ctx.val("out").shape))


def lower_permute(ctx: LowerCtx) -> fx.Node:
    """``permute(x, dims)``."""
    return ctx.emit("permute", ctx.operand("self"), [int(d) for d in ctx.params["dims"]])


def lower_expand(ctx: LowerCtx) -> fx.Node:
    """``expand(x, size)`` -> ``tpu.expand`` (``tpu.copy`` when the shape does not change)."""
    if tuple(ctx.val("self").shape) == tuple(ctx.val("out").shape):
        return ctx.emit("copy", ctx.operand("self"))
    return ctx.emit("expand", ctx.operand("self"), list(ctx.val("out").shape))


def lower_cat(ctx: LowerCtx) -> fx.Node:
    """``cat(tensors, dim)`` with every operand in the output's storage dtype (empty operands dropped)."""
    dtype = ctx.storage_dtype(ctx.val("out").dtype)
    xs = [ctx.builder.value(t, dtype) for t in ctx.params["tensors"] if t.meta["val"].numel() > 0]
    rank = ctx.val("out").dim()
    return ctx.emit("concat", xs, int(ctx.params["dim"]) % rank)


def _slice_bounds(size: int, start, end) -> tuple[int, int]:
    start = 0 if start is None else int(start)
    end = sys.maxsize if end is None else int(end)
    start, end, _ = slice(start, end).indices(size)
    return start, max(end, start)


def lower_slice(ctx: LowerCtx) -> fx.Node:
    """``slice.Tensor(x, dim, start, end, step)`` with python bounds clamped to the dim size."""
    p = ctx.params
    rank = ctx.val("self").dim()
    dim = int(p["dim"]) % rank
    start, end = _slice_bounds(ctx.val("self").shape[dim], p["start"], p["end"])
    return ctx.emit("slice", ctx.operand("self"), dim, start, end, int(p["step"] or 1))


def lower_select(ctx: LowerCtx) -> fx.Node:
    """``select(x, dim, i)`` -> ``tpu.slice`` (``<name>.slice``) then ``tpu.reshape`` dropping ``dim``."""
    rank = ctx.val("self").dim()
    dim = int(ctx.params["dim"]) % rank
    index = int(ctx.params["index"]) % ctx.val("self").shape[dim]
    s = ctx.emit("slice", ctx.operand("self"), dim, index, index + 1, 1, suffix="slice")
    return ctx.emit("reshape", s, list(ctx.val("out").shape))


def lower_split(ctx: LowerCtx) -> tuple:
    """``split.Tensor`` / ``split_with_sizes`` -> one ``tpu.slice`` per piece (``<name>#i`` order kept)."""
    outs = ctx.val("out")
    rank = ctx.val("self").dim()
    dim = int(ctx.params["dim"]) % rank
    x = ctx.operand("self")
    pieces, start = [], 0
    for i, o in enumerate(outs):
        size = o.shape[dim]
        pieces.append(ctx.emit("slice", x, dim, start, start + size, 1, suffix=f"split{i}"))
        start += size
    return tuple(pieces)


def lower_copy(ctx: LowerCtx) -> fx.Node:
    """``clone/alias/detach/lift_fresh_copy`` -> ``tpu.copy``."""
    return ctx.emit("copy", ctx.operand(0))


def lower_to_copy(ctx: LowerCtx) -> fx.Node:
    """``_to_copy(x, dtype)``: float -> float is a copy at this precision, other changes a ``tpu.cast``."""
    x = ctx.operand("self")
    want = ctx.storage_dtype(ctx.val("out").dtype)
    if x.meta["val"].dtype == want:
        return ctx.emit("copy", x)
    return ctx.emit("cast", x, want)


def to_copy_supported(node: fx.Node) -> bool:
    """Same device, only a dtype (or no) change."""
    p = bind_params(node)
    dev = p.get("device")
    return dev is None or torch.device(dev).type == "cpu"


def embedding_supported(node: fx.Node) -> bool:
    """Constant table."""
    return is_constant(bind_params(node)["weight"])


def lower_embedding(ctx: LowerCtx) -> fx.Node:
    """``embedding(table, idx)`` -> ``tpu.embedding`` with the table in the storage dtype."""
    return ctx.emit("embedding", ctx.operand("weight"), ctx.operand("indices"))


def index_select_supported(node: fx.Node) -> bool:
    """A row lookup: constant 2-D table, dim 0, 1-D index."""
    p = bind_params(node)
    return (is_constant(p["self"]) and p["self"].meta["val"].dim() == 2 and int(p["dim"]) % 2 == 0
            and p["index"].meta["val"].dim() == 1)


def lower_index_select(ctx: LowerCtx) -> fx.Node:
    """``index_select(table, 0, idx)`` -> ``tpu.embedding``."""
    return ctx.emit("embedding", ctx.operand("self"), ctx.operand("index"))


def lower_gather(ctx: LowerCtx) -> fx.Node:
    """``gather(x, dim, index)``."""
    return ctx.emit("gather", ctx.operand("self"), int(ctx.params["dim"]), ctx.operand("index"))


def lower_pad(ctx: LowerCtx) -> fx.Node:
    """``constant_pad_nd(x, pad, value)`` -> ``tpu.pad`` (torch pad order)."""
    return ctx.emit("pad", ctx.operand("self"), [int(v) for v in ctx.params["pad"]],
                    float(ctx.params["value"] or 0.0))


def _scales(ctx: LowerCtx) -> tuple[float, float]:
    p = ctx.params
    if "scale_factors" in p:
        sf = p["scale_factors"]
        if p.get("output_size") is None and sf:
            return float(sf[0]), float(sf[-1])
        return 0.0, 0.0
    return float(p.get("scales_h") or 0.0), float(p.get("scales_w") or 0.0)


def lower_upsample(ctx: LowerCtx, mode: str) -> fx.Node:
    """``upsample_nearest2d`` / ``upsample_bilinear2d`` (``.vec`` and ``.default``)."""
    size = list(ctx.val("out").shape[-2:])
    sh, sw = _scales(ctx)
    if mode == "nearest":
        return ctx.emit("upsample_nearest2d", ctx.operand("input"), size, sh, sw)
    return ctx.emit("upsample_bilinear2d", ctx.operand("input"), size, bool(ctx.params["align_corners"]), sh, sw)


def lower_metadata_assert(ctx: LowerCtx) -> None:
    """``_assert_tensor_metadata`` checks a dtype at trace time; it has no value and emits nothing."""
    return None


def register(table: RuleTable) -> None:
    """Add this family's rules to ``table`` (called once, from ``rules/__init__.py``)."""
    for op in (aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.squeeze.dims,
               aten.squeeze.dim, aten.squeeze.default, aten.unsqueeze.default):
        table.register(op, lower_reshape)
    table.register(aten.permute.default, lower_permute)
    table.register(aten.expand.default, lower_expand)
    table.register(aten.cat.default, lower_cat)
    table.register(aten.slice.Tensor, lower_slice)
    table.register(aten.select.int, lower_select)
    table.register(aten.split.Tensor, lower_split)
    table.register(aten.split_with_sizes.default, lower_split)
    for op in (aten.clone.default, aten.alias.default, aten.detach.default, aten.lift_fresh_copy.default):
        table.register(op, lower_copy)
    table.register(aten._to_copy.default, lower_to_copy, extra_check=to_copy_supported,
                   reason="a device change")
    table.register(aten.embedding.default, lower_embedding, extra_check=embedding_supported,
                   reason="embedding with a computed table")
    table.register(aten.index_select.default, lower_index_select, extra_check=index_select_supported,
                   reason="only row lookups in a constant 2-D table")
    table.register(aten._assert_tensor_metadata.default, lower_metadata_assert)
    table.register(aten.gather.default, lower_gather)
    table.register(aten.constant_pad_nd.default, lower_pad)
    for op, mode in ((aten.upsample_nearest2d.vec, "nearest"), (aten.upsample_nearest2d.default, "nearest"),
                     (aten.upsample_bilinear2d.vec, "bilinear"), (aten.upsample_bilinear2d.default, "bilinear")):
        table.register(op, functools.partial(lower_upsample, mode=mode))

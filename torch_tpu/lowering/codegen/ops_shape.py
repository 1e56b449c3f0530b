"""Codegen of shape ops as DDR -> DDR ``dma_copy`` (rank <= 4; dims are counted after padding to N,C,H,W):

=============  ===========================================================================================
reshape        an alias of its input (no instruction, ``ddr_plan``); a graph output gets a dense copy
permute        ``dst = src`` viewed with permuted strides: ``src_view.strides[i] = x.strides[dims[i]]``
expand         broadcast copy: a dim of 1 read with stride 0
concat         one copy per input into its block of the output (offset = sum of the earlier sizes on dim)
slice          ``src_view = x`` from ``start`` with stride ``step * x.strides[dim]`` and the output's size
pad            fill: the pad value (one element in the weight region, stride-0 view) copied over the whole
               output, then the input copied into its interior (non-negative pads only)
=============  ===========================================================================================
"""

from __future__ import annotations

import torch

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType
from torch_tpu.errors import UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx
from torch_tpu.lowering.codegen.emitter import broadcast_view, sub_view, to4d

WHERE = "codegen (torch_tpu/lowering/codegen/ops_shape.py)"


def _rank_ok(ctx: OpCtx, op: str) -> int:
    """The output rank; ``UnsupportedOpError`` when it or an input's rank exceeds 4."""
    ranks = [ctx.node.meta["val"].dim()]
    torch.fx.node.map_arg(ctx.node.args, lambda n: ranks.append(n.meta["val"].dim()))
    if max(ranks) > 4:
        raise UnsupportedOpError(f"tpu.{op}", name=ctx.layer, where=WHERE, reason="rank > 4")
    return ranks[0]


def _copy(ctx: OpCtx, src: DdrTensor, dst: DdrTensor) -> None:
    ctx.em.emit(isa.DmaCopy, ctx.layer, src=src, dst=dst)


def gen_reshape(ctx: OpCtx) -> None:
    """An alias unless it is a graph output (then a dense copy of the same bytes)."""
    if ctx.node in ctx.plan.aliases:
        return
    n = ctx.node.meta["val"].numel()
    _copy(ctx, ctx.operand(ctx.node.args[0], (1, 1, 1, n)), ctx.out((1, 1, 1, n)))


def gen_permute(ctx: OpCtx) -> None:
    rank = _rank_ok(ctx, "permute")
    x = ctx.operand(ctx.node.args[0])
    off = 4 - rank
    dims = list(range(off)) + [off + int(d) % rank for d in ctx.node.args[1]]
    out = ctx.out()
    src = DdrTensor(x.addr, out.shape, tuple(x.strides[d] for d in dims), x.dtype)
    _copy(ctx, src, out)


def gen_expand(ctx: OpCtx) -> None:
    _rank_ok(ctx, "expand")
    out = ctx.out()
    xv = ctx.node.args[0].meta["val"]
    x = ctx.operand(ctx.node.args[0], to4d((1,) * (ctx.node.meta["val"].dim() - xv.dim()) + tuple(xv.shape)))
    _copy(ctx, broadcast_view(x, out.shape), out)


def gen_concat(ctx: OpCtx) -> None:
    rank = _rank_ok(ctx, "concat")
    d = 4 - rank + int(ctx.node.args[1]) % rank
    out = ctx.out()
    pos = 0
    for a in ctx.node.args[0]:
        x = ctx.operand(a)
        start = [0, 0, 0, 0]
        start[d] = pos
        if x.shape[d]:
            _copy(ctx, x, sub_view(out, tuple(start), x.shape))
        pos += x.shape[d]


def gen_slice(ctx: OpCtx) -> None:
    rank = _rank_ok(ctx, "slice")
    a = list(ctx.node.args) + [None] * 5
    x = ctx.operand(a[0])
    d = 4 - rank + int(a[1]) % rank
    size = x.shape[d]
    start = 0 if a[2] is None else int(a[2])
    step = 1 if a[4] is None else int(a[4])
    start = min(max(start + size if start < 0 else start, 0), size)
    out = ctx.out()
    if out.numel == 0:
        return
    strides = list(x.strides)
    strides[d] *= step
    _copy(ctx, DdrTensor(x.addr + start * x.strides[d] * x.dtype.size, out.shape, tuple(strides), x.dtype), out)


def gen_pad(ctx: OpCtx) -> None:
    _rank_ok(ctx, "pad")
    pads = [int(p) for p in ctx.node.args[1]]
    value = float(ctx.node.args[2]) if len(ctx.node.args) > 2 else 0.0
    if min(pads, default=0) < 0:
        raise UnsupportedOpError("tpu.pad", name=ctx.layer, where=WHERE, reason="negative (cropping) pads")
    out = ctx.out()
    x = ctx.operand(ctx.node.args[0])
    dt = DType.from_torch(ctx.node.meta["val"].dtype)
    fill = ctx.weights.add(("pad_value", value, dt), torch.tensor([value], dtype=dt.torch), (1, 1, 1, 1), dt)
    _copy(ctx, broadcast_view(fill, out.shape), out)
    start = [0, 0, 0, 0]
    for i in range(len(pads) // 2):  # torch order: last dim first, (before, after) pairs
        start[3 - i] = pads[2 * i]
    _copy(ctx, x, sub_view(out, tuple(start), x.shape))

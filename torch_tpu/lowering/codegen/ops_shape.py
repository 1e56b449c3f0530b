"""Codegen of data movement as DDR -> DDR ``dma_copy`` (any rank: ``emitter.copy_nd`` merges contiguous dims
and loops over what is left beyond 4):

=================  =======================================================================================
reshape            a view of its input (no instruction, ``ddr_plan``); a graph output gets a dense copy
copy               a dense copy
permute            ``dst = src`` viewed with permuted strides: ``src_view.strides[i] = x.strides[dims[i]]``
expand             broadcast copy: a dim of 1 read with stride 0
concat             one copy per input into its block of the output (offset = sum of the earlier sizes on dim),
                   except the inputs whose producers wrote their block in place (``DdrPlan.in_place``)
slice              a view of its input when its bytes are one contiguous range of it (``ddr_plan``), else
                   ``src_view = x`` from ``start`` with stride ``step * x.strides[dim]`` and the output's size
pad                fill: the pad value (one element in the weight region, stride-0 view) copied over the
                   output when any pad is positive, then the kept part of the input copied into its place
                   (a negative pad crops: the source starts ``-pad`` elements in)
full               the value (one element in the weight region) copied with stride 0 over the output
=================  =======================================================================================
"""

from __future__ import annotations

import torch

from torch_tpu.cmodel.operands import DdrTensor
from torch_tpu.lowering.codegen.context import OpCtx
from torch_tpu.lowering.codegen.ddr_plan import cm_dtype
from torch_tpu.lowering.codegen.emitter import copy_nd, dense_strides



def _shape(node) -> tuple[int, ...]:
    return tuple(int(d) for d in node.meta["val"].shape)


def _src(ctx: OpCtx, arg) -> DdrTensor:
    """The flat DDR view of a value or constant (its address and dtype; strides come from its real shape)."""
    n = 1
    for d in _shape(arg) if not ctx.is_const(arg) else ctx.const_tensor(arg).shape:
        n *= int(d)
    return ctx.operand(arg, (1, 1, 1, max(n, 1)))


def _out_addr(ctx: OpCtx) -> int:
    return ctx.out((1, 1, 1, max(ctx.node.meta["val"].numel(), 1))).addr


def _arg_shape(ctx: OpCtx, arg) -> tuple[int, ...]:
    return tuple(int(d) for d in (ctx.const_tensor(arg).shape if ctx.is_const(arg) else _shape(arg)))


def _fill(ctx: OpCtx, value: float, shape: tuple[int, ...]) -> None:
    """Copy one constant element (weight region) over the whole output with a stride-0 source."""
    dt = cm_dtype(ctx.node.meta["val"].dtype)
    one = ctx.weights.add(("fill_value", value, dt), torch.tensor([value], dtype=ctx.node.meta["val"].dtype),
                          (1, 1, 1, 1), dt)
    copy_nd(ctx.em, ctx.layer, dt, shape, (one.addr, (0,) * len(shape)), (_out_addr(ctx), dense_strides(shape)))


def gen_reshape(ctx: OpCtx) -> None:
    """A view of its input (nothing to emit) unless it is a graph output (then a dense copy of the same bytes)."""
    if ctx.plan.is_view(ctx.node):
        return
    gen_copy(ctx)


def gen_copy(ctx: OpCtx) -> None:
    """``tpu.copy(x)`` (and a reshape that is a graph output): one dense copy."""
    n = ctx.node.meta["val"].numel()
    x = _src(ctx, ctx.node.args[0])
    copy_nd(ctx.em, ctx.layer, x.dtype, (n,), (x.addr, (1,)), (_out_addr(ctx), (1,)))


def gen_permute(ctx: OpCtx) -> None:
    xshape = _arg_shape(ctx, ctx.node.args[0])
    x = _src(ctx, ctx.node.args[0])
    xs = dense_strides(xshape)
    dims = [int(d) % len(xshape) for d in ctx.node.args[1]]
    out = _shape(ctx.node)
    copy_nd(ctx.em, ctx.layer, x.dtype, out, (x.addr, tuple(xs[d] for d in dims)), (_out_addr(ctx), dense_strides(out)))


def gen_expand(ctx: OpCtx) -> None:
    out = _shape(ctx.node)
    xshape = (1,) * (len(out) - len(_arg_shape(ctx, ctx.node.args[0]))) + _arg_shape(ctx, ctx.node.args[0])
    x = _src(ctx, ctx.node.args[0])
    strides = tuple(0 if d == 1 and o != 1 else s for d, o, s in zip(xshape, out, dense_strides(xshape)))
    copy_nd(ctx.em, ctx.layer, x.dtype, out, (x.addr, strides), (_out_addr(ctx), dense_strides(out)))


def gen_concat(ctx: OpCtx) -> None:
    """One copy per input into its block of the output; an input written there in place is skipped."""
    out = _shape(ctx.node)
    d = int(ctx.node.args[1]) % len(out)
    ostr = dense_strides(out)
    pos = 0
    for a in ctx.node.args[0]:
        shape = _arg_shape(ctx, a)
        if ctx.plan.in_place(a, ctx.node):
            pos += shape[d]
            continue
        x = _src(ctx, a)
        copy_nd(ctx.em, ctx.layer, x.dtype, shape, (x.addr, dense_strides(shape)),
                (_out_addr(ctx) + pos * ostr[d] * x.dtype.size, ostr))
        pos += shape[d]


def gen_slice(ctx: OpCtx) -> None:
    """A view of its input (nothing to emit, ``ddr_plan``) or a strided copy."""
    if ctx.plan.is_view(ctx.node):
        return
    a = list(ctx.node.args) + [None] * 5
    xshape = _arg_shape(ctx, a[0])
    x = _src(ctx, a[0])
    d = int(a[1]) % len(xshape)
    size = xshape[d]
    start = 0 if a[2] is None else int(a[2])
    step = 1 if a[4] is None else int(a[4])
    start = min(max(start + size if start < 0 else start, 0), size)
    out = _shape(ctx.node)
    strides = list(dense_strides(xshape))
    off = start * strides[d]
    strides[d] *= step
    copy_nd(ctx.em, ctx.layer, x.dtype, out, (x.addr + off * x.dtype.size, strides),
            (_out_addr(ctx), dense_strides(out)))


def gen_pad(ctx: OpCtx) -> None:
    pads = [int(p) for p in ctx.node.args[1]]
    value = float(ctx.node.args[2]) if len(ctx.node.args) > 2 else 0.0
    xshape = _arg_shape(ctx, ctx.node.args[0])
    out = _shape(ctx.node)
    x = _src(ctx, ctx.node.args[0])
    if max(pads, default=0) > 0:
        _fill(ctx, value, out)
    xs, os_ = dense_strides(xshape), dense_strides(out)
    src_off = dst_off = 0
    kept = list(xshape)
    for i in range(len(pads) // 2):  # torch order: last dim first, (before, after) pairs
        dim = len(xshape) - 1 - i
        lo, hi = pads[2 * i], pads[2 * i + 1]
        src_off += max(-lo, 0) * xs[dim]
        dst_off += max(lo, 0) * os_[dim]
        kept[dim] = xshape[dim] + min(lo, 0) + min(hi, 0)
    if min(kept, default=1) > 0:
        copy_nd(ctx.em, ctx.layer, x.dtype, kept, (x.addr + src_off * x.dtype.size, xs),
                (_out_addr(ctx) + dst_off * x.dtype.size, os_))


def gen_full(ctx: OpCtx) -> None:
    """``tpu.full(size, value, dtype)``: the value rounded to the dtype, copied over the output."""
    _fill(ctx, float(ctx.node.args[1]), _shape(ctx.node))

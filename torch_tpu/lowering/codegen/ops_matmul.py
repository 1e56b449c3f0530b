"""Codegen of ``tpu.linear(x, W[N, K], b[N], act, act_min, act_max)`` -> ``matmul`` tiles.

Linear: ``x`` (.., K) is viewed as ``a = (1, M, 1, K)`` (M = product of the leading dims, on the lanes);
the weight is packed transposed as ``b = (1, K, 1, N)``, the bias as ``(1, 1, 1, N)``::

    out[0, m, 0, n] = act(bias[n] + sum_k a[0, m, 0, k] * W[n, k])

M is cut into slices of whole rows (N batches of the ``(mb, M / mb, 1, K)`` view) when it does not fit.
``tpu.matmul`` of two values: ``a (B, M, 1, K) @ b (B, K, 1, N)``, sliced along B.
"""

from __future__ import annotations

import math

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DType, LocalTensor
from torch_tpu.errors import UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx, plan_slices, row_batches, run_pipeline, sliced_rows
from torch_tpu.lowering.codegen.emitter import sub_view, tile_bytes

WHERE = "codegen (torch_tpu/lowering/codegen/ops_matmul.py)"


def gen_linear(ctx: OpCtx) -> None:
    """``tpu.linear`` -> ``matmul`` per slice of rows (one MatMul per batch item of the view)."""
    a = list(ctx.node.args) + [None] * 6
    x, w, b = a[:3]
    act = a[3] or "none"
    lo, hi = float(a[4] or 0.0), float(a[5] or 0.0)
    wt = ctx.const_tensor(w)
    n_out, k = wt.shape
    shape = tuple(x.meta["val"].shape)
    rows = math.prod(shape[:-1])
    nb = row_batches(rows, ctx.target.lanes)
    wd = DType.from_torch(wt.dtype)
    w_ddr = ctx.weights.add((w.target, "kn"), wt.t(), (1, k, 1, n_out), wd)
    b_ddr = None
    if b is not None:
        bt = ctx.const_tensor(b)
        b_ddr = ctx.weights.add((b.target, "row"), bt, (1, 1, 1, n_out), DType.from_torch(bt.dtype))
    t = ctx.target
    const_bytes = tile_bytes(t, w_ddr.shape, wd) + (tile_bytes(t, b_ddr.shape, b_ddr.dtype) if b_ddr else 0)
    w_tile = ctx.em.load(w_ddr, ctx.em.arena.tile(w_ddr.shape, wd), ctx.layer)
    b_tile = ctx.em.load(b_ddr, ctx.em.arena.tile(b_ddr.shape, b_ddr.dtype), ctx.layer) if b_ddr else None
    fields = dict(act=act, act_lo=lo if act == "clip" else 0.0, act_hi=hi if act == "clip" else 0.0)

    def emit(xs: LocalTensor, os_: LocalTensor) -> None:  # a (B, M, 1, K) x b (1, K, 1, N): B shares b
        ctx.em.emit(isa.MatMul, ctx.layer, a=xs, b=w_tile, bias=b_tile, out=os_, **fields)

    sliced_rows(ctx, ctx.value(x, (nb, rows // nb, 1, k)), ctx.out((nb, rows // nb, 1, n_out)), const_bytes, emit)


def gen_matmul(ctx: OpCtx) -> None:
    """``tpu.matmul(a, b)`` of two values ``(.., M, K) @ (.., K, N)`` with equal leading dims (B = their
    product) -> ``matmul`` of ``a (B, M, 1, K)`` and ``b (B, K, 1, N)``, tiled along B (double-buffered)."""
    x, y = ctx.node.args[:2]
    xs, ys = tuple(x.meta["val"].shape), tuple(y.meta["val"].shape)
    if len(xs) < 2 or len(ys) < 2 or xs[:-2] != ys[:-2] or ctx.is_const(x) or ctx.is_const(y):
        raise UnsupportedOpError("tpu.matmul", name=ctx.layer, where=WHERE,
                                 reason=f"only equal batch dims of two computed values, got {xs} @ {ys}")
    m, k, n = xs[-2], xs[-1], ys[-1]
    bsz = math.prod(xs[:-2])
    views = [ctx.value(x, (bsz, m, 1, k)), ctx.value(y, (bsz, k, 1, n))]
    out = ctx.out((bsz, m, 1, n))
    t = ctx.target

    def slice_bytes(b: int, _r: int) -> int:
        return sum(tile_bytes(t, (b,) + v.shape[1:], v.dtype) for v in views + [out])

    slices, double = plan_slices(bsz, 1, slice_bytes, 0, t.local_mem_bytes, ctx.layer)
    b0, b1, _, _ = slices[0]
    sets = [[ctx.em.arena.tile((b1 - b0,) + v.shape[1:], v.dtype) for v in views + [out]]
            for _ in range(2 if double else 1)]

    def load(i: int) -> list[LocalTensor]:
        b0, b1, _, _ = slices[i]
        tiles = []
        for v, buf in zip(views, sets[i % len(sets)]):
            tile = LocalTensor(0, buf.addr, (b1 - b0,) + v.shape[1:], v.dtype)
            ctx.em.load(sub_view(v, (b0, 0, 0, 0), tile.shape), tile, ctx.layer)
            tiles.append(tile)
        return tiles

    def comp(i: int, tiles: list[LocalTensor]) -> LocalTensor:
        o = LocalTensor(0, sets[i % len(sets)][2].addr, (tiles[0].shape[0], m, 1, n), out.dtype)
        ctx.em.emit(isa.MatMul, ctx.layer, a=tiles[0], b=tiles[1], out=o)
        return o

    def store(i: int, o: LocalTensor) -> None:
        ctx.em.store(o, sub_view(out, (slices[i][0], 0, 0, 0), o.shape), ctx.layer)

    run_pipeline(len(slices), double, load, comp, store)

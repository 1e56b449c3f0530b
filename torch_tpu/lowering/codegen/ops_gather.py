"""Codegen of ``tpu.embedding(table, indices)``: a row gather with run-time indices.

The constant table ``(V, D)`` is packed as ``(1, V, 1, D)`` (rows on the lanes) in the weight region; the
indices (int64 in the graph, int32 in the Program: ``ddr_plan.cm_dtype``) are loaded as an ``(nb, M / nb,
1, 1)`` tile and the output ``(nb, M / nb, 1, D)`` stays in local memory while the table streams through in
blocks of rows (double-buffered)::

    block j = rows [v0, v1):   gather(table=block, index, prev=out (j > 0), out, base=v0)
    out[m] = table[idx[m]]     when v0 <= idx[m] < v1, else what earlier blocks wrote

An index outside ``[0, V)`` yields a row of zeros (the reference op raises instead).
"""

from __future__ import annotations

import math

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DType, LocalTensor
from torch_tpu.errors import ProgramError, UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx, row_batches
from torch_tpu.lowering.codegen.ddr_plan import cm_dtype
from torch_tpu.lowering.codegen.emitter import sub_view, tile_bytes

WHERE = "codegen (torch_tpu/lowering/codegen/ops_gather.py)"


def gen_embedding(ctx: OpCtx) -> None:
    """``tpu.embedding(table, indices)`` -> ``gather`` per block of table rows."""
    table, idx = ctx.node.args[:2]
    if not ctx.is_const(table) or ctx.is_const(idx):
        raise UnsupportedOpError("tpu.embedding", name=ctx.layer, where=WHERE,
                                 reason="needs a constant table and computed indices")
    tt = ctx.const_tensor(table)
    v, d = (int(s) for s in tt.shape)
    dt = cm_dtype(tt.dtype)
    m = max(idx.meta["val"].numel(), 1)
    nb = row_batches(m, ctx.target.lanes)
    t = ctx.target
    tab = ctx.weights.add((table.target, "rows"), tt, (1, v, 1, d), dt)
    idx_ddr = ctx.value(idx, (nb, m // nb, 1, 1))
    out = ctx.out((nb, m // nb, 1, d))
    fixed = tile_bytes(t, idx_ddr.shape, DType.INT32) + tile_bytes(t, out.shape, dt)
    free = t.local_mem_bytes - fixed
    row_bytes = tile_bytes(t, (1, 1, 1, d), dt)  # one channel group of the table
    groups = free // (2 * row_bytes)  # double-buffered blocks of `groups` channel groups
    if groups < 1:
        raise ProgramError(f"codegen: {ctx.layer}: {m} indices, their {d}-wide output rows and one table row do "
                           f"not fit {t.local_mem_bytes} bytes of local memory per lane")
    vb = min(v, groups * t.lanes)
    blocks = [(v0, min(v0 + vb, v)) for v0 in range(0, v, vb)]
    double = len(blocks) > 1
    it = ctx.em.load(idx_ddr, ctx.em.arena.tile(idx_ddr.shape, DType.INT32), ctx.layer)
    ot = ctx.em.arena.tile(out.shape, dt)
    bufs = [ctx.em.arena.tile((1, vb, 1, d), dt) for _ in range(2 if double else 1)]

    def load(j: int) -> LocalTensor:
        v0, v1 = blocks[j]
        blk = LocalTensor(0, bufs[j % len(bufs)].addr, (1, v1 - v0, 1, d), dt)
        return ctx.em.load(sub_view(tab, (0, v0, 0, 0), blk.shape), blk, ctx.layer)

    pending = {0: load(0)}
    for j, (v0, _) in enumerate(blocks):
        if double and j + 1 < len(blocks):
            pending[j + 1] = load(j + 1)
        ctx.em.emit(isa.Gather, ctx.layer, table=pending.pop(j), index=it, prev=ot if j else None, out=ot, base=v0)
    ctx.em.store(ot, out, ctx.layer)
    if math.prod(out.shape) != ctx.node.meta["val"].numel():
        raise ProgramError(f"codegen: {ctx.layer}: embedding output {tuple(ctx.node.meta['val'].shape)}")

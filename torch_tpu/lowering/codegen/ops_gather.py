"""Codegen of the gathers ``tpu.embedding(table, indices)`` and ``tpu.gather(x, dim, index)``.

Embedding: a row gather with run-time indices.

The constant table ``(V, D)`` is packed as ``(1, V, 1, D)`` (rows on the lanes) in the weight region; the
indices (int64 in the graph, int32 in the Program: ``ddr_plan.cm_dtype``) are loaded as an ``(nb, M / nb,
1, 1)`` tile and the output ``(nb, M / nb, 1, D)`` stays in local memory while the table streams through in
blocks of rows (double-buffered)::

    block j = rows [v0, v1):   gather(table=block, index, prev=out (j > 0), out, base=v0)
    out[m] = table[idx[m]]     when v0 <= idx[m] < v1, else what earlier blocks wrote

An index outside ``[0, V)`` yields a row of zeros (the reference op raises instead).

``torch.gather`` along ``dim``: every output element is one element of ``x``, at the flat offset
``flat[m] = index[m] * xs[dim] + off[m]`` where ``xs`` are x's dense strides and ``off[m] = sum_{k != dim}
i_k * xs[k]`` over the output's own coordinates (a constant, packed as int32). ``x`` is the table
``(1, numel, 1, 1)`` (one element a row), the output is cut into chunks of ``k`` elements ``(1, k, 1, 1)``::

    flat  = index * xs[dim] + off                              eltwise mul (scalar), add (int32)
    flat  = select(index >= 0, flat, -1); select(index < size, flat, -1)    compare, select
    block j = elements [v0, v1) of x:   gather(table=block, index=flat, prev=out (j > 0), out, base=v0)

A chunk only reads x between ``min(off)`` and ``max(off) + (size - 1) * xs[dim]``, so those blocks stream
through (double-buffered); an index outside ``[0, size)`` gives 0 (the reference op raises). A constant
index is folded into ``flat`` at codegen (an index out of range is then an ``UnsupportedOpError``).
"""

from __future__ import annotations

import math

import torch

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DType, LocalTensor
from torch_tpu.errors import ProgramError, UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx, row_batches
from torch_tpu.lowering.codegen.ddr_plan import cm_dtype
from torch_tpu.lowering.codegen.emitter import dense_strides, sub_view, tile_bytes

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


def _offsets(xshape: tuple[int, ...], ishape: tuple[int, ...], dim: int) -> torch.Tensor:
    """``off[i] = sum_{k != dim} i_k * xs[k]`` over the index's shape (int64), ``xs`` x's dense strides."""
    xs = dense_strides(xshape)
    off = torch.zeros(ishape, dtype=torch.int64)
    for k, (n, st) in enumerate(zip(ishape, xs)):
        if k != dim and n > 1:
            view = [1] * len(ishape)
            view[k] = n
            off = off + torch.arange(n, dtype=torch.int64).reshape(view) * st
    return off.reshape(-1)


def _chunk_elems(ctx: OpCtx, m: int, dt: DType, computed_index: bool) -> tuple[int, int]:
    """(elements per output chunk, table elements per block): a chunk's tiles take at most half a lane, two
    table blocks the rest."""
    t = ctx.target

    def fixed(k: int) -> int:
        shape = (1, k, 1, 1)
        total = tile_bytes(t, shape, DType.INT32) + tile_bytes(t, shape, dt)  # flat index, output
        if computed_index:  # index, offsets, mask, the -1 element
            total += (2 * tile_bytes(t, shape, DType.INT32) + tile_bytes(t, shape, DType.UINT8)
                      + tile_bytes(t, (1, 1, 1, 1), DType.INT32))
        return total

    k = m
    while k > t.lanes and fixed(k) > t.local_mem_bytes // 2:
        k = max(t.lanes, (k // 2 + t.lanes - 1) // t.lanes * t.lanes)
    groups = (t.local_mem_bytes - fixed(k)) // (2 * tile_bytes(t, (1, 1, 1, 1), dt))
    if groups < 1:
        raise ProgramError(f"codegen: {ctx.layer}: {k} gathered elements and one table row do not fit "
                           f"{t.local_mem_bytes} bytes of local memory per lane")
    return k, groups * t.lanes


def gen_gather(ctx: OpCtx) -> None:
    """``tpu.gather(x, dim, index)`` -> per output chunk: the flat x offsets (int32 eltwise, masks), then one
    ``gather`` per block of x elements the chunk can reach (see the module docstring)."""
    x, dim, index = ctx.node.args[:3]
    xshape = tuple(int(d) for d in (ctx.const_tensor(x).shape if ctx.is_const(x) else x.meta["val"].shape))
    ishape = tuple(int(d) for d in ctx.node.meta["val"].shape)
    rank = max(len(xshape), 1)
    dim = int(dim) % rank
    if len(ishape) != len(xshape) or any(i > n for k, (i, n) in enumerate(zip(ishape, xshape)) if k != dim):
        raise UnsupportedOpError("tpu.gather", name=ctx.layer, where=WHERE,
                                 reason=f"index shape {ishape} does not fit x {xshape} along dim {dim}")
    m, v = math.prod(ishape), math.prod(xshape)
    if m == 0:
        return
    size, step = xshape[dim] if xshape else 1, dense_strides(xshape)[dim] if xshape else 1
    off = _offsets(xshape, ishape, dim)
    if v >= 2 ** 31:
        raise ProgramError(f"codegen: {ctx.layer}: {v} elements of x exceed int32 offsets")
    dt = cm_dtype(ctx.node.meta["val"].dtype)
    table = ctx.operand(x, (1, v, 1, 1))
    out = ctx.out((1, m, 1, 1))
    const_index = ctx.is_const(index)
    if const_index:
        idx = ctx.const_tensor(index).reshape(-1).to(torch.int64)
        bad = (idx < 0) | (idx >= size)
        if bool(bad.any()):
            raise UnsupportedOpError("tpu.gather", name=ctx.layer, where=WHERE,
                                     reason=f"constant index {int(idx[bad][0])} outside [0, {size}) on dim {dim}")
        flat_c = idx * step + off
        reach = flat_c
        flat_ddr = ctx.weights.add((index.target, "gather_flat", xshape, dim), flat_c.to(torch.int32),
                                   (1, m, 1, 1), DType.INT32)
    else:
        reach = None
        idx_ddr = ctx.value(index, (1, m, 1, 1))
        off_ddr = ctx.weights.add(("gather_offsets", xshape, ishape, dim), off.to(torch.int32), (1, m, 1, 1),
                                  DType.INT32)
        neg = ctx.weights.add(("gather_miss",), torch.tensor([-1], dtype=torch.int32), (1, 1, 1, 1), DType.INT32)
    k, vb = _chunk_elems(ctx, m, dt, not const_index)
    ar, em, layer = ctx.em.arena, ctx.em, ctx.layer
    neg_t = None if const_index else em.load(neg, ar.tile((1, 1, 1, 1), DType.INT32), layer)
    flat_buf, out_buf = ar.tile((1, k, 1, 1), DType.INT32), ar.tile((1, k, 1, 1), dt)
    if not const_index:
        idx_buf, off_buf = ar.tile((1, k, 1, 1), DType.INT32), ar.tile((1, k, 1, 1), DType.INT32)
        mask_buf = ar.tile((1, k, 1, 1), DType.UINT8)
    blk_bufs = [ar.tile((1, min(vb, v), 1, 1), dt) for _ in range(2)]
    nblk = 0
    for m0 in range(0, m, k):
        m1 = min(m0 + k, m)
        shape = (1, m1 - m0, 1, 1)

        def tile(buf: LocalTensor) -> LocalTensor:
            return LocalTensor(0, buf.addr, shape, buf.dtype)

        flat = tile(flat_buf)
        if const_index:
            em.load(sub_view(flat_ddr, (0, m0, 0, 0), shape), flat, layer)
            lo, hi = int(reach[m0:m1].min()), int(reach[m0:m1].max()) + 1
        else:
            it, ot, mk = tile(idx_buf), tile(off_buf), tile(mask_buf)
            em.load(sub_view(idx_ddr, (0, m0, 0, 0), shape), it, layer)
            em.load(sub_view(off_ddr, (0, m0, 0, 0), shape), ot, layer)
            em.emit(isa.Eltwise, layer, op="mul", a=it, scalar=float(step), out=flat)
            em.emit(isa.Eltwise, layer, op="add", a=flat, b=ot, out=flat)
            for op, bound in (("ge", 0.0), ("lt", float(size))):
                em.emit(isa.Compare, layer, op=op, a=it, scalar=bound, out=mk)
                em.emit(isa.Select, layer, cond=mk, a=flat, b=neg_t, out=flat)
            lo, hi = int(off[m0:m1].min()), int(off[m0:m1].max()) + (size - 1) * step + 1
        o_t = tile(out_buf)
        blocks = [(v0, min(v0 + vb, hi)) for v0 in range(lo, hi, vb)]

        def load(j: int) -> LocalTensor:
            v0, v1 = blocks[j]
            buf = blk_bufs[(nblk + j) % 2]
            return em.load(sub_view(table, (0, v0, 0, 0), (1, v1 - v0, 1, 1)),
                           LocalTensor(0, buf.addr, (1, v1 - v0, 1, 1), dt), layer)

        pending = {0: load(0)}
        for j, (v0, _) in enumerate(blocks):
            if j + 1 < len(blocks):
                pending[j + 1] = load(j + 1)
            em.emit(isa.Gather, layer, table=pending.pop(j), index=flat, prev=o_t if j else None, out=o_t, base=v0)
        nblk += len(blocks)
        em.store(o_t, sub_view(out, (0, m0, 0, 0), shape), layer)

"""Codegen of the resizes ``tpu.upsample_nearest2d`` and ``tpu.upsample_bilinear2d``.

Nearest, ``y[:, :, o, p] = x[:, :, rows[o], cols[p]]`` with the maps read off the reference op itself
(``rows[o] = floor(o * scale)`` as torch's ``nearest``, ``scale = in / out`` or ``1 / scale_h``): each map is
cut into runs of equal source index and the runs into *groups* that repeat with a period (``_axis_groups``)::

    group (o0, s0, run, count, step_o, step_s):  out[o0 + step_o * t + j] = src[s0 + step_s * t]
                                                 for t < count, j < run

A whole repeat or step factor is one group per axis; a factor like 2 -> 3 has two (0, 0, 1 | 2, 2, 3 ...);
a map with no period has one group per run. Every (H group, W group) pair is one DDR -> DDR ``dma_copy``
(columns repeated by a stride-0 source dim) that writes the first row of each H run, and each H group with
runs longer than 1 one more copy of those rows to the ones below them. When that is more than
``NEAREST_DIRECT_COPIES`` copies, the W resize goes to a DDR scratch ``(N*C*H, Wo)`` first (one copy per W
group) and the H resize copies from it (one per H group).

Bilinear, separable like the reference (PyTorch's kernel: ``h0l * (w0l x00 + w1l x01) + h1l * (w0l x10 + w1l x11)`` in f32, one rounding)::

    t[h] = x[:, :, h, :] @ Aw^T          matmul, Aw (Wo, W) holds each output column's two weights (f32)
    y[:, :, o, :] = l0[o] * t[h0[o]] + l1[o] * t[h1[o]]     eltwise mul, mul, add (rounded once to y's dtype)

The weights are the reference op's own: ``Aw`` / ``(h0, h1, l0, l1)`` are read off the op applied to one-hot
inputs (``1.0 * l`` is exact), so the index rule (align_corners, scales) is never re-derived. ``x`` is loaded
as an ``(H, C', 1, W)`` tile (source rows on N, so row ``h`` of ``t`` is a tile of its own), C' = N * C cut
into lane blocks when it does not fit.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
import torch.fx as fx

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import ProgramError
from torch_tpu.lowering.codegen.context import OpCtx
from torch_tpu.lowering.codegen.ddr_plan import cm_dtype
from torch_tpu.lowering.codegen.emitter import copy_nd, tile_bytes
from torch_tpu.tpu_ops.shape import upsample_bilinear2d, upsample_nearest2d

#: a nearest resize takes the direct (no scratch) form when it needs at most this many copies
NEAREST_DIRECT_COPIES = 64


@dataclasses.dataclass(frozen=True)
class AxisGroup:
    """``out[o0 + step_o * t + j] = src[s0 + step_s * t]`` for ``t < count``, ``j < run``."""

    o0: int
    s0: int
    run: int
    count: int
    step_o: int
    step_s: int


def _axis_groups(src: list[int]) -> list[AxisGroup]:
    """Cover the index map ``out[o] = in[src[o]]`` with the fewest periodic groups (see the module docstring).

    Runs of equal ``src`` are found first; the period is the smallest ``d`` such that run ``i + d`` starts
    ``P`` outputs and ``Q`` sources after run ``i`` for every ``i`` (so every run but the last has the length
    of its phase; a shorter last run is a group of its own).
    """
    a = np.asarray(src, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    n = len(starts)
    lens = np.diff(np.r_[starts, len(a)])
    srcs = a[starts]
    d = n
    for cand in range(1, n):
        if (np.all(starts[cand:] - starts[:-cand] == starts[cand] - starts[0])
                and np.all(srcs[cand:] - srcs[:-cand] == srcs[cand] - srcs[0])):
            d = cand
            break
    step_o = int(starts[d] - starts[0]) if d < n else len(a)
    step_s = int(srcs[d] - srcs[0]) if d < n else 0
    groups = []
    for j in range(d):
        members = list(range(j, n, d))
        if len(members) > 1 and lens[members[-1]] != lens[j]:
            last = members.pop()
            groups.append(AxisGroup(int(starts[last]), int(srcs[last]), int(lens[last]), 1, step_o, step_s))
        groups.append(AxisGroup(int(starts[j]), int(srcs[j]), int(lens[j]), len(members), step_o, step_s))
    return groups


@functools.lru_cache(maxsize=256)
def _nearest_maps(h: int, w: int, ho: int, wo: int, scales: tuple) -> tuple[list[AxisGroup], list[AxisGroup]]:
    """The H and W groups of the reference op's index maps (each read off the op applied to ``arange``)."""
    sh, sw = (list(scales) + [0.0, 0.0])[:2]
    rows = upsample_nearest2d(torch.arange(h, dtype=torch.float64).reshape(1, 1, h, 1), [ho, 1], sh, 0.0)
    cols = upsample_nearest2d(torch.arange(w, dtype=torch.float64).reshape(1, 1, 1, w), [1, wo], 0.0, sw)
    return (_axis_groups(rows.reshape(-1).to(torch.int64).tolist()),
            _axis_groups(cols.reshape(-1).to(torch.int64).tolist()))


def _nearest_plan(node: fx.Node) -> tuple[tuple[int, ...], list[AxisGroup], list[AxisGroup], bool]:
    """(x shape, H groups, W groups, through the DDR scratch) of a ``tpu.upsample_nearest2d`` node."""
    n, c, h, w = (int(d) for d in node.args[0].meta["val"].shape)
    ho, wo = (int(d) for d in node.meta["val"].shape[2:])
    gh, gw = _nearest_maps(h, w, ho, wo, tuple(float(v or 0.0) for v in node.args[2:4]))
    direct = len(gh) * len(gw) + sum(g.run > 1 for g in gh)
    return (n, c, h, w), gh, gw, direct > NEAREST_DIRECT_COPIES


def nearest_scratch_bytes(node: fx.Node) -> int:
    """DDR scratch of a nearest resize: ``N*C*H*Wo`` elements when it goes through the scratch, else 0."""
    (n, c, h, _), _, _, staged = _nearest_plan(node)
    if not staged:
        return 0
    return n * c * h * int(node.meta["val"].shape[3]) * cm_dtype(node.meta["val"].dtype).size


def gen_upsample_nearest2d(ctx: OpCtx) -> None:
    """``tpu.upsample_nearest2d(x, size, scale_h, scale_w)`` -> DDR -> DDR copies per group pair (see the
    module docstring)."""
    (n, c, h, w), gh, gw, staged = _nearest_plan(ctx.node)
    ho, wo = (int(d) for d in ctx.node.meta["val"].shape[2:])
    nc = n * c
    x = ctx.operand(ctx.node.args[0], (1, 1, 1, max(nc * h * w, 1)))
    o = ctx.out((1, 1, 1, max(nc * ho * wo, 1))).addr
    dt, es = x.dtype, x.dtype.size
    em, layer = ctx.em, ctx.layer
    if staged:
        tmp = ctx.scratch((1, 1, 1, nc * h * wo), dt).addr
        for g in gw:  # tmp[r, o0 + step_o t + j] = x[r, s0 + step_s t]
            copy_nd(em, layer, dt, (nc * h, g.count, g.run), (x.addr + g.s0 * es, (w, g.step_s, 0)),
                    (tmp + g.o0 * es, (wo, g.step_o, 1)))
        for g in gh:  # out[i, o0 + step_o t + j, :] = tmp[i, s0 + step_s t, :]
            copy_nd(em, layer, dt, (nc, g.count, g.run, wo), (tmp + g.s0 * wo * es, (h * wo, g.step_s * wo, 0, 1)),
                    (o + g.o0 * wo * es, (ho * wo, g.step_o * wo, wo, 1)))
        return
    for a in gh:  # the first output row of every H run, its columns resized
        for b in gw:
            copy_nd(em, layer, dt, (nc, a.count, b.count, b.run),
                    (x.addr + (a.s0 * w + b.s0) * es, (h * w, a.step_s * w, b.step_s, 0)),
                    (o + (a.o0 * wo + b.o0) * es, (ho * wo, a.step_o * wo, b.step_o, 1)))
    for a in gh:  # the other rows of each run: copies of its first row
        if a.run > 1:
            copy_nd(em, layer, dt, (nc, a.count, a.run - 1, wo), (o + a.o0 * wo * es, (ho * wo, a.step_o * wo, 0, 1)),
                    (o + (a.o0 + 1) * wo * es, (ho * wo, a.step_o * wo, wo, 1)))


def _weights(n_in: int, n_out: int, horizontal: bool, extra: list) -> torch.Tensor:
    """``A (n_out, n_in)`` with ``A[o, i]`` the reference op's weight of source ``i`` in output ``o``."""
    eye = torch.eye(n_in, dtype=torch.float32)
    if horizontal:  # one-hot columns: (n_in, 1, 1, n_in) -> (n_in, 1, 1, n_out)
        probe = upsample_bilinear2d(eye.reshape(n_in, 1, 1, n_in), [1, n_out], *extra)
        return probe.reshape(n_in, n_out).t().contiguous()
    probe = upsample_bilinear2d(eye.reshape(n_in, 1, n_in, 1), [n_out, 1], *extra)
    return probe.reshape(n_in, n_out).t().contiguous()


def gen_upsample_bilinear2d(ctx: OpCtx) -> None:
    """``tpu.upsample_bilinear2d`` -> one ``matmul`` per lane block of channels, then per output row
    ``eltwise`` mul / mul / add and a strided store (see the module docstring)."""
    a = list(ctx.node.args) + [0.0, 0.0]
    x_arg, align = a[0], bool(a[2])  # the output size is the node's own shape
    sh, sw = float(a[3] or 0.0), float(a[4] or 0.0)
    n, c, h, w = (int(d) for d in x_arg.meta["val"].shape)
    ho, wo = (int(d) for d in ctx.node.meta["val"].shape[2:])
    aw = _weights(w, wo, True, [align, 0.0, sw])
    ah = _weights(h, ho, False, [align, sh, 0.0])
    rows = []
    for o in range(ho):
        nz = [(i, float(v)) for i, v in enumerate(ah[o].tolist()) if v != 0.0]
        if not nz or len(nz) > 2:
            raise ProgramError(f"codegen: {ctx.layer}: output row {o} mixes {len(nz)} source rows")
        rows.append(nz)
    x_ddr, out = ctx.value(x_arg), ctx.out()
    t = ctx.target
    bw = ctx.weights.add(("bilinear_w", w, wo, align, sw), aw.t(), (1, w, 1, wo), DType.F32)
    nc = n * c

    def need(cb: int) -> int:
        return (tile_bytes(t, (1, w, 1, wo), DType.F32) + tile_bytes(t, (h, cb, 1, w), x_ddr.dtype)
                + tile_bytes(t, (h, cb, 1, wo), DType.F32) + 2 * tile_bytes(t, (1, cb, 1, wo), DType.F32)
                + 2 * tile_bytes(t, (1, cb, 1, wo), out.dtype))

    cb = nc
    while cb > 1 and need(cb) > t.local_mem_bytes:
        cb = max(cb // 2, 1)
    if need(cb) > t.local_mem_bytes:
        raise ProgramError(f"codegen: {ctx.layer}: {h} source rows of one channel do not fit {t.local_mem_bytes} "
                           "bytes of local memory per lane")
    ar = ctx.em.arena
    b_tile = ctx.em.load(bw, ar.tile(bw.shape, DType.F32), ctx.layer)
    x_buf, t_buf = ar.tile((h, cb, 1, w), x_ddr.dtype), ar.tile((h, cb, 1, wo), DType.F32)
    p_bufs = [(ar.tile((1, cb, 1, wo), DType.F32), ar.tile((1, cb, 1, wo), DType.F32),
               ar.tile((1, cb, 1, wo), out.dtype)) for _ in range(2)]
    es = x_ddr.dtype.size
    for c0 in range(0, nc, cb):
        c1 = min(c0 + cb, nc)
        k = c1 - c0
        # (nc, h, w) viewed with the source row on N: element (hh, ci, 0, ww) at ci * h * w + hh * w + ww
        src = DdrTensor(x_ddr.addr + c0 * h * w * es, (h, k, 1, w), (w, h * w, w, 1), x_ddr.dtype)
        xt = ctx.em.load(src, LocalTensor(0, x_buf.addr, (h, k, 1, w), x_ddr.dtype), ctx.layer)
        tt = LocalTensor(0, t_buf.addr, (h, k, 1, wo), DType.F32)
        ctx.em.emit(isa.MatMul, ctx.layer, a=xt, b=b_tile, out=tt)
        nstride = tt.bytes_per_lane(t) // h

        def row(i: int) -> LocalTensor:
            return LocalTensor(0, tt.addr + i * nstride, (1, k, 1, wo), DType.F32)

        for o, nz in enumerate(rows):
            p0, p1, ob = (LocalTensor(0, buf.addr, (1, k, 1, wo), buf.dtype) for buf in p_bufs[o % 2])
            (i0, l0), *rest = nz
            if not rest:  # one source row (weight 1.0 in the reference): l0 * t is exact, then rounded once
                ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=row(i0), scalar=l0, out=ob)
            else:
                (i1, l1), = rest
                ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=row(i0), scalar=l0, out=p0)
                ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=row(i1), scalar=l1, out=p1)
                ctx.em.emit(isa.Eltwise, ctx.layer, op="add", a=p0, b=p1, out=ob)
            dst = DdrTensor(out.addr + (c0 * ho * wo + o * wo) * out.dtype.size, (1, k, 1, wo),
                            (wo, ho * wo, wo, 1), out.dtype)
            ctx.em.store(ob, dst, ctx.layer)

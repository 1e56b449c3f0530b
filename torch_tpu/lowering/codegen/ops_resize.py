"""Codegen of ``tpu.upsample_bilinear2d(x, size, align_corners, scale_h, scale_w)``, separable like the
reference (PyTorch's kernel: ``h0l * (w0l x00 + w1l x01) + h1l * (w0l x10 + w1l x11)`` in f32, one rounding)::

    t[h] = x[:, :, h, :] @ Aw^T          matmul, Aw (Wo, W) holds each output column's two weights (f32)
    y[:, :, o, :] = l0[o] * t[h0[o]] + l1[o] * t[h1[o]]     eltwise mul, mul, add (rounded once to y's dtype)

The weights are the reference op's own: ``Aw`` / ``(h0, h1, l0, l1)`` are read off the op applied to one-hot
inputs (``1.0 * l`` is exact), so the index rule (align_corners, scales) is never re-derived. ``x`` is loaded
as an ``(H, C', 1, W)`` tile (source rows on N, so row ``h`` of ``t`` is a tile of its own), C' = N * C cut
into lane blocks when it does not fit.
"""

from __future__ import annotations

import torch

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import ProgramError
from torch_tpu.lowering.codegen.context import OpCtx
from torch_tpu.lowering.codegen.emitter import tile_bytes
from torch_tpu.tpu_ops.shape import upsample_bilinear2d


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

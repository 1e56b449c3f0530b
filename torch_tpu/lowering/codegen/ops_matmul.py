"""Codegen of ``tpu.linear(x, W[N, K], b[N], act, act_min, act_max)`` and ``tpu.matmul(a, b)`` -> ``matmul``.

Linear: ``x`` (.., K) is viewed as ``a = (1, M, 1, K)`` (M = product of the leading dims, on the lanes);
the weight is packed transposed as ``b = (1, K, 1, N)``, the bias as ``(1, 1, 1, N)``::

    out[0, m, 0, n] = act(bias[n] + sum_k a[0, m, 0, k] * W[n, k])

M is cut into slices of whole rows (N batches of the ``(mb, M / mb, 1, K)`` view) when it does not fit.
When the weight does not fit a lane next to one row slice, it streams through local memory in blocks
(``_linear_tiled``): N blocks of ``nb`` output columns (``b[:, k0:k1, :, n0:n1]``, double-buffered) and, if
one row of ``x`` and a block of all K weight rows still do not fit, K blocks too; when not even one weight
column fits beside a whole row batch (M not a multiple of the lanes, so one batch of M rows), the rows are cut
into blocks as well, each streaming the weight again; K blocks accumulate f32
partial products (``eltwise add``) and the bias, activation and one rounding to the output dtype come last::

    acc = sum_j matmul(a[.., k_j], W[k_j, n0:n1])   (f32)      out = cast(act(acc + bias[n0:n1]))

``tpu.matmul`` of two values or constants ``(.., M, K) @ (.., K, N)`` with numpy-broadcast batch dims
(B = their product): ``a (B, M, 1, K) @ b (B, K, 1, N)``, sliced along B; an operand whose batch offsets
follow one stride is loaded with that stride (0 for broadcast), a ``b`` shared by every batch item is
loaded once (``b (1, K, 1, N)``), other patterns load one batch item per slice.
"""

from __future__ import annotations

import math

import torch

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import ProgramError, UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx, plan_slices, row_batches, run_pipeline, sliced_rows
from torch_tpu.lowering.codegen.emitter import dense_strides, sub_view, tile_bytes

WHERE = "codegen (torch_tpu/lowering/codegen/ops_matmul.py)"


def gen_linear(ctx: OpCtx) -> None:
    """``tpu.linear`` -> ``matmul`` per slice of rows (one MatMul per batch item of the view); weights that do
    not fit a lane next to one row slice stream through in blocks (``_linear_tiled``)."""
    a = list(ctx.node.args) + [None] * 6
    kw = ctx.node.kwargs
    x, w, b = a[:3]
    act = a[3] or kw.get("act") or "none"
    lo = float(a[4] if a[4] is not None else kw.get("act_min", 0.0))
    hi = float(a[5] if a[5] is not None else kw.get("act_max", 0.0))
    wt = ctx.const_tensor(w)
    n_out, k = (int(d) for d in wt.shape)
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
    x_ddr, out = ctx.value(x, (nb, rows // nb, 1, k)), ctx.out((nb, rows // nb, 1, n_out))
    fields = dict(act=act, act_lo=lo if act == "clip" else 0.0, act_hi=hi if act == "clip" else 0.0)
    const_bytes = tile_bytes(t, w_ddr.shape, wd) + (tile_bytes(t, b_ddr.shape, b_ddr.dtype) if b_ddr else 0)
    one_row = tile_bytes(t, (1,) + x_ddr.shape[1:], x_ddr.dtype) + tile_bytes(t, (1,) + out.shape[1:], out.dtype)
    if const_bytes + one_row > t.local_mem_bytes:
        _linear_tiled(ctx, x_ddr, w_ddr, b_ddr, out, fields)
        return
    w_tile = ctx.em.load(w_ddr, ctx.em.arena.tile(w_ddr.shape, wd), ctx.layer)
    b_tile = ctx.em.load(b_ddr, ctx.em.arena.tile(b_ddr.shape, b_ddr.dtype), ctx.layer) if b_ddr else None

    def emit(xs: LocalTensor, os_: LocalTensor) -> None:  # a (B, M, 1, K) x b (1, K, 1, N): B shares b
        ctx.em.emit(isa.MatMul, ctx.layer, a=xs, b=w_tile, bias=b_tile, out=os_, **fields)

    sliced_rows(ctx, x_ddr, out, const_bytes, emit)


def _linear_blocks(ctx: OpCtx, x_ddr: DdrTensor, w_ddr: DdrTensor, b_ddr: DdrTensor | None, out: DdrTensor
                   ) -> tuple[int, int, int]:
    """The row, K and N block sizes of a streamed linear: all rows of a batch and all of K when a block of at
    least ``min(N, lanes)`` columns fits beside them, else the largest multiple of ``lanes`` K rows that does;
    when neither fits beside all the rows, the rows are halved (in multiples of ``lanes``) until one does
    (failing that, the first block of any width, most rows first)."""
    t = ctx.target
    _, r, _, k = x_ddr.shape
    n = out.shape[3]

    def need(rb: int, kb: int, nb: int) -> int:
        ktiled = kb < k
        total = (2 * tile_bytes(t, (1, rb, 1, kb), x_ddr.dtype) + 2 * tile_bytes(t, (1, kb, 1, nb), w_ddr.dtype)
                 + tile_bytes(t, (1, rb, 1, nb), out.dtype))
        if b_ddr is not None:
            total += 2 * tile_bytes(t, (1, 1, 1, nb), b_ddr.dtype)
        if ktiled:
            total += 2 * tile_bytes(t, (1, rb, 1, nb), DType.F32)
        return total

    def widest(rb: int, kb: int) -> int:
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if need(rb, kb, mid) <= t.local_mem_bytes:
                lo = mid
            else:
                hi = mid - 1
        return lo

    kbs = [k] + [t.lanes * 2 ** j for j in range(20, -1, -1) if t.lanes * 2 ** j < k]
    rbs = [r]
    while rbs[-1] > 1:  # halved, in multiples of the lanes while there are more than two lanes' worth
        rb = rbs[-1]
        rbs.append(max(1, rb // 2 // t.lanes * t.lanes) if rb > 2 * t.lanes else max(1, rb // 2))
    best = None
    for rb in rbs:
        for kb in kbs:
            nbk = widest(rb, kb)
            if nbk >= min(n, t.lanes):
                return rb, kb, nbk
            if nbk and best is None:
                best = (rb, kb, nbk)
    if best is None:
        raise ProgramError(f"codegen: {ctx.layer}: not even one weight column block fits {t.local_mem_bytes} "
                           "bytes of local memory per lane beside one row of x")
    return best


def _linear_tiled(ctx: OpCtx, x_ddr: DdrTensor, w_ddr: DdrTensor, b_ddr: DdrTensor | None, out: DdrTensor,
                  fields: dict) -> None:
    """Stream the weight through local memory in (K, N) blocks per block of rows; see the module docstring."""
    rb, kb, nbk = _linear_blocks(ctx, x_ddr, w_ddr, b_ddr, out)
    nbatch, r, _, k = x_ddr.shape
    n = out.shape[3]
    ktiled = kb < k
    ar = ctx.em.arena
    a_bufs = [ar.tile((1, rb, 1, kb), x_ddr.dtype) for _ in range(2)]
    w_bufs = [ar.tile((1, kb, 1, nbk), w_ddr.dtype) for _ in range(2)]
    b_bufs = [ar.tile((1, 1, 1, nbk), b_ddr.dtype) for _ in range(2)] if b_ddr is not None else []
    o_buf = ar.tile((1, rb, 1, nbk), out.dtype)
    acc_buf = ar.tile((1, rb, 1, nbk), DType.F32) if ktiled else None
    part_buf = ar.tile((1, rb, 1, nbk), DType.F32) if ktiled else None
    # (row batch, first row, rows, n0, n1, k0, k1)
    steps = [(bi, r0, min(r0 + rb, r) - r0, n0, min(n0 + nbk, n), k0, min(k0 + kb, k))
             for bi in range(nbatch) for r0 in range(0, r, rb) for n0 in range(0, n, nbk) for k0 in range(0, k, kb)]
    # buffer slots alternate per step (w, K-blocks of x), per output block (bias) and per row block (x with
    # all of K), so a prefetch never overwrites a tile the current compute still reads
    blocks: dict[tuple[int, int, int], int] = {}
    block_of = [blocks.setdefault((bi, r0, n0), len(blocks)) for bi, r0, _, n0, *_ in steps]
    rows: dict[tuple[int, int], int] = {}
    row_of = [rows.setdefault((bi, r0), len(rows)) for bi, r0, *_ in steps]

    def load(i: int) -> tuple:
        bi, r0, rr, n0, n1, k0, k1 = steps[i]
        a_t = None
        if ktiled or n0 == 0:  # all of K: x's row block stays loaded across the N blocks
            slot = i % 2 if ktiled else row_of[i] % 2
            a_t = ctx.em.load(sub_view(x_ddr, (bi, r0, 0, k0), (1, rr, 1, k1 - k0)),
                              LocalTensor(0, a_bufs[slot].addr, (1, rr, 1, k1 - k0), x_ddr.dtype), ctx.layer)
        w_t = ctx.em.load(sub_view(w_ddr, (0, k0, 0, n0), (1, k1 - k0, 1, n1 - n0)),
                          LocalTensor(0, w_bufs[i % 2].addr, (1, k1 - k0, 1, n1 - n0), w_ddr.dtype), ctx.layer)
        b_t = None
        if b_ddr is not None and k0 == 0:
            b_t = ctx.em.load(sub_view(b_ddr, (0, 0, 0, n0), (1, 1, 1, n1 - n0)),
                              LocalTensor(0, b_bufs[block_of[i] % 2].addr, (1, 1, 1, n1 - n0), b_ddr.dtype),
                              ctx.layer)
        return a_t, w_t, b_t

    pending = {0: load(0)}
    a_t = b_t = None
    for i, (bi, r0, rr, n0, n1, k0, k1) in enumerate(steps):
        if i + 1 < len(steps):
            pending[i + 1] = load(i + 1)
        a_new, w_t, b_new = pending.pop(i)
        a_t = a_new or a_t
        b_t = b_new or b_t
        shape = (1, rr, 1, n1 - n0)
        o_t = LocalTensor(0, o_buf.addr, shape, out.dtype)
        if not ktiled:
            ctx.em.emit(isa.MatMul, ctx.layer, a=a_t, b=w_t, bias=b_t, out=o_t, **fields)
        else:
            acc = LocalTensor(0, acc_buf.addr, shape, DType.F32)
            if k0 == 0:
                ctx.em.emit(isa.MatMul, ctx.layer, a=a_t, b=w_t, out=acc)
            else:
                part = LocalTensor(0, part_buf.addr, shape, DType.F32)
                ctx.em.emit(isa.MatMul, ctx.layer, a=a_t, b=w_t, out=part)
                ctx.em.emit(isa.Eltwise, ctx.layer, op="add", a=acc, b=part, out=acc)
            if k1 < k:
                continue
            _finish_acc(ctx, acc, b_t, o_t, fields)
        ctx.em.store(o_t, sub_view(out, (bi, r0, 0, n0), shape), ctx.layer)


def _finish_acc(ctx: OpCtx, acc: LocalTensor, bias: LocalTensor | None, out: LocalTensor, fields: dict) -> None:
    """``out = round(act(acc + bias))`` from an f32 accumulator (bias and activation in f32, one rounding)."""
    if bias is not None:
        ctx.em.emit(isa.Eltwise, ctx.layer, op="add", a=acc, b=bias, out=acc)
    act = fields["act"]
    if act != "none":
        extra = dict(lo=fields["act_lo"], hi=fields["act_hi"]) if act == "clip" else {}
        ctx.em.emit(isa.Activation, ctx.layer, op=act, x=acc, out=acc, **extra)
    ctx.em.emit(isa.Cast, ctx.layer, x=acc, out=out)


def _batch_strides(own: tuple[int, ...], batch: tuple[int, ...]) -> tuple[int, ...]:
    """Matrix-index strides of an operand's batch dims against the broadcast batch (0 where it repeats)."""
    own = (1,) * (len(batch) - len(own)) + tuple(own)
    return tuple(0 if o == 1 and bsz != 1 else s for o, bsz, s in zip(own, batch, dense_strides(own)))


def _single_stride(strides: tuple[int, ...], batch: tuple[int, ...]) -> int | None:
    """The one stride ``s`` with ``offset(i) = i * s`` over the flat batch index, or None."""
    dims = [(n, s) for n, s in zip(batch, strides) if n != 1]
    if not dims:
        return 0
    for (n0, s0), (n1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * n1:
            return None
    return dims[-1][1]


def gen_matmul(ctx: OpCtx) -> None:
    """``tpu.matmul(a, b)``: ``(.., M, K) @ (.., K, N)`` with broadcast batch dims -> ``matmul`` slices."""
    x, y = ctx.node.args[:2]
    xs = tuple(int(d) for d in (ctx.const_tensor(x).shape if ctx.is_const(x) else x.meta["val"].shape))
    ys = tuple(int(d) for d in (ctx.const_tensor(y).shape if ctx.is_const(y) else y.meta["val"].shape))
    if len(xs) < 2 or len(ys) < 2 or xs[-1] != ys[-2]:
        raise UnsupportedOpError("tpu.matmul", name=ctx.layer, where=WHERE,
                                 reason=f"needs (.., M, K) @ (.., K, N) operands, got {xs} @ {ys}")
    try:
        batch = tuple(torch.broadcast_shapes(xs[:-2], ys[:-2]))
    except RuntimeError:
        raise UnsupportedOpError("tpu.matmul", name=ctx.layer, where=WHERE,
                                 reason=f"batch dims of {xs} @ {ys} do not broadcast") from None
    m, k, n = xs[-2], xs[-1], ys[-1]
    bsz = math.prod(batch)
    views = [ctx.operand(x, (math.prod(xs[:-2]), m, 1, k)), ctx.operand(y, (math.prod(ys[:-2]), k, 1, n))]
    strides = [_batch_strides(xs[:-2], batch), _batch_strides(ys[:-2], batch)]
    single = [_single_stride(s, batch) for s in strides]
    shared_b = all(s == 0 for s in strides[1])
    out = ctx.out((bsz, m, 1, n))
    t = ctx.target
    moving = [0] if shared_b else [0, 1]
    const_bytes = 0
    b_tile = None
    if shared_b:
        const_bytes = tile_bytes(t, (1, k, 1, n), views[1].dtype)
        b_tile = ctx.em.load(sub_view(views[1], (0, 0, 0, 0), (1, k, 1, n)),
                             ctx.em.arena.tile((1, k, 1, n), views[1].dtype), ctx.layer)

    def slice_bytes(b: int, _r: int) -> int:
        return (sum(tile_bytes(t, (b,) + views[j].shape[1:], views[j].dtype) for j in moving)
                + tile_bytes(t, (b,) + out.shape[1:], out.dtype))

    if all(single[j] is not None for j in moving):
        slices, double = plan_slices(bsz, 1, slice_bytes, const_bytes, t.local_mem_bytes, ctx.layer)
    else:  # one batch item per slice, each operand's offset from its own batch index
        if slice_bytes(1, 1) + const_bytes > t.local_mem_bytes:
            raise ProgramError(f"codegen: {ctx.layer}: one matmul batch item does not fit local memory")
        slices, double = [(i, i + 1, 0, 1) for i in range(bsz)], 2 * slice_bytes(1, 1) + const_bytes <= \
            t.local_mem_bytes and bsz > 1
    b0, b1, _, _ = slices[0]
    sets = [{j: ctx.em.arena.tile((b1 - b0,) + views[j].shape[1:], views[j].dtype) for j in moving} |
            {2: ctx.em.arena.tile((b1 - b0,) + out.shape[1:], out.dtype)} for _ in range(2 if double else 1)]

    def operand_view(j: int, b0: int, b1: int) -> DdrTensor:
        v = views[j]
        mat = v.shape[1] * v.shape[3]
        if single[j] is not None:
            off = b0 * single[j]
            step = single[j] * mat
        else:
            idx, off = b0, 0
            for d, st in zip(reversed(batch), reversed(strides[j])):
                off += (idx % d) * st
                idx //= d
            step = 0
        return DdrTensor(v.addr + off * mat * v.dtype.size, (b1 - b0,) + v.shape[1:], (step,) + v.strides[1:],
                         v.dtype)

    def load(i: int) -> dict[int, LocalTensor]:
        b0, b1, _, _ = slices[i]
        tiles = {}
        for j in moving:
            tile = LocalTensor(0, sets[i % len(sets)][j].addr, (b1 - b0,) + views[j].shape[1:], views[j].dtype)
            tiles[j] = ctx.em.load(operand_view(j, b0, b1), tile, ctx.layer)
        return tiles

    def comp(i: int, tiles: dict[int, LocalTensor]) -> LocalTensor:
        o = LocalTensor(0, sets[i % len(sets)][2].addr, (tiles[0].shape[0], m, 1, n), out.dtype)
        ctx.em.emit(isa.MatMul, ctx.layer, a=tiles[0], b=tiles.get(1, b_tile), out=o)
        return o

    def store(i: int, o: LocalTensor) -> None:
        ctx.em.store(o, sub_view(out, (slices[i][0], 0, 0, 0), o.shape), ctx.layer)

    run_pipeline(len(slices), double, load, comp, store)

"""Codegen of ``tpu.conv2d`` (grouped / depthwise, dilation, 4-sided pads, fused activation), tiled along N/H/W.

Output rows ``[o0, o1)`` of a slice read input rows (the halo included)::

    lo = o0 * sh - pt,   hi = (o1 - 1) * sh - pt + dh * (kh - 1) + 1
    loaded rows [max(lo, 0), min(hi, H)),  slice pads  top = max(0, -lo), bottom = max(0, hi - H)

so that the slice's own conv (same kernel, stride, dilation, left/right pads) yields exactly rows
``o0..o1-1``. The weight ``(1, Cout, 1, Cin/g * kh * kw)`` (OIHW flattened, Cout on the lanes) and the bias
``(1, Cout, 1, 1)`` are packed in the weight region in that layout and loaded once per op; when they do not
fit a lane next to one output row, the op is cut into blocks of output channels (all input channels for
``groups == 1``, whole groups with their input channels otherwise), each loading its own weight rows.

When one output row does not fit (long rows), the output is cut along W too: output columns ``[q0, q1)``
read input columns ``q0 * sw - pl .. (q1 - 1) * sw - pl + dw * (kw - 1)`` (``window_rows`` on columns), the
tile's left/right pads non-zero only at the image's own left/right border.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import ProgramError
from torch_tpu.lowering.codegen.context import OpCtx, plan_slices, plan_tiles, run_pipeline
from torch_tpu.lowering.codegen.emitter import sub_view, tile_bytes


def window_rows(o0: int, o1: int, stride: int, pad_top: int, dil: int, k: int, h: int) -> tuple[int, int, int, int]:
    """Input rows ``[r0, r1)`` and the slice's top/bottom pads for output rows ``[o0, o1)`` (the same for
    columns with the left pad, the W stride, dilation and kernel)."""
    lo = o0 * stride - pad_top
    hi = (o1 - 1) * stride - pad_top + dil * (k - 1) + 1
    return max(lo, 0), min(hi, h), max(0, -lo), max(0, hi - h)


@dataclasses.dataclass(frozen=True)
class SliceTiles:
    """The local tiles of one slice: input rows (halo included), output, the slice's pads, int32-or-other
    scratch tiles shaped like the input / the output."""

    x: LocalTensor
    out: LocalTensor
    pad: tuple[int, int, int, int]
    x_scratch: tuple[LocalTensor, ...]
    out_scratch: tuple[LocalTensor, ...]


def sliced_tiles(ctx: OpCtx, x_ddr: DdrTensor, out_ddr: DdrTensor, emit: Callable[[SliceTiles], None], *,
                 kernel_h: int = 1, stride_h: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
                 dilation_h: int = 1, const_bytes: int = 0, x_scratch: tuple[DType, ...] = (),
                 out_scratch: tuple[DType, ...] = (), w_window: tuple[int, int, int] | None = None) -> None:
    """Cut ``out_ddr`` along N then H (the windowed input rows with halos) and
    run load -> ``emit`` -> store per slice.

    ``w_window = (kernel_w, stride_w, dilation_w)`` says the op's output columns can be computed apart (a
    windowed op over W: pool, conv): then, when not even one full-width output row fits twice with its
    scratch tiles, ``context.plan_tiles`` cuts W too. Output columns ``[q0, q1)`` load input columns
    ``window_rows`` on columns, and the tile's left/right pads (``SliceTiles.pad``) are non-zero only
    where it touches the image's left/right border, so every window sees the same real and padded cells as in
    the whole tensor. Without it (matmul-like views, whose W is a reduction) only N/H are cut."""
    t = ctx.target
    n, cin, h, w = x_ddr.shape
    _, cout, ho, wo = out_ddr.shape
    pt, pl, pr = pad[0], pad[2], pad[3]
    kw, sw, dw = w_window or (1, 1, 1)

    def in_rows(r: int) -> int:
        return min(h, (r - 1) * stride_h + dilation_h * (kernel_h - 1) + 1)

    def in_cols(c: int) -> int:
        return w if c == wo else min(w, (c - 1) * sw + dw * (kw - 1) + 1)

    def cols(q0: int, q1: int) -> tuple[int, int, int, int]:
        return (0, w, pl, pr) if (q0, q1) == (0, wo) else window_rows(q0, q1, sw, pl, dw, kw, w)

    def shapes(nb: int, r: int, c: int) -> list[tuple[tuple[int, int, int, int], DType]]:
        xs, os_ = (nb, cin, in_rows(r), in_cols(c)), (nb, cout, r, c)
        return ([(xs, x_ddr.dtype)] + [(xs, d) for d in x_scratch] + [(os_, out_ddr.dtype)]
                + [(os_, d) for d in out_scratch])

    def set_bytes(nb: int, r: int, c: int) -> int:
        return sum(tile_bytes(t, s, d) for s, d in shapes(nb, r, c))

    if w_window is None:
        slices, double = plan_slices(n, ho, lambda nb, r: set_bytes(nb, r, wo), const_bytes, t.local_mem_bytes,
                                     ctx.layer)
        tiles = [(n0, n1, o0, o1, 0, wo) for n0, n1, o0, o1 in slices]
    else:
        tiles, double = plan_tiles(n, ho, wo, set_bytes, const_bytes, t.local_mem_bytes, ctx.layer)
    n0, n1, o0, o1, q0, q1 = tiles[0]
    sets = [[ctx.em.arena.tile(s, d) for s, d in shapes(n1 - n0, o1 - o0, q1 - q0)]
            for _ in range(2 if double else 1)]
    nx, no = 1 + len(x_scratch), 1 + len(out_scratch)

    def load(i: int) -> LocalTensor:
        n0, n1, o0, o1, q0, q1 = tiles[i]
        r0, r1, _, _ = window_rows(o0, o1, stride_h, pt, dilation_h, kernel_h, h)
        c0, c1, _, _ = cols(q0, q1)
        xs = LocalTensor(0, sets[i % len(sets)][0].addr, (n1 - n0, cin, r1 - r0, c1 - c0), x_ddr.dtype)
        ctx.em.load(sub_view(x_ddr, (n0, 0, r0, c0), xs.shape), xs, ctx.layer)
        return xs

    def comp(i: int, xs: LocalTensor) -> LocalTensor:
        n0, n1, o0, o1, q0, q1 = tiles[i]
        _, _, st, sb = window_rows(o0, o1, stride_h, pt, dilation_h, kernel_h, h)
        _, _, sl, sr = cols(q0, q1)
        bufs = sets[i % len(sets)]
        oshape = (n1 - n0, cout, o1 - o0, q1 - q0)
        tiles_ = SliceTiles(x=xs, out=LocalTensor(0, bufs[nx].addr, oshape, out_ddr.dtype), pad=(st, sb, sl, sr),
                            x_scratch=tuple(LocalTensor(0, b.addr, xs.shape, b.dtype) for b in bufs[1:nx]),
                            out_scratch=tuple(LocalTensor(0, b.addr, oshape, b.dtype)
                                              for b in bufs[nx + 1:nx + no]))
        emit(tiles_)
        return tiles_.out

    def store(i: int, os_: LocalTensor) -> None:
        n0, _, o0, _, q0, _ = tiles[i]
        ctx.em.store(os_, sub_view(out_ddr, (n0, 0, o0, q0), os_.shape), ctx.layer)

    run_pipeline(len(tiles), double, load, comp, store)


def sliced_window(ctx: OpCtx, x_ddr, out_ddr, kernel, stride, pad, dilation, const_bytes: int, emit) -> None:
    """Tile a windowed op (conv, pool) along N/H, and W when one output row does not fit, with halos;
    ``emit(x_tile, out_tile, tile_pad)`` (:func:`sliced_tiles` with the W window and no scratch tiles).

    A tile spanning every output column loads whole input rows with the op's own left/right pads; a W tile
    loads its columns with halo (``window_rows`` on columns), padded only where it touches the image's
    left/right border."""
    sliced_tiles(ctx, x_ddr, out_ddr, lambda sl: emit(sl.x, sl.out, sl.pad), kernel_h=kernel[0], stride_h=stride[0],
                 pad=tuple(pad), dilation_h=dilation[0], const_bytes=const_bytes,
                 w_window=(kernel[1], stride[1], dilation[1]))


def gen_conv2d(ctx: OpCtx) -> None:
    """``tpu.conv2d(x, w, b, stride, padding, dilation, groups, act, act_min, act_max)`` -> ``conv2d`` tiles;
    weights that do not fit a lane next to one output row are split into output-channel blocks
    (``_cout_blocks``), each a conv of its own with its weight rows, bias and output channels."""
    a = list(ctx.node.args) + [None] * 10
    x, w, b, stride, padding, dilation, groups = a[:7]
    act = a[7] or ctx.node.kwargs.get("act", "none")
    lo = float(a[8] if a[8] is not None else ctx.node.kwargs.get("act_min", 0.0))
    hi = float(a[9] if a[9] is not None else ctx.node.kwargs.get("act_max", 0.0))
    wt = ctx.const_tensor(w)
    cout, cin_g, kh, kw = wt.shape
    groups = int(groups)
    wd = DType.from_torch(wt.dtype)
    w_ddr = ctx.weights.add((w.target, "oihw"), wt, (1, cout, 1, cin_g * kh * kw), wd)
    b_ddr = None
    if b is not None:
        bt = ctx.const_tensor(b)
        b_ddr = ctx.weights.add((b.target, "bias"), bt, (1, cout, 1, 1), DType.from_torch(bt.dtype))
    x_ddr, out_ddr = ctx.value(x), ctx.out()
    fields = dict(kernel=(kh, kw), stride=tuple(stride), dilation=tuple(dilation), act=act,
                  act_lo=lo if act == "clip" else 0.0, act_hi=hi if act == "clip" else 0.0)
    geom = ((kh, kw), tuple(stride), tuple(padding), tuple(dilation))
    mark = ctx.em.arena.used
    for c0, c1, i0, i1, g in _cout_blocks(ctx, x_ddr, out_ddr, w_ddr, b_ddr, groups, geom):
        ctx.em.arena.used = mark  # each block reuses the same local memory (deps order the reuse)
        wv = sub_view(w_ddr, (0, c0, 0, 0), (1, c1 - c0, 1, w_ddr.shape[3]))
        bv = sub_view(b_ddr, (0, c0, 0, 0), (1, c1 - c0, 1, 1)) if b_ddr else None
        xv = sub_view(x_ddr, (0, i0, 0, 0), (x_ddr.shape[0], i1 - i0) + x_ddr.shape[2:])
        ov = sub_view(out_ddr, (0, c0, 0, 0), (out_ddr.shape[0], c1 - c0) + out_ddr.shape[2:])
        _conv_block(ctx, xv, wv, bv, ov, dict(fields, groups=g), geom)


def _const_bytes(t, wv, bv) -> int:
    return tile_bytes(t, wv.shape, wv.dtype) + (tile_bytes(t, bv.shape, bv.dtype) if bv is not None else 0)


#: output columns a W tile should at least have when the weights decide the output-channel blocks, so that
#: the halo columns stay a minor part of each load
MIN_W_TILE = 16


def _cout_blocks(ctx: OpCtx, x_ddr, out_ddr, w_ddr, b_ddr, groups: int, geom) -> list[tuple[int, int, int, int, int]]:
    """``(c0, c1, cin0, cin1, groups)`` blocks of output channels whose weights and one output row fit a lane.

    One block when everything fits. Else blocks of ``cb`` output channels (``groups == 1``: all input
    channels each; grouped: whole groups with their input channels), the largest ``cb`` that leaves room
    for two buffer sets of one output row (double buffering), else for one. When not even one output row
    of the smallest block fits, the same for a W tile of ``MIN_W_TILE`` output columns, else of one column
    (``sliced_window`` then tiles along W)."""
    t = ctx.target
    n, cin, h, w = x_ddr.shape
    cout, ho, wo = out_ddr.shape[1:]
    (kh, kw), (sh, sw), _, (dh, dw) = geom
    rows_in = min(h, dh * (kh - 1) + 1)
    cout_g, cin_g = cout // groups, cin // groups

    def need(cb: int, sets: int, c: int) -> int:
        ci = cin if groups == 1 else cb // cout_g * cin_g
        cols_in = w if c == wo else min(w, (c - 1) * sw + dw * (kw - 1) + 1)
        wv = (1, cb, 1, w_ddr.shape[3])
        const = tile_bytes(t, wv, w_ddr.dtype) + (tile_bytes(t, (1, cb, 1, 1), b_ddr.dtype) if b_ddr else 0)
        return const + sets * (tile_bytes(t, (1, ci, rows_in, cols_in), x_ddr.dtype)
                               + tile_bytes(t, (1, cb, 1, c), out_ddr.dtype))

    unit = 1 if groups == 1 else cout_g
    for c in dict.fromkeys((wo, min(wo, MIN_W_TILE), 1)):  # whole rows, else W tiles
        if need(cout, 1, c) <= t.local_mem_bytes:
            return [(0, cout, 0, cin, groups)]
        for sets in (2, 1):
            fits = [cb for cb in range(unit, cout + 1, unit) if need(cb, sets, c) <= t.local_mem_bytes]
            if fits:
                return _blocks(max(fits), cout, cin, groups, t.lanes)
    raise ProgramError(f"codegen: {ctx.layer}: the weights of one output channel group and one output column do "
                       f"not fit {t.local_mem_bytes} bytes of local memory per lane")


def _blocks(cb: int, cout: int, cin: int, groups: int, lanes: int) -> list[tuple[int, int, int, int, int]]:
    """Blocks of ``cb`` output channels (whole lane groups when ``groups == 1`` and ``cb >= lanes``)."""
    cout_g, cin_g = cout // groups, cin // groups
    if groups == 1 and cb >= lanes:  # whole lane groups: no lane left idle in a block
        cb -= cb % lanes
    blocks = []
    for c0 in range(0, cout, cb):
        c1 = min(c0 + cb, cout)
        if groups == 1:
            blocks.append((c0, c1, 0, cin, 1))
        else:
            blocks.append((c0, c1, c0 // cout_g * cin_g, c1 // cout_g * cin_g, (c1 - c0) // cout_g))
    return blocks


def _conv_block(ctx: OpCtx, x_ddr, w_ddr, b_ddr, out_ddr, fields: dict, geom) -> None:
    """One conv over the given views: weights and bias loaded once, output tiled along N/H (and W)."""
    t = ctx.target
    const_bytes = _const_bytes(t, w_ddr, b_ddr)
    w_tile = ctx.em.load(w_ddr, ctx.em.arena.tile(w_ddr.shape, w_ddr.dtype), ctx.layer)
    b_tile = ctx.em.load(b_ddr, ctx.em.arena.tile(b_ddr.shape, b_ddr.dtype), ctx.layer) if b_ddr else None
    kernel, stride, padding, dilation = geom
    sliced_window(ctx, x_ddr, out_ddr, kernel, stride, padding, dilation, const_bytes,
                  lambda xs, os_, pad: ctx.em.emit(isa.Conv2d, ctx.layer, x=xs, w=w_tile, bias=b_tile, out=os_,
                                                   pad=pad, **fields))

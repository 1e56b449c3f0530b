"""Codegen of pools and reductions: ``tpu.max_pool2d`` / ``tpu.avg_pool2d`` (tiled along N/H, and W when
one output row does not fit, with halos, as conv: ``ops_conv.sliced_window``), ``tpu.adaptive_avg_pool2d``
(any output size) and ``tpu.reduce_<op>`` over any dims (``reduce_sum_int8`` too, ``ops_int8``).

Reductions (``reduce_views`` + ``reduce_tiled``): size-1 dims are dropped and neighbouring dims of one kind
(reduced / kept) merged into *runs*. Up to 4 runs are one 4-D view of the input; more runs are first
transposed (one DDR -> DDR copy into the op's DDR scratch, ``reduce_scratch_bytes``) to (kept runs, reduced
runs), i.e. two runs. A view too big for local memory is cut into boxes: kept dims into blocks (independent
outputs), reduced dims into chunks whose partial results are combined in local memory -- ``reduce`` of each
chunk into a partial tile, ``eltwise add / max / min`` into an accumulator (f32 for float sums and means, so a
bf16 sum is rounded once, at the end; int32 for int8 sums: exact), then the accumulator's finish (a mean: one
``eltwise div`` by the element count; a narrower output: one ``cast``). A float sum of chunk sums is the same sum
in another order: within the K-term summation bound of the reference (``tests/lowering/_codegen_local.py``).

Pool tiles carry their own top/bottom/left/right pads only at the tensor's borders, so a window's count of
real and padded cells (avg, ``count_include_pad``) is the same as in the whole tensor: every window lies
inside its tile's loaded-plus-padded extent, as it lies inside the padded tensor. A ceil-mode overhang becomes
extra bottom/right padding (``gen_pool2d``).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch.fx as fx

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import ProgramError, UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx, row_batches, run_pipeline
from torch_tpu.lowering.codegen.ddr_plan import cm_dtype
from torch_tpu.lowering.codegen.emitter import copy_nd, ddr_view, dense_strides, sub_view, tile_bytes
from torch_tpu.lowering.codegen.ops_conv import sliced_window

WHERE = "codegen (torch_tpu/lowering/codegen/ops_pool.py)"


def gen_pool2d(ctx: OpCtx, mode: str) -> None:
    """``tpu.max_pool2d(x, k, s, pad4, dilation, ceil_mode)`` / ``tpu.avg_pool2d(x, k, s, pad4, ceil_mode,
    count_include_pad, divisor_override)`` -> ``pool2d`` tiles."""
    a = list(ctx.node.args)
    x, k, s, pad = a[0], tuple(a[1]), tuple(a[2] or a[1]), tuple(a[3])
    if mode == "max":
        dil = tuple(a[4]) if len(a) > 4 else (1, 1)
        ceil = bool(a[5]) if len(a) > 5 else False
        cip, bad = True, dil != (1, 1)
    else:
        ceil = bool(a[4]) if len(a) > 4 else False
        cip = bool(a[5]) if len(a) > 5 else True
        bad = (int(a[6]) if len(a) > 6 else 0) != 0
    x_ddr, out_ddr = ctx.value(x), ctx.out()
    ho, wo = out_ddr.shape[2:]
    if bad:
        raise UnsupportedOpError(f"tpu.{mode}_pool2d", name=ctx.layer, where=WHERE,
                                 reason="dilation or divisor_override")
    # ceil_mode: the last window may overhang the padded input. Max ignores the overhang, and an average
    # without count_include_pad counts real cells only, so both equal a pool with the bottom/right pad grown
    # by the overhang; an average counting pads must not count the overhang (PyTorch clips the window to the
    # padded input), which equals count_include_pad=False only when there are no pads.
    over_h = max(0, (ho - 1) * s[0] + k[0] - (x_ddr.shape[2] + pad[0] + pad[1]))
    over_w = max(0, (wo - 1) * s[1] + k[1] - (x_ddr.shape[3] + pad[2] + pad[3]))
    if ceil and (over_h or over_w):
        if mode == "avg" and cip:
            if any(pad):
                raise UnsupportedOpError(f"tpu.{mode}_pool2d", name=ctx.layer, where=WHERE,
                                         reason="ceil_mode windows overhanging explicit pads with "
                                                "count_include_pad")
            cip = False
        pad = (pad[0], pad[1] + over_h, pad[2], pad[3] + over_w)
    sliced_window(ctx, x_ddr, out_ddr, k, s, pad, (1, 1), 0,
                  lambda xs, os_, p: ctx.em.emit(isa.Pool2d, ctx.layer, mode=mode, x=xs, out=os_, kernel=k,
                                                 stride=s, pad=p, count_include_pad=cip))


def gen_reduce(ctx: OpCtx, op: str) -> None:
    """``tpu.reduce_<op>(x, dims, keepdim)`` -> ``reduce`` tiles (``any``: ``max`` of the uint8 mask), see the
    module docstring."""
    x4, axes, out4 = reduce_views(ctx)
    reduce_tiled(ctx, x4, out4, axes, "max" if op == "any" else op)


Run = tuple[int, bool]  # (size, reduced)


def reduce_runs(node: fx.Node) -> list[Run]:
    """The runs of a reduction node ``op(x, dims, ...)``: its non-1 dims, neighbours of one kind (reduced /
    kept) merged; a reduction over size-1 dims only is a copy, ``[..., (1, True)]``."""
    x = node.args[0]
    shape = tuple(int(d) for d in x.meta["val"].shape)
    nd = max(len(shape), 1)
    dims = {int(d) % nd for d in node.args[1]} if node.args[1] else set(range(nd))
    runs: list[list] = []
    for i, s_ in enumerate(shape):
        if s_ == 1:
            continue
        if runs and runs[-1][1] == (i in dims):
            runs[-1][0] *= s_
        else:
            runs.append([s_, i in dims])
    if not any(r for _, r in runs):  # nothing to reduce: a copy through reduce over a size-1 axis
        runs.append([1, True])
    return [(int(n), bool(r)) for n, r in runs]


def reduce_scratch_bytes(node: fx.Node) -> int:
    """DDR scratch of a reduction (``driver.SCRATCH``): its input, transposed, when its dims form more than 4
    runs; else none."""
    if len(reduce_runs(node)) <= 4:
        return 0
    v = node.args[0].meta["val"]
    return v.numel() * cm_dtype(v.dtype).size


def reduce_views(ctx: OpCtx) -> tuple[DdrTensor, tuple[int, ...], DdrTensor]:
    """(4-D input view, reduced axes, 4-D output view) of the reduction ``ctx.node``.

    Reduced runs that trail (at most two runs) are rows of the kept elements (``rows_views``); other patterns
    of at most 4 runs are one view of the input (the runs as its trailing dims; a (reduced, kept) pair with the
    reduced run on the lanes); more runs are transposed first into the op's DDR scratch as (kept runs...,
    reduced runs...), then are rows too."""
    x = ctx.node.args[0]
    runs = reduce_runs(ctx.node)
    dt = cm_dtype(x.meta["val"].dtype)
    out_addr = ctx.out((1, 1, 1, max(ctx.node.meta["val"].numel(), 1))).addr
    odt = cm_dtype(ctx.node.meta["val"].dtype)
    kept = math.prod(n for n, r in runs if not r)
    red = math.prod(n for n, r in runs if r)
    if len(runs) > 4:
        src = _transpose_runs(ctx, x, runs)
        return rows_views(ctx, src, dt, kept, red, out_addr, odt)
    if runs[-1][1] and len(runs) <= 2:
        return rows_views(ctx, ctx.value(x, (1, 1, 1, kept * red)).addr, dt, kept, red, out_addr, odt)
    if len(runs) == 2:  # (reduced, kept): the reduced run on the lanes
        shape4, flags = (1, runs[0][0], 1, runs[1][0]), (False, True, False, False)
    else:
        shape4 = tuple([1] * (4 - len(runs)) + [n for n, _ in runs])
        flags = tuple([False] * (4 - len(runs)) + [r for _, r in runs])
    axes = tuple(i for i in range(4) if flags[i])
    out4 = tuple(1 if f else d for d, f in zip(shape4, flags))
    return ctx.value(x, shape4), axes, ddr_view(out_addr, out4, odt)


def rows_views(ctx: OpCtx, addr: int, dtype: DType, rows: int, red: int, out_addr: int, out_dtype: DType
               ) -> tuple[DdrTensor, tuple[int, ...], DdrTensor]:
    """Views of a dense ``(rows, red)`` reduction over its last dim: ``(nb, rows / nb, 1, red)`` with the rows on
    the lanes (``context.row_batches``). When that does not fit a lane and there are fewer rows than lanes, each
    row is spread over ``f`` lanes as ``(rows, f, 1, red / f)`` reduced over axes 1 and 3 (``f`` the largest
    divisor of ``red`` up to the lane count, when it exceeds ``rows``: ``rows / f`` of the bytes per lane, so
    fewer chunks)."""
    t = ctx.target
    lanes = t.lanes
    nb = row_batches(rows, lanes)
    if rows < lanes and tile_bytes(t, (nb, rows // nb, 1, red), dtype) > t.local_mem_bytes:
        f = max(d for d in range(1, min(red, lanes) + 1) if red % d == 0)
        if f > rows:
            return (ddr_view(addr, (rows, f, 1, red // f), dtype), (1, 3),
                    ddr_view(out_addr, (rows, 1, 1, 1), out_dtype))
    return (ddr_view(addr, (nb, rows // nb, 1, red), dtype), (3,),
            ddr_view(out_addr, (nb, rows // nb, 1, 1), out_dtype))


def _transpose_runs(ctx: OpCtx, x: fx.Node, runs: list[Run]) -> int:
    """Copy ``x`` (dense over its runs) into the op's DDR scratch as (kept runs..., reduced runs...); returns
    the scratch address. ``copy_nd`` loops over the dims beyond 4: the smallest go first (fewest copies), the
    innermost dim of each side stays in the copy's 4-D part."""
    sizes = [n for n, _ in runs]
    src_strides = dense_strides(sizes)
    order = [i for i, (_, r) in enumerate(runs) if not r] + [i for i, (_, r) in enumerate(runs) if r]
    dst_strides = dict(zip(order, dense_strides([sizes[i] for i in order])))
    inner = {order[-1], len(runs) - 1}
    lead = sorted((i for i in order if i not in inner), key=lambda i: sizes[i])[:max(len(runs) - 4, 0)]
    seq = lead + [i for i in order if i not in lead]
    xv = ctx.value(x, (1, 1, 1, math.prod(sizes)))
    dst = ctx.scratch((1, 1, 1, math.prod(sizes)), xv.dtype)
    copy_nd(ctx.em, ctx.layer, xv.dtype, [sizes[i] for i in seq], (xv.addr, [src_strides[i] for i in seq]),
            (dst.addr, [dst_strides[i] for i in seq]))
    return dst.addr


#: reduce op -> the eltwise op that combines two partial results
_COMBINE = {"sum": "add", "mean": "add", "max": "max", "min": "min"}


def reduce_tiled(ctx: OpCtx, x4: DdrTensor, out4: DdrTensor, axes: tuple[int, ...], op: str,
                 acc: DType | None = None, finish: Callable[[LocalTensor, LocalTensor], None] | None = None) -> None:
    """``out4 = op(x4)`` over ``axes`` (sum / mean / max / min), tiled to fit local memory.

    The whole view when it fits; else boxes cut, in this order, until two buffer sets fit (double-buffered;
    one set when two never fit): N, C down to the lane count, H, W, then C below the lane count -- the first
    dim whose cut to its minimum makes a box fit gets the largest block that fits (balanced). Boxes run kept
    block by kept block; a kept block's reduction chunks ``reduce`` into the accumulator (``acc`` dtype: f32 for
    float sum / mean, else the input's) through a partial tile and ``eltwise`` combine, then ``finish(acc_tile,
    out_tile)`` (default: mean -> ``eltwise div`` by the element count, a narrower output -> ``cast``) and one
    store. A kept block reduced in one chunk without ``finish`` is one ``reduce`` straight into the output tile.
    """
    t = ctx.target
    shape = x4.shape
    red = tuple(d in axes for d in range(4))
    count = math.prod(shape[d] for d in axes)
    part_op = "sum" if op == "mean" else op
    if acc is None:
        acc = DType.F32 if x4.dtype.is_float and op in ("sum", "mean") else x4.dtype

    def kept(box) -> tuple[int, int, int, int]:
        return tuple(1 if red[d] else b for d, b in enumerate(box))

    def chunked(box) -> bool:
        return any(red[d] and box[d] < shape[d] for d in range(4))

    def own_acc(ch: bool) -> bool:  # an accumulator apart from the output tile
        return finish is not None or (ch and (op == "mean" or acc != out4.dtype))

    def set_bytes(box) -> int:
        ch = chunked(box)
        k = kept(box)
        return (tile_bytes(t, box, x4.dtype) + tile_bytes(t, k, out4.dtype)
                + (tile_bytes(t, k, acc) if own_acc(ch) else 0) + (tile_bytes(t, k, acc) if ch else 0))

    box, double = _plan_box(shape, set_bytes, t.local_mem_bytes, t.lanes, ctx.layer)
    ch = chunked(box)
    kept_dims = [d for d in range(4) if not red[d]]
    red_dims = [d for d in range(4) if red[d]]
    starts = [range(0, shape[d], box[d]) for d in range(4)]
    nchunks = math.prod(len(starts[d]) for d in red_dims)
    tiles: list[tuple[int, int, int, int]] = []
    for ks in itertools.product(*(starts[d] for d in kept_dims)):
        for rs in itertools.product(*(starts[d] for d in red_dims)):
            st = [0] * 4
            for d, v in zip(kept_dims + red_dims, ks + rs):
                st[d] = v
            tiles.append(tuple(st))
    nsets = 2 if double else 1
    kbox = kept(box)
    sets = [dict(x=ctx.em.arena.tile(box, x4.dtype), out=ctx.em.arena.tile(kbox, out4.dtype),
                 acc=ctx.em.arena.tile(kbox, acc) if own_acc(ch) else None,
                 part=ctx.em.arena.tile(kbox, acc) if ch else None) for _ in range(nsets)]

    def size(i: int) -> tuple[int, int, int, int]:
        return tuple(min(box[d], shape[d] - tiles[i][d]) for d in range(4))

    def load(i: int) -> LocalTensor:
        xs = LocalTensor(0, sets[i % nsets]["x"].addr, size(i), x4.dtype)
        return ctx.em.load(sub_view(x4, tiles[i], xs.shape), xs, ctx.layer)

    def comp(i: int, xs: LocalTensor) -> LocalTensor | None:
        kb, j = divmod(i, nchunks)
        ks = kept(size(i))
        kset = sets[kb % nsets]
        o = LocalTensor(0, kset["out"].addr, ks, out4.dtype)
        a = LocalTensor(0, kset["acc"].addr, ks, acc) if kset["acc"] is not None else o
        if nchunks == 1 and finish is None:
            ctx.em.emit(isa.Reduce, ctx.layer, op=op, x=xs, out=o, axes=axes)
            return o
        if j == 0:
            ctx.em.emit(isa.Reduce, ctx.layer, op=part_op, x=xs, out=a, axes=axes)
        else:
            p = LocalTensor(0, sets[i % nsets]["part"].addr, ks, acc)
            ctx.em.emit(isa.Reduce, ctx.layer, op=part_op, x=xs, out=p, axes=axes)
            ctx.em.emit(isa.Eltwise, ctx.layer, op=_COMBINE[op], a=a, b=p, out=a)
        if j < nchunks - 1:
            return None
        if finish is not None:
            finish(a, o)
        elif op == "mean":
            ctx.em.emit(isa.Eltwise, ctx.layer, op="div", a=a, scalar=float(count), out=o)
        elif a is not o:
            ctx.em.emit(isa.Cast, ctx.layer, x=a, out=o)
        return o

    def store(i: int, o: LocalTensor | None) -> None:
        if o is not None:
            ctx.em.store(o, sub_view(out4, _kept_start(tiles[i], red), o.shape), ctx.layer)

    run_pipeline(len(tiles), double, load, comp, store)


def _kept_start(start: tuple[int, ...], red: tuple[bool, ...]) -> tuple[int, int, int, int]:
    return tuple(0 if r else s for s, r in zip(start, red))


def _plan_box(shape: tuple[int, int, int, int], set_bytes: Callable[[tuple], int], mem: int, lanes: int,
              where: str) -> tuple[tuple[int, int, int, int], bool]:
    """(box, double-buffered): the whole shape in one set, else the cut order of :func:`reduce_tiled`."""
    if set_bytes(tuple(shape)) <= mem:
        return tuple(shape), False
    stages = ((0, 1), (1, min(shape[1], lanes)), (2, 1), (3, 1), (1, 1))
    for sets in (2, 1):
        box = list(shape)
        fits = lambda b: sets * set_bytes(tuple(b)) <= mem  # noqa: E731
        for d, lo in stages:
            if box[d] <= lo:
                continue
            trial = box.copy()
            trial[d] = lo
            if not fits(trial):
                box = trial
                continue
            a, b = lo, box[d] - 1  # the largest block that fits (bytes grow with it below the full size)
            while a < b:
                mid = (a + b + 1) // 2
                trial[d] = mid
                a, b = (mid, b) if fits(trial) else (a, mid - 1)
            if d == 1 and a >= lanes:  # whole lane groups, balanced
                groups = math.ceil(shape[1] / lanes)
                a = math.ceil(groups / math.ceil(groups / (a // lanes))) * lanes
            elif d != 1:
                a = math.ceil(shape[d] / math.ceil(shape[d] / a))  # balanced blocks
            box[d] = a
            return tuple(box), sets == 2
        if fits(box):
            return tuple(box), sets == 2
    raise ProgramError(f"codegen: {where}: one element of the reduction does not fit local memory")


def gen_adaptive_avg_pool2d(ctx: OpCtx) -> None:
    """``tpu.adaptive_avg_pool2d(x, [Ho, Wo])``: window ``i`` covers ``[floor(i H / Ho), ceil((i + 1) H / Ho))``.

    1x1 -> mean over H, W; windows of one size and stride (H % Ho == 0, W % Wo == 0) -> ``pool2d avg``; every
    window one element (Ho % H == 0, Wo % W == 0) -> nearest-repeat copies; else one ``reduce mean`` per output
    cell over its window (loaded as a strided block)."""
    x = ctx.node.args[0]
    n, c, h, w = (int(d) for d in x.meta["val"].shape)
    ho, wo = (int(d) for d in ctx.node.args[1])
    if (ho, wo) == (1, 1):
        x_ddr = ctx.value(x)
        reduce_tiled(ctx, *rows_views(ctx, x_ddr.addr, x_ddr.dtype, n * c, h * w, ctx.out().addr, ctx.out().dtype),
                     "mean")
        return
    if h % ho == 0 and w % wo == 0:
        k = (h // ho, w // wo)
        sliced_window(ctx, ctx.value(x), ctx.out(), k, k, (0, 0, 0, 0), (1, 1), 0,
                      lambda xs, os_, p: ctx.em.emit(isa.Pool2d, ctx.layer, mode="avg", x=xs, out=os_, kernel=k,
                                                     stride=k, pad=p, count_include_pad=True))
        return
    x_ddr, out = ctx.value(x), ctx.out()
    if ho % h == 0 and wo % w == 0:
        es = x_ddr.dtype.size
        rh, rw = ho // h, wo // w
        copy_nd(ctx.em, ctx.layer, x_ddr.dtype, (n * c, h, w, rw), (x_ddr.addr, (h * w, w, 1, 0)),
                (out.addr, (ho * wo, rh * wo, rw, 1)))
        if rh > 1:
            copy_nd(ctx.em, ctx.layer, x_ddr.dtype, (n * c, h, rh - 1, wo), (out.addr, (ho * wo, rh * wo, 0, 1)),
                    (out.addr + wo * es, (ho * wo, rh * wo, wo, 1)))
        return
    win = lambda i, size, osz: (i * size // osz, -(-(i + 1) * size // osz))  # noqa: E731
    cells = [(i, j) + win(i, h, ho) + win(j, w, wo) for i in range(ho) for j in range(wo)]
    kh = max(b - a for _, _, a, b, _, _ in cells)
    kw = max(b - a for _, _, _, _, a, b in cells)
    t = ctx.target
    need = tile_bytes(t, (n, c, kh, kw), x_ddr.dtype) + tile_bytes(t, (n, c, 1, 1), out.dtype)
    double = 2 * need <= t.local_mem_bytes
    if need > t.local_mem_bytes:
        raise ProgramError(f"codegen: {ctx.layer}: an adaptive pool window of {n}x{c}x{kh}x{kw} does not fit "
                           f"{t.local_mem_bytes} bytes of local memory per lane")
    sets = [(ctx.em.arena.tile((n, c, kh, kw), x_ddr.dtype), ctx.em.arena.tile((n, c, 1, 1), out.dtype))
            for _ in range(2 if double else 1)]

    def load(k: int) -> LocalTensor:
        _, _, h0, h1, w0, w1 = cells[k]
        xs = LocalTensor(0, sets[k % len(sets)][0].addr, (n, c, h1 - h0, w1 - w0), x_ddr.dtype)
        return ctx.em.load(sub_view(x_ddr, (0, 0, h0, w0), xs.shape), xs, ctx.layer)

    def comp(k: int, xs: LocalTensor) -> LocalTensor:
        os_ = sets[k % len(sets)][1]
        ctx.em.emit(isa.Reduce, ctx.layer, op="mean", x=xs, out=os_, axes=(2, 3))
        return os_

    def store(k: int, os_: LocalTensor) -> None:
        ctx.em.store(os_, sub_view(out, (0, 0, cells[k][0], cells[k][1]), os_.shape), ctx.layer)

    run_pipeline(len(cells), double, load, comp, store)

"""Codegen of pools and reductions: ``tpu.max_pool2d`` / ``tpu.avg_pool2d`` (tiled along N/H, and W when
one output row does not fit, with halos, as conv: ``ops_conv.sliced_window``), ``tpu.adaptive_avg_pool2d``
(any output size) and ``tpu.reduce_<op>`` over any dims.

Pool tiles carry their own top/bottom/left/right pads only at the tensor's borders, so a window's count of
real and padded cells (avg, ``count_include_pad``) is the same as in the whole tensor: every window lies
inside its tile's loaded-plus-padded extent, as it lies inside the padded tensor. A ceil-mode overhang becomes
extra bottom/right padding (``gen_pool2d``).
"""

from __future__ import annotations

import math

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import LocalTensor
from torch_tpu.errors import ProgramError, UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx, row_batches, run_pipeline, sliced_rows
from torch_tpu.lowering.codegen.emitter import copy_nd, sub_view, tile_bytes
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
    """``tpu.reduce_<op>(x, dims, keepdim)`` -> ``reduce`` (``any``: ``max`` of the uint8 mask).

    Size-1 dims are dropped and neighbouring dims of one kind (reduced / kept) merged; reduced dims that
    trail are the rows layout of ``_reduce_trailing``, any other pattern of at most 4 runs is one 4-D view
    reduced over its reduced axes, tiled along N when N is kept."""
    x = ctx.node.args[0]
    shape = tuple(int(d) for d in x.meta["val"].shape)
    nd = max(len(shape), 1)
    dims = {int(d) % nd for d in ctx.node.args[1]} if ctx.node.args[1] else set(range(nd))
    cop = "max" if op == "any" else op
    runs: list[list] = []  # [size, reduced]
    for i, s_ in enumerate(shape):
        if s_ == 1:
            continue
        if runs and runs[-1][1] == (i in dims):
            runs[-1][0] *= s_
        else:
            runs.append([s_, i in dims])
    if not runs or not any(r for _, r in runs):  # nothing to reduce: a copy through reduce over a size-1 axis
        runs = runs + [[1, True]]
    if len(runs) > 4:
        raise UnsupportedOpError(f"tpu.reduce_{op}", name=ctx.layer, where=WHERE,
                                 reason=f"dims {sorted(dims)} of {shape} form {len(runs)} > 4 kept/reduced runs")
    if runs[-1][1] and len(runs) <= 2:
        kept = runs[0][0] if len(runs) == 2 else 1
        _reduce_trailing(ctx, x, (kept, runs[-1][0]), 1, cop)
        return
    shape4 = tuple([1] * (4 - len(runs)) + [r[0] for r in runs])
    flags = [False] * (4 - len(runs)) + [r[1] for r in runs]
    axes = tuple(i for i in range(4) if flags[i])
    out4 = tuple(1 if f else d for d, f in zip(shape4, flags))
    sliced_rows(ctx, ctx.value(x, shape4), ctx.out(out4), 0,
                lambda xs, os_: ctx.em.emit(isa.Reduce, ctx.layer, op=cop, x=xs, out=os_, axes=axes))


def gen_adaptive_avg_pool2d(ctx: OpCtx) -> None:
    """``tpu.adaptive_avg_pool2d(x, [Ho, Wo])``: window ``i`` covers ``[floor(i H / Ho), ceil((i + 1) H / Ho))``.

    1x1 -> mean over H, W; windows of one size and stride (H % Ho == 0, W % Wo == 0) -> ``pool2d avg``; every
    window one element (Ho % H == 0, Wo % W == 0) -> nearest-repeat copies; else one ``reduce mean`` per output
    cell over its window (loaded as a strided block)."""
    x = ctx.node.args[0]
    n, c, h, w = (int(d) for d in x.meta["val"].shape)
    ho, wo = (int(d) for d in ctx.node.args[1])
    if (ho, wo) == (1, 1):
        _reduce_trailing(ctx, x, (n, c, h, w), 2, "mean")
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


def _reduce_trailing(ctx: OpCtx, x, shape: tuple[int, ...], k: int, op: str) -> None:
    """Reduce the last ``k`` dims: view x as ``(nb, rows / nb, 1, red)`` (rows on the lanes), reduce axis 3,
    tiled along N (``context.sliced_rows``)."""
    red = math.prod(shape[len(shape) - k:])
    rows = math.prod(shape[:len(shape) - k])
    nb = row_batches(rows, ctx.target.lanes)
    sliced_rows(ctx, ctx.value(x, (nb, rows // nb, 1, red)), ctx.out((nb, rows // nb, 1, 1)), 0,
                lambda xs, os_: ctx.em.emit(isa.Reduce, ctx.layer, op=op, x=xs, out=os_, axes=(3,)))

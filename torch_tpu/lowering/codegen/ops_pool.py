"""Codegen of pools and reductions: ``tpu.max_pool2d`` / ``tpu.avg_pool2d`` (tiled along N/H with halos,
as conv), ``tpu.adaptive_avg_pool2d`` to 1x1 and ``tpu.reduce_<op>`` over the spatial / last dims.

Pool slices carry their own top/bottom pads only at the tensor's borders, so a window's count of real and
padded cells (avg, ``count_include_pad``) is the same as in the whole tensor.
"""

from __future__ import annotations

import math

from torch_tpu.cmodel import isa
from torch_tpu.errors import UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx, row_batches, sliced_rows
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
    exact = ((x_ddr.shape[2] + pad[0] + pad[1] - k[0]) // s[0] + 1, (x_ddr.shape[3] + pad[2] + pad[3] - k[1]) // s[1] + 1)
    if bad or (ceil and exact != (ho, wo)):
        raise UnsupportedOpError(f"tpu.{mode}_pool2d", name=ctx.layer, where=WHERE,
                                 reason="dilation, ceil_mode windows or divisor_override")
    sliced_window(ctx, x_ddr, out_ddr, k, s, pad, (1, 1), 0,
                  lambda xs, os_, p: ctx.em.emit(isa.Pool2d, ctx.layer, mode=mode, x=xs, out=os_, kernel=k,
                                                 stride=s, pad=p, count_include_pad=cip))


def gen_reduce(ctx: OpCtx, op: str) -> None:
    """``tpu.reduce_<op>(x, dims, keepdim)`` over trailing dims of a rank <= 4 tensor -> ``reduce``,
    tiled along N (rows of the leading dims when the reduced dims are the last ones)."""
    x = ctx.node.args[0]
    shape = tuple(x.meta["val"].shape)
    dims = sorted(d % len(shape) for d in ctx.node.args[1])
    nd = len(shape)
    if len(shape) > 4 or dims != list(range(dims[0], nd)):
        raise UnsupportedOpError(f"tpu.reduce_{op}", name=ctx.layer, where=WHERE,
                                 reason=f"only trailing dims of a rank <= 4 tensor, got dims {dims} of {shape}")
    _reduce_trailing(ctx, x, shape, nd - dims[0], op)


def gen_adaptive_avg_pool2d(ctx: OpCtx) -> None:
    """``tpu.adaptive_avg_pool2d(x, [1, 1])`` -> mean over H, W."""
    x = ctx.node.args[0]
    if tuple(ctx.node.args[1]) != (1, 1):
        raise UnsupportedOpError("tpu.adaptive_avg_pool2d", name=ctx.layer, where=WHERE,
                                 reason="only output size 1x1")
    _reduce_trailing(ctx, x, tuple(x.meta["val"].shape), 2, "mean")


def _reduce_trailing(ctx: OpCtx, x, shape: tuple[int, ...], k: int, op: str) -> None:
    """Reduce the last ``k`` dims: view x as ``(nb, rows / nb, 1, red)`` (rows on the lanes), reduce axis 3,
    tiled along N (``context.sliced_rows``)."""
    red = math.prod(shape[len(shape) - k:])
    rows = math.prod(shape[:len(shape) - k])
    nb = row_batches(rows, ctx.target.lanes)
    sliced_rows(ctx, ctx.value(x, (nb, rows // nb, 1, red)), ctx.out((nb, rows // nb, 1, 1)), 0,
                lambda xs, os_: ctx.em.emit(isa.Reduce, ctx.layer, op=op, x=xs, out=os_, axes=(3,)))

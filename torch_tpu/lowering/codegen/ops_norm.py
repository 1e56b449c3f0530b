"""Codegen of ``tpu.softmax`` / ``tpu.log_softmax`` along any dim and ``tpu.layer_norm`` over the last
``num_dims`` dims.

Both view ``x`` as ``(nb, rows / nb, 1, D)`` (rows = product of the leading dims, on the lanes; D = the
normalized elements) and run one instruction per slice of whole rows along ``axis = 3``; a softmax over a
dim with ``post`` elements after it uses ``(nb, rows / nb, D, post)`` and ``axis = 2``::

    softmax:    y = exp(x - max) / sum exp(x - max)          (log: (x - max) - log sum exp(x - max))
    layernorm:  y = (x - mean) / sqrt(var + eps) * weight + bias   (biased variance; weight/bias (1, 1, 1, D))
"""

from __future__ import annotations

import math

from torch_tpu.cmodel import isa
from torch_tpu.lowering.codegen.context import OpCtx, row_batches, sliced_rows
from torch_tpu.lowering.codegen.emitter import tile_bytes

WHERE = "codegen (torch_tpu/lowering/codegen/ops_norm.py)"


def gen_softmax(ctx: OpCtx, log: bool) -> None:
    """``tpu.softmax(x, dim)`` / ``tpu.log_softmax`` along any dim -> ``softmax`` per slice of rows."""
    x = ctx.node.args[0]
    shape = tuple(int(d) for d in x.meta["val"].shape) or (1,)
    dim = int(ctx.node.args[1]) % len(shape)
    d = shape[dim]
    rows, post = math.prod(shape[:dim]), math.prod(shape[dim + 1:])
    nb = row_batches(rows, ctx.target.lanes)
    if post == 1:  # along the last dim: rows on the lanes, softmax over W
        view, axis = (nb, rows // nb, 1, d), 3
    else:  # (rows, D, post): rows on the lanes, softmax over H
        view, axis = (nb, rows // nb, d, post), 2
    sliced_rows(ctx, ctx.value(x, view), ctx.out(view), 0,
                lambda xs, os_: ctx.em.emit(isa.Softmax, ctx.layer, x=xs, out=os_, axis=axis, log=log))


def gen_layer_norm(ctx: OpCtx) -> None:
    """``tpu.layer_norm(x, weight, bias, num_dims, eps)`` -> ``layernorm`` per slice of rows."""
    x, w, b, num_dims, eps = ctx.node.args[:5]
    shape = tuple(x.meta["val"].shape)
    d = math.prod(shape[len(shape) - int(num_dims):])
    rows = math.prod(shape[:len(shape) - int(num_dims)])
    nb = row_batches(rows, ctx.target.lanes)
    tiles = {}
    const_bytes = 0
    for key, arg in (("weight", w), ("bias", b)):
        if arg is not None:
            view = ctx.operand(arg, (1, 1, 1, d))
            const_bytes += tile_bytes(ctx.target, view.shape, view.dtype)
            tiles[key] = ctx.em.load(view, ctx.em.arena.tile(view.shape, view.dtype), ctx.layer)
    sliced_rows(ctx, ctx.value(x, (nb, rows // nb, 1, d)), ctx.out((nb, rows // nb, 1, d)), const_bytes,
                lambda xs, os_: ctx.em.emit(isa.LayerNorm, ctx.layer, x=xs, out=os_, axis=3, eps=float(eps),
                                            **tiles))

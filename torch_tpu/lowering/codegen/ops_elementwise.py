"""Codegen of element-wise ops: unary activations, binary arithmetic (broadcast), constant forms, casts.

Every op is ``out = f(in_0, ..., in_k)`` element by element, so the output is cut into slices along N and H,
and W when one row does not fit (``context.plan_tiles``; no halo), and each slice runs ``dma_load`` (each
input, broadcast operands as stride-0 DDR views) -> one compute instruction -> ``dma_store``. Inputs
without broadcast are refolded to ``(1, g, numel / g, 1)`` with ``g = gcd(numel, lanes)`` so any tensor
spreads over the lanes and can be cut; broadcast ones keep their 4-D shape, so a long row (``1x3x1x100000 +
bias``) is cut along W.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import UnsupportedOpError
from torch_tpu.lowering.codegen.context import OpCtx, plan_tiles, run_pipeline
from torch_tpu.lowering.codegen.emitter import broadcast_view, sub_view, tile_bytes, to4d

#: tpu unary op -> (cmodel activation, fields from the node's args)
UNARY: dict[str, tuple[str, Callable[[tuple], dict[str, Any]]]] = {
    **{n: (n, lambda a: {}) for n in ("relu", "sigmoid", "silu", "tanh", "hardswish", "hardsigmoid", "exp", "erf",
                                       "log", "sqrt", "rsqrt", "neg", "abs")},
    "leaky_relu": ("leaky_relu", lambda a: {"alpha": float(a[1])}),
    "clip": ("clip", lambda a: {"lo": float(a[1]), "hi": float(a[2])}),
}
#: tpu binary op -> cmodel eltwise op
BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "maximum": "max", "minimum": "min"}
COMMUTATIVE = ("add", "mul", "maximum", "minimum")

WHERE = "codegen (torch_tpu/lowering/codegen/ops_elementwise.py)"


def sliced_map(ctx: OpCtx, inputs: list[DdrTensor], out: DdrTensor,
               compute: Callable[[list[LocalTensor], LocalTensor], None], scratch: tuple[DType, ...] = (),
               const_bytes: int = 0) -> None:
    """Tile ``out`` along N/H (and W when one row does not fit); per tile load every input's matching block,
    ``compute``, store.

    ``inputs`` are views of ``out``'s shape (broadcast views allowed); ``compute`` receives the input tiles
    followed by one scratch tile of the tile's shape per dtype in ``scratch``. ``const_bytes``: per-lane bytes
    the caller already took from the arena (a table loaded once), left out of the tiles.
    """
    t = ctx.target
    n, c, h, w = out.shape
    dts = [x.dtype for x in inputs] + list(scratch) + [out.dtype]

    def tile_set(nb: int, r: int, cw: int) -> int:
        return sum(tile_bytes(t, (nb, c, r, cw), d) for d in dts)

    tiles, double = plan_tiles(n, h, w, tile_set, const_bytes, t.local_mem_bytes, ctx.layer)
    n0, n1, h0, h1, w0, w1 = tiles[0]
    big = (n1 - n0, c, h1 - h0, w1 - w0)
    sets = []
    for _ in range(2 if double else 1):
        sets.append(([ctx.em.arena.tile(big, x.dtype) for x in inputs],
                     ctx.em.arena.tile(big, out.dtype), [ctx.em.arena.tile(big, d) for d in scratch]))

    def load(i: int) -> tuple[list[LocalTensor], tuple]:
        n0, n1, h0, h1, w0, w1 = tiles[i]
        shape = (n1 - n0, c, h1 - h0, w1 - w0)
        loaded = []
        for x, buf in zip(inputs, sets[i % len(sets)][0]):
            tile = LocalTensor(0, buf.addr, shape, x.dtype)
            ctx.em.load(sub_view(x, (n0, 0, h0, w0), shape), tile, ctx.layer)
            loaded.append(tile)
        loaded += [LocalTensor(0, buf.addr, shape, buf.dtype) for buf in sets[i % len(sets)][2]]
        return loaded, shape

    def comp(i: int, loaded) -> LocalTensor:
        tiles_, shape = loaded
        ot = LocalTensor(0, sets[i % len(sets)][1].addr, shape, out.dtype)
        compute(tiles_, ot)
        return ot

    def store(i: int, ot: LocalTensor) -> None:
        n0, _, h0, _, w0, _ = tiles[i]
        ctx.em.store(ot, sub_view(out, (n0, 0, h0, w0), ot.shape), ctx.layer)

    run_pipeline(len(tiles), double, load, comp, store)


def _flat_shape(numel: int, lanes: int) -> tuple[int, int, int, int]:
    g = math.gcd(numel, lanes)
    return (1, g, numel // g, 1)


def _views(ctx: OpCtx, args: list) -> tuple[list[DdrTensor], DdrTensor]:
    """Input views broadcast to the output, and the output view (refolded when nothing broadcasts)."""
    out_shape = tuple(ctx.node.meta["val"].shape)
    shapes = [tuple(a.meta["val"].shape) for a in args]
    if all(s == out_shape for s in shapes):
        flat = _flat_shape(max(math.prod(out_shape), 1), ctx.target.lanes)
        return [ctx.operand(a, flat) for a in args], ctx.out(flat)
    nd = len(out_shape)
    out4 = to4d(out_shape)
    ins = []
    for a, s in zip(args, shapes):
        s_full = (1,) * (nd - len(s)) + s
        ins.append(broadcast_view(ctx.operand(a, to4d(s_full)), out4))
    return ins, ctx.out(out4)


def gen_unary(ctx: OpCtx, op: str) -> None:
    """``tpu.<activation>(x, ...)`` -> ``activation`` (pow 2 -> ``square``, gelu tanh -> ``gelu_tanh``)."""
    args = ctx.node.args
    if op == "gelu":
        approx = args[1] if len(args) > 1 else ctx.node.kwargs.get("approximate", "none")
        name, fields = ("gelu_tanh" if approx == "tanh" else "gelu"), {}
    elif op == "pow":
        if float(args[1]) != 2.0:
            raise UnsupportedOpError("tpu.pow", name=ctx.layer, where=WHERE, reason="only exponent 2")
        name, fields = "square", {}
    else:
        name, getf = UNARY[op]
        fields = getf(args)
    ins, out = _views(ctx, [args[0]])
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Activation, ctx.layer, op=name, x=x[0], out=o,
                                                        **fields))


def gen_binary(ctx: OpCtx, op: str) -> None:
    """``tpu.<op>(a, b)`` with broadcasting -> ``eltwise``."""
    ins, out = _views(ctx, list(ctx.node.args[:2]))
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Eltwise, ctx.layer, op=BINARY[op], a=x[0], b=x[1],
                                                        out=o))


def gen_binary_const(ctx: OpCtx, op: str) -> None:
    """``tpu.<op>_const(x, c, reverse)`` -> ``eltwise`` with ``scalar = c``; reverse ``sub`` is ``neg`` then
    ``add``; reverse ``div`` is refused."""
    args = ctx.node.args
    reverse = bool(args[2]) if len(args) > 2 else bool(ctx.node.kwargs.get("reverse", False))
    ins, out = _views(ctx, [args[0]])
    if reverse and op == "sub":  # c - x = (-x) + c: the negation is exact, the sum rounds once
        def compute(x: list[LocalTensor], o: LocalTensor) -> None:
            ctx.em.emit(isa.Activation, ctx.layer, op="neg", x=x[0], out=x[1])
            ctx.em.emit(isa.Eltwise, ctx.layer, op="add", a=x[1], scalar=float(args[1]), out=o)

        sliced_map(ctx, ins, out, compute, scratch=(ins[0].dtype,))
        return
    if reverse and op not in COMMUTATIVE:
        raise UnsupportedOpError(f"tpu.{op}_const", name=ctx.layer, where=WHERE,
                                 reason="constant-first division would round twice (reciprocal, mul)")
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Eltwise, ctx.layer, op=BINARY[op], a=x[0],
                                                        scalar=float(args[1]), out=o))


def gen_cast(ctx: OpCtx) -> None:
    """``tpu.cast(x, dtype)`` between float dtypes -> ``cast`` (round to nearest even)."""
    src = DType.from_torch(ctx.node.args[0].meta["val"].dtype)
    dst = DType.from_torch(ctx.node.meta["val"].dtype)
    if not (src.is_float and dst.is_float):
        raise UnsupportedOpError("tpu.cast", name=ctx.layer, where=WHERE,
                                 reason=f"{src.label} -> {dst.label}: only float <-> float casts")
    ins, out = _views(ctx, [ctx.node.args[0]])
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Cast, ctx.layer, x=x[0], out=o))


def gen_scale_shift(ctx: OpCtx) -> None:
    """``tpu.scale_shift(x, s, t, dim)``: ``y = round(f32(f32(x) * f32(s[c])) + f32(t[c]))`` as an
    ``eltwise mul`` into an f32 scratch tile (the exact f32 product) then an ``eltwise add`` rounded once."""
    x, s, t = ctx.node.args[:3]
    dim = int(ctx.node.args[3]) if len(ctx.node.args) > 3 else 1
    shape = tuple(ctx.node.meta["val"].shape)
    if len(shape) > 4:
        raise UnsupportedOpError("tpu.scale_shift", name=ctx.layer, where=WHERE, reason="rank > 4")
    view = [1] * len(shape)
    view[dim % len(shape)] = shape[dim % len(shape)]
    out = ctx.out()
    ins = [ctx.operand(x)] + [broadcast_view(ctx.operand(a, to4d(tuple(view))), out.shape) for a in (s, t)]

    def compute(tiles: list[LocalTensor], o: LocalTensor) -> None:
        xt, st, tt, prod = tiles
        ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=xt, b=st, out=prod)
        ctx.em.emit(isa.Eltwise, ctx.layer, op="add", a=prod, b=tt, out=o)

    sliced_map(ctx, ins, out, compute, scratch=(DType.F32,))

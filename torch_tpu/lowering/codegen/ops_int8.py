"""Codegen of the INT8 TPU ops (``torch_tpu/tpu_ops/int8_*.py``) as sequences of existing instructions.

Every handler reproduces its reference op bit for bit. The ISA's integer MACs have no input zero point, so zero
points are moved out of the MACs by exact integer identities (``K`` = reduction length)::

    conv2d_int8   out = requant(conv(x padded with x_zp, w) + bias - x_zp·W[o])   (W[o] = sum of w[o])
                  one ``conv2d``: pad_value = x_zp makes a padded tap read x_zp, i.e. contribute
                  (x_zp - x_zp)·w = 0 after the folded bias, exactly as the reference's zero padding of x - x_zp;
                  the per-channel requant, the output zero point and the bounds are fused into it
    linear_int8   one row: a 1x1 ``conv2d`` of x viewed (1, K, 1, 1) (features on the lanes); more rows: a
                  ``matmul`` x (M, K) @ W^T (K, N) with the requant per output column; bias - x_zp·W[n] as above
    matmul_int8   acc = a@b - b_zp·rowsum(a) - a_zp·(colsum(b) - K·b_zp); without zero points one ``matmul``
                  with the requant fused, else ``matmul`` (int32), the terms (``reduce``, ``eltwise``), ``requant``
    avg_pool2d    acc = window sum of (x - x_zp)  (x - x_zp in int32 first: pads then add 0, as xp - x_zp)
    reduce_sum    acc = sum(x) - x_zp·n
    add/sub_int8  t = requant(x - x_zp, m, s) to int32 for each input; y = requant(ta ± tb, m_o, s_o, out_zp)
    mul_int8      y = requant((a - a_zp)·(b - b_zp), m, s, out_zp)
    requant_int8, concat_int8 (identity parts are plain DMA copies), lut_int8, quantize/dequantize_int8
    conv2d_lut_int8  ``conv2d`` into int32, then the interpolated table (:func:`lut_interp_epilogue`): requant
                  to the 16-bit grid, knot index by a requant to int8, two int32 ``lut`` lookups, ``eltwise``
    *_int8_f32    conv2d / linear / matmul as above into an int32 tile (no fused requant), then ``cast`` to f32
                  [``eltwise mul`` by the per-channel f32 scale tile; a single scale rides on the cast] [f32
                  ``relu`` / ``clip``]: ``clamp(f32(acc) · scale, lo, hi)`` with the reference's two roundings

An unfused ``y = requant(acc, m, s, out_zp)`` is followed, when the saturation bounds are narrower than int8 (a
fused relu / relu6 / clip), by an integer ``clip``; a fused requant takes the bounds as ``qmin``/``qmax``
(``kernels_ref.requant_epilogue``). ``max_pool2d_int8`` is the float handler (max ignores pads and needs no zero point).

Exactness: the ISA computes integers exactly in int64 and saturates each result to its dtype, so every
step above equals the reference as long as no int32 intermediate saturates. The bounds that guarantee it are
checked here (``UnsupportedOpError`` otherwise): int32 bias after folding, |sum of the rescaled add inputs| < 2^31,
matmul K < 2^16; conv/linear/pool/reduce accumulators must fit int32 in the reference itself.

Tiling: ``ops_conv.sliced_tiles`` (shared with the float conv and pools) cuts the output along N then H with
halos (``ops_conv.window_rows``) through ``context.plan_slices`` / ``run_pipeline`` (double-buffered when sliced), and a windowed op that passes its W
window (avg pool, conv) along W too when one row does not fit (``context.plan_tiles``, pads only at the image's
borders); int32 scratch tiles are part of each slice's budget. ``reduce_sum_int8`` shares the float reductions'
tiling (``ops_pool.reduce_tiled``: int32 partial sums of reduction chunks added exactly). Element-wise steps on a
scratch tile write it in place (``eltwise``/``clip`` with ``out`` = an input of the same dtype): a kernel reads its
operands before it writes, and the emitter's dependencies order the accesses.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from typing import Any, Callable

import torch
import torch.fx as fx

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import UnsupportedOpError
from torch_tpu.lowering.codegen import ops_elementwise as ew, ops_pool
from torch_tpu.lowering.codegen.context import OpCtx, WeightPacker, plan_slices, row_batches, run_pipeline
from torch_tpu.lowering.codegen.emitter import sub_view, tile_bytes
from torch_tpu.lowering.codegen.ops_conv import SliceTiles, sliced_tiles

WHERE = "codegen (torch_tpu/lowering/codegen/ops_int8.py)"
I32 = DType.INT32
INT32_LIMIT = 2 ** 31


def params(ctx: OpCtx) -> dict[str, Any]:
    """The node's arguments by schema name (defaults filled in)."""
    out: dict[str, Any] = {}
    for i, a in enumerate(ctx.node.target._schema.arguments):
        if i < len(ctx.node.args):
            out[a.name] = ctx.node.args[i]
        elif a.name in ctx.node.kwargs:
            out[a.name] = ctx.node.kwargs[a.name]
        else:
            out[a.name] = a.default_value if a.has_default_value() else None
    return out


#: constants derived from the weights (folded biases, border maps), per codegen run: the driver calls each
#: handler twice (a dry pass that sizes the weight region, then the real one) with the same WeightPacker
_DERIVED: "weakref.WeakKeyDictionary[WeightPacker, dict]" = weakref.WeakKeyDictionary()


def derived(ctx: OpCtx, key: tuple, make: Callable[[], Any]) -> Any:
    """``make()`` computed once per codegen run and ``key``."""
    memo = _DERIVED.setdefault(ctx.weights, {})
    if key not in memo:
        memo[key] = make()
    return memo[key]


def _refuse(ctx: OpCtx, reason: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"tpu.{ctx.node.target._schema.name.split('::')[-1]}", name=ctx.layer, where=WHERE,
                              reason=reason)


def _bounds(ctx: OpCtx, p: dict[str, Any]) -> tuple[int, int]:
    qmin, qmax = int(p.get("qmin", -128)), int(p.get("qmax", 127))
    if qmin < -128 or qmax > 127:
        raise _refuse(ctx, f"saturation bounds [{qmin}, {qmax}] exceed int8")
    return qmin, qmax


def per_channel(ctx: OpCtx, mult: fx.Node, shift: fx.Node) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The multiplier and shift constants as tuples (one value each when every channel has the same pair)."""
    m, s = (tuple(int(v) for v in ctx.const_tensor(n).reshape(-1).tolist()) for n in (mult, shift))
    return (m[:1], s[:1]) if len(set(zip(m, s))) == 1 else (m, s)


def requant_out(ctx: OpCtx, acc: LocalTensor, out: LocalTensor, multiplier: tuple[int, ...], shift: tuple[int, ...],
                out_zp: int, qmin: int, qmax: int) -> None:
    """``out = clamp(requant(acc, m, s) + out_zp, qmin, qmax)``: a ``requant`` (saturating to int8) and an
    integer ``clip`` in place when the bounds are narrower than int8."""
    ctx.em.emit(isa.Requant, ctx.layer, x=acc, out=out, multiplier=multiplier, shift=shift, zero_point=int(out_zp))
    clip(ctx, out, qmin, qmax)


def clip(ctx: OpCtx, t: LocalTensor, qmin: int, qmax: int) -> None:
    if (qmin, qmax) != (-128, 127):
        ctx.em.emit(isa.Activation, ctx.layer, op="clip", x=t, out=t, lo=float(qmin), hi=float(qmax))


def minus_zp(ctx: OpCtx, x: LocalTensor, zp: int, scratch: LocalTensor | None) -> LocalTensor:
    """``x - zp`` as int32 in ``scratch`` (exact); ``x`` itself when ``zp == 0``."""
    if not zp:
        return x
    ctx.em.emit(isa.Eltwise, ctx.layer, op="sub", a=x, scalar=float(zp), out=scratch)
    return scratch


# ---- tiling -------------------------------------------------------------------------------------------------

def load_const(ctx: OpCtx, view: DdrTensor) -> tuple[LocalTensor, int]:
    """Load a packed constant once for the whole op: (its tile, its per-lane bytes)."""
    tile = ctx.em.load(view, ctx.em.arena.tile(view.shape, view.dtype), ctx.layer)
    return tile, tile_bytes(ctx.target, view.shape, view.dtype)


# ---- MAC ops ------------------------------------------------------------------------------------------------

def folded_bias(ctx: OpCtx, w: torch.Tensor, bias: torch.Tensor | None, x_zp: int) -> torch.Tensor | None:
    """``bias[o] - x_zp · sum(w[o])`` as int32 (None when there is neither a bias nor a zero point)."""
    if not x_zp:
        return None if bias is None else bias.to(torch.int32).reshape(-1)
    b = torch.zeros(w.shape[0], dtype=torch.int64) if bias is None else bias.to(torch.int64).reshape(-1)
    b = b - int(x_zp) * w.reshape(w.shape[0], -1).sum(1, dtype=torch.int64)
    if b.abs().max() >= INT32_LIMIT:
        raise _refuse(ctx, f"bias minus x_zp * weight sum leaves int32 (x_zp = {x_zp})")
    return b.to(torch.int32)


def load_mac_consts(ctx: OpCtx, w: fx.Node, b: fx.Node | None, shape4: tuple[int, int, int, int], x_zp: int,
                    bias_shape: tuple[int, int, int, int] | None = None, transpose: bool = False
                    ) -> tuple[LocalTensor, LocalTensor | None, int]:
    """Pack and load once a MAC op's int8 weight as ``shape4`` (``transpose``: the 2-D weight's transpose, a
    matmul's ``b``) and its int32 bias with the zero point folded in, shaped ``bias_shape`` (default: one value per
    lane channel, ``(1, shape4[1], 1, 1)``): (weight tile, bias tile or None, per-lane bytes)."""
    wt = ctx.const_tensor(w)
    packed = wt.t() if transpose else wt
    w_tile, nbytes = load_const(ctx, ctx.weights.add((w.target, "int8", shape4, transpose), packed, shape4,
                                                     DType.INT8))
    key = (w.target, b.target if b is not None else None, x_zp, "bias_zp")
    bias = derived(ctx, key, lambda: folded_bias(ctx, wt, ctx.const_tensor(b) if b is not None else None, x_zp))
    if bias is None:
        return w_tile, None, nbytes
    b_tile, more = load_const(ctx, ctx.weights.add(key + (bias_shape,), bias, bias_shape or (1, shape4[1], 1, 1),
                                                   I32))
    return w_tile, b_tile, nbytes + more


def fused_requant(ctx: OpCtx, p: dict[str, Any], multiplier: tuple[int, ...], shift: tuple[int, ...]
                  ) -> dict[str, Any]:
    """The fused requant fields of a conv2d / matmul: multiplier, shift, the output zero point and bounds."""
    qmin, qmax = _bounds(ctx, p)
    return dict(multiplier=multiplier, shift=shift, zero_point=int(p["out_zp"]), qmin=qmin, qmax=qmax)


F32_MAX = float(torch.finfo(torch.float32).max)


def dequant_out(ctx: OpCtx, acc: LocalTensor, out: LocalTensor, scale: LocalTensor | float, lo: float | None,
                hi: float | None) -> None:
    """``out = clamp(f32(acc) · scale, lo, hi)`` (the ``*_int8_f32`` ops): ``cast`` int32 -> f32 (with the scale
    when it is one value, the cast's ``(x - 0) · scale`` in f32), else ``cast`` and an f32 ``eltwise mul`` by
    the per-channel scale tile (broadcast); a ``relu`` / ``clip`` in f32 for the bounds. Both roundings of the
    reference (int -> f32, the product) happen in the same order, so the result is bit-identical."""
    if isinstance(scale, float):
        ctx.em.emit(isa.Cast, ctx.layer, x=acc, out=out, scale=scale)
    else:
        ctx.em.emit(isa.Cast, ctx.layer, x=acc, out=out)
        ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=out, b=scale, out=out)
    if lo is None and hi is None:
        return
    if lo == 0.0 and hi is None:
        ctx.em.emit(isa.Activation, ctx.layer, op="relu", x=out, out=out)
        return
    ctx.em.emit(isa.Activation, ctx.layer, op="clip", x=out, out=out, lo=-F32_MAX if lo is None else float(lo),
                hi=F32_MAX if hi is None else float(hi))


@dataclasses.dataclass(frozen=True)
class MacEpilogue:
    """What a conv / linear does with its int32 accumulator: the int8 form fuses the requant into the MAC
    instruction (``fields``); the float-output form (``scale`` set) lets the MAC write an int32 scratch tile
    and dequantizes it into the f32 output (:func:`dequant_out`)."""

    fields: dict[str, Any]
    scale: LocalTensor | float | None = None
    lo: float | None = None
    hi: float | None = None
    const_bytes: int = 0

    @property
    def scratch(self) -> tuple[DType, ...]:
        """The out-shaped scratch tiles a slice needs (the int32 accumulator of the float-output form)."""
        return (I32,) if self.scale is not None else ()

    def mac_out(self, sl: SliceTiles) -> LocalTensor:
        return sl.out_scratch[0] if self.scale is not None else sl.out

    def finish(self, ctx: OpCtx, sl: SliceTiles) -> None:
        if self.scale is not None:
            dequant_out(ctx, sl.out_scratch[0], sl.out, self.scale, self.lo, self.hi)


def is_f32_form(ctx: OpCtx) -> bool:
    """Whether the node is a float-output MAC (``tpu.*_int8_f32``)."""
    return ctx.node.target._schema.name.endswith("_int8_f32")


def mac_epilogue(ctx: OpCtx, p: dict[str, Any], scale_shape: tuple[int, int, int, int]) -> MacEpilogue:
    """The epilogue of a conv2d / linear (int8 or float-output form); a per-channel scale is packed as
    ``scale_shape`` and loaded once (one value for every channel: the cast's scalar scale instead)."""
    if not is_f32_form(ctx):
        return MacEpilogue(fused_requant(ctx, p, *per_channel(ctx, p["multiplier"], p["shift"])))
    sc = ctx.const_tensor(p["scale"]).to(torch.float32).reshape(-1)
    lo, hi = p["lo"], p["hi"]
    if bool((sc == sc[0]).all()):
        return MacEpilogue({}, float(sc[0]), lo, hi)
    tile, nbytes = load_const(ctx, ctx.weights.add((p["scale"].target, "f32_scale", scale_shape), sc, scale_shape,
                                                   DType.F32))
    return MacEpilogue({}, tile, lo, hi, nbytes)


@dataclasses.dataclass(frozen=True)
class ConvInt8:
    """What the int8 conv handlers share: the op's params, its weight and zero-point-folded bias loaded once
    into local memory (``const_bytes`` per lane), the ``conv2d`` fields (padded with x_zp)."""

    p: dict[str, Any]
    w: LocalTensor
    bias: LocalTensor | None
    const_bytes: int
    fields: dict[str, Any]

    @classmethod
    def load(cls, ctx: OpCtx) -> "ConvInt8":
        p = params(ctx)
        x_zp = int(p["x_zp"])
        if not -128 <= x_zp <= 127:
            raise _refuse(ctx, f"x_zp = {x_zp} is not an int8 value (the conv pads with it)")
        cout, cin_g, kh, kw = ctx.const_tensor(p["weight"]).shape
        w_tile, b_tile, const_bytes = load_mac_consts(ctx, p["weight"], p["bias"], (1, cout, 1, cin_g * kh * kw),
                                                      x_zp)
        fields = dict(kernel=(kh, kw), stride=tuple(p["stride"]), dilation=tuple(p["dilation"]),
                      groups=int(p["groups"]), pad_value=x_zp)
        return cls(p, w_tile, b_tile, const_bytes, fields)

    def sliced(self, ctx: OpCtx, emit: Callable[[SliceTiles], None], extra_const: int,
               out_scratch: tuple[DType, ...]) -> None:
        """Tile along N/H (and W for long rows) with halos; ``emit`` writes one slice's instructions."""
        (kh, kw), stride, dil = self.fields["kernel"], self.fields["stride"], self.fields["dilation"]
        sliced_tiles(ctx, ctx.value(self.p["x"]), ctx.out(), emit, kernel_h=kh, stride_h=stride[0],
                    pad=tuple(self.p["padding"]), dilation_h=dil[0], const_bytes=self.const_bytes + extra_const,
                    out_scratch=out_scratch, w_window=(kw, stride[1], dil[1]))


def gen_conv2d_int8(ctx: OpCtx) -> None:
    """``tpu.conv2d_int8`` -> one ``conv2d`` per slice: padded with x_zp, zero-point-folded int32 bias, the
    per-channel requant fused; tiled along N/H (and W for long rows) with halos. ``tpu.conv2d_int8_f32``: the
    same ``conv2d`` into an int32 tile, then :func:`dequant_out` into the f32 output."""
    cv = ConvInt8.load(ctx)
    epi = mac_epilogue(ctx, cv.p, (1, cv.w.shape[1], 1, 1))
    fields = {**cv.fields, **epi.fields}

    def emit(sl: SliceTiles) -> None:
        ctx.em.emit(isa.Conv2d, ctx.layer, x=sl.x, w=cv.w, bias=cv.bias, out=epi.mac_out(sl), pad=sl.pad, **fields)
        epi.finish(ctx, sl)

    cv.sliced(ctx, emit, epi.const_bytes, epi.scratch)


def gen_linear_int8(ctx: OpCtx) -> None:
    """``tpu.linear_int8(x [.., K], W [N, K])`` with M rows of x: M > 1 -> ``matmul`` x (M, K) @ W^T (K, N) with
    the per-column requant fused (rows on the lanes, viewed ``(M / 64, 64, 1, K)`` when 64 divides M, tiled
    along that N); M = 1 -> a 1x1 ``conv2d`` over x viewed ``(1, K, 1, 1)`` (features on the lanes, the requant
    per channel), which the timing model charges less than a one-row matmul. ``tpu.linear_int8_f32``: the same
    MAC into an int32 tile, then :func:`dequant_out` (scale per column / per channel) into the f32 output."""
    p = params(ctx)
    x, w, b = p["x"], p["weight"], p["bias"]
    x_zp = int(p["x_zp"])
    wt = ctx.const_tensor(w)
    n_out, k = wt.shape
    rows = math.prod(tuple(x.meta["val"].shape)[:-1])
    nb = row_batches(rows, ctx.target.lanes)
    t = ctx.target
    out_dt = DType.F32 if is_f32_form(ctx) else DType.INT8
    out_shape = (1, rows // nb, 1, n_out)
    one_slice = tile_bytes(t, (1, rows // nb, 1, k), DType.INT8) + tile_bytes(t, out_shape, out_dt)
    if out_dt == DType.F32:
        one_slice += tile_bytes(t, out_shape, I32) + tile_bytes(t, (1, 1, 1, n_out), DType.F32)
    w_bytes = tile_bytes(t, (1, k, 1, n_out), DType.INT8) + tile_bytes(t, (1, 1, 1, n_out), I32)
    if rows > 1 and one_slice + w_bytes <= t.local_mem_bytes:
        w_tile, b_tile, const_bytes = load_mac_consts(ctx, w, b, (1, k, 1, n_out), x_zp, (1, 1, 1, n_out),
                                                      transpose=True)
        epi = mac_epilogue(ctx, p, (1, 1, 1, n_out))

        def emit_mm(sl: SliceTiles) -> None:
            ctx.em.emit(isa.MatMul, ctx.layer, a=sl.x, b=w_tile, bias=b_tile, out=epi.mac_out(sl), **epi.fields)
            epi.finish(ctx, sl)

        sliced_tiles(ctx, ctx.value(x, (nb, rows // nb, 1, k)), ctx.out((nb, rows // nb, 1, n_out)), emit_mm,
                    const_bytes=const_bytes + epi.const_bytes, out_scratch=epi.scratch)
        return
    w_tile, b_tile, const_bytes = load_mac_consts(ctx, w, b, (1, n_out, 1, k), x_zp)
    epi = mac_epilogue(ctx, p, (1, n_out, 1, 1))

    def emit(sl: SliceTiles) -> None:
        ctx.em.emit(isa.Conv2d, ctx.layer, x=sl.x, w=w_tile, bias=b_tile, out=epi.mac_out(sl), kernel=(1, 1),
                    **epi.fields)
        epi.finish(ctx, sl)

    sliced_tiles(ctx, ctx.value(x, (rows, k, 1, 1)), ctx.out((rows, n_out, 1, 1)), emit,
                const_bytes=const_bytes + epi.const_bytes, out_scratch=epi.scratch)


def gen_matmul_int8(ctx: OpCtx) -> None:
    """``tpu.matmul_int8(a, b)`` of two values with equal batch dims -> ``matmul`` with the requant fused when
    both zero points are 0, else ``matmul`` (int32), the zero-point terms (``reduce`` sums, ``eltwise``) ->
    ``requant``; tiled along the batch. ``tpu.matmul_int8_f32``: the int32 accumulator (zero-point terms
    likewise) -> :func:`dequant_out` with the one f32 scale."""
    p = params(ctx)
    x, y = p["a"], p["b"]
    xs, ys = tuple(x.meta["val"].shape), tuple(y.meta["val"].shape)
    if len(xs) < 2 or len(ys) < 2 or xs[:-2] != ys[:-2] or ctx.is_const(x) or ctx.is_const(y):
        raise _refuse(ctx, f"only equal batch dims of two computed values, got {xs} @ {ys}")
    a_zp, b_zp = int(p["a_zp"]), int(p["b_zp"])
    f32_form = is_f32_form(ctx)
    if not f32_form:
        out_zp = int(p["out_zp"])
        qmin, qmax = _bounds(ctx, p)
    m, k, n = xs[-2], xs[-1], ys[-1]
    if k >= 2 ** 16:
        raise _refuse(ctx, f"K = {k}: the zero-point terms could leave int32 (K < 2^16 needed)")
    bsz = math.prod(xs[:-2])
    views = [ctx.value(x, (bsz, m, 1, k)), ctx.value(y, (bsz, k, 1, n))]
    out = ctx.out((bsz, m, 1, n))
    t = ctx.target

    def shapes(nb: int) -> list[tuple[tuple[int, int, int, int], DType]]:
        return [((nb, m, 1, k), views[0].dtype), ((nb, k, 1, n), views[1].dtype), ((nb, m, 1, n), out.dtype),
                ((nb, m, 1, n), I32), ((nb, m, 1, 1), I32), ((nb, 1, 1, n), I32)]

    slices, double = plan_slices(bsz, 1, lambda nb, _r: sum(tile_bytes(t, s, d) for s, d in shapes(nb)), 0,
                                 t.local_mem_bytes, ctx.layer)
    sets = [[ctx.em.arena.tile(s, d) for s, d in shapes(slices[0][1] - slices[0][0])]
            for _ in range(2 if double else 1)]

    def tiles(i: int) -> list[LocalTensor]:
        b0, b1, _, _ = slices[i]
        return [LocalTensor(0, buf.addr, (b1 - b0,) + s[1:], d)
                for buf, (s, d) in zip(sets[i % len(sets)], shapes(b1 - b0))]

    def load(i: int) -> list[LocalTensor]:
        ts = tiles(i)
        for v, tile in zip(views, ts):
            ctx.em.load(sub_view(v, (slices[i][0], 0, 0, 0), tile.shape), tile, ctx.layer)
        return ts

    def comp(i: int, ts: list[LocalTensor]) -> LocalTensor:
        ta, tb, o, acc, ra, cb = ts
        if not a_zp and not b_zp and not f32_form:  # no zero-point terms: the requant is fused
            ctx.em.emit(isa.MatMul, ctx.layer, a=ta, b=tb, out=o,
                        **fused_requant(ctx, p, (int(p["multiplier"]),), (int(p["shift"]),)))
            return o
        ctx.em.emit(isa.MatMul, ctx.layer, a=ta, b=tb, out=acc)
        if b_zp:  # - b_zp * rowsum(a)
            ctx.em.emit(isa.Reduce, ctx.layer, op="sum", x=ta, out=ra, axes=(3,))
            ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=ra, scalar=float(b_zp), out=ra)
            ctx.em.emit(isa.Eltwise, ctx.layer, op="sub", a=acc, b=ra, out=acc)
        if a_zp:  # - a_zp * (colsum(b) - K * b_zp)
            ctx.em.emit(isa.Reduce, ctx.layer, op="sum", x=tb, out=cb, axes=(1,))
            if b_zp:
                ctx.em.emit(isa.Eltwise, ctx.layer, op="sub", a=cb, scalar=float(k * b_zp), out=cb)
            ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=cb, scalar=float(a_zp), out=cb)
            ctx.em.emit(isa.Eltwise, ctx.layer, op="sub", a=acc, b=cb, out=acc)
        if f32_form:
            dequant_out(ctx, acc, o, float(p["scale"]), p["lo"], p["hi"])
        else:
            requant_out(ctx, acc, o, (int(p["multiplier"]),), (int(p["shift"]),), out_zp, qmin, qmax)
        return o

    def store(i: int, o: LocalTensor) -> None:
        ctx.em.store(o, sub_view(out, (slices[i][0], 0, 0, 0), o.shape), ctx.layer)

    run_pipeline(len(slices), double, load, comp, store)


# ---- pools and reductions -----------------------------------------------------------------------------------

def gen_avg_pool2d_int8(ctx: OpCtx) -> None:
    """``tpu.avg_pool2d_int8``: without zero points one integer ``pool2d`` with the multiplier and shift;
    otherwise ``x - x_zp`` (int32) -> ``pool2d`` window sums (multiplier 1, shift 0) -> ``requant``.

    Tiled along N/H and, for long rows, W (``ops_conv.sliced_tiles`` with ``w_window``; the int32 tiles are part of each
    tile's bytes). The divisor ``k_h · k_w`` is folded into the multiplier (``count_include_pad``): a padded
    cell adds 0 to the window sum (``x - x_zp`` is padded with 0, as the reference pads ``x - x_zp``), so a
    tile padded only at the image border gives every window the sum of the whole tensor's window."""
    p = params(ctx)
    k, s, pad = tuple(p["kernel_size"]), tuple(p["stride"] or p["kernel_size"]), tuple(p["padding"])
    x_zp, out_zp, mult, shift = int(p["x_zp"]), int(p["out_zp"]), int(p["multiplier"]), int(p["shift"])
    plain = not x_zp and not out_zp
    geometry = dict(kernel=k, stride=s, count_include_pad=True)

    def emit(sl: SliceTiles) -> None:
        if plain:
            ctx.em.emit(isa.Pool2d, ctx.layer, mode="avg", x=sl.x, out=sl.out, pad=sl.pad, multiplier=mult,
                        shift=shift, **geometry)
            return
        x32, acc = sl.x_scratch[0], sl.out_scratch[0]
        ctx.em.emit(isa.Eltwise, ctx.layer, op="sub", a=sl.x, scalar=float(x_zp), out=x32)
        ctx.em.emit(isa.Pool2d, ctx.layer, mode="avg", x=x32, out=acc, pad=sl.pad, **geometry)
        requant_out(ctx, acc, sl.out, (mult,), (shift,), out_zp, -128, 127)

    scratch = () if plain else (I32,)
    sliced_tiles(ctx, ctx.value(p["x"]), ctx.out(), emit, kernel_h=k[0], stride_h=s[0], pad=pad,
                x_scratch=scratch, out_scratch=scratch, w_window=(k[1], s[1], 1))


def gen_reduce_sum_int8(ctx: OpCtx) -> None:
    """``tpu.reduce_sum_int8`` over any dims: int32 ``reduce sum`` (chunks of a reduction too big for local memory
    added exactly, ``ops_pool.reduce_tiled``) [- x_zp·n] -> ``requant``; the layout and tiling of the float
    reductions (``ops_pool.reduce_views``: more than 4 runs of reduced / kept dims transposed first)."""
    p = params(ctx)
    x4, axes, out4 = ops_pool.reduce_views(ctx)
    red = math.prod(x4.shape[a] for a in axes)
    if 255 * red >= INT32_LIMIT:
        raise _refuse(ctx, f"a sum over {red} elements could leave int32")
    x_zp, out_zp = int(p["x_zp"]), int(p["out_zp"])

    def finish(acc: LocalTensor, out: LocalTensor) -> None:
        if x_zp:
            ctx.em.emit(isa.Eltwise, ctx.layer, op="sub", a=acc, scalar=float(x_zp * red), out=acc)
        requant_out(ctx, acc, out, (int(p["multiplier"]),), (int(p["shift"]),), out_zp, -128, 127)

    ops_pool.reduce_tiled(ctx, x4, out4, axes, "sum", acc=I32, finish=finish)


# ---- element-wise ops ---------------------------------------------------------------------------------------

def gen_quantize_int8(ctx: OpCtx) -> None:
    """``tpu.quantize_int8`` -> ``cast`` (f32 division, half away from zero, + zero point) [-> ``clip``]."""
    p = params(ctx)
    qmin, qmax = _bounds(ctx, p)
    ins, out = ew._views(ctx, [p["x"]])

    def compute(x: list[LocalTensor], o: LocalTensor) -> None:
        ctx.em.emit(isa.Cast, ctx.layer, x=x[0], out=o, scale=float(p["scale"]), zero_point=int(p["zero_point"]),
                    round_mode="half_away_from_zero")
        clip(ctx, o, qmin, qmax)

    ew.sliced_map(ctx, ins, out, compute)


def gen_dequantize_int8(ctx: OpCtx) -> None:
    """``tpu.dequantize_int8`` -> ``cast`` ``(x - zero_point) · scale`` in f32, rounded once to the output."""
    p = params(ctx)
    ins, out = ew._views(ctx, [p["x"]])
    ew.sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Cast, ctx.layer, x=x[0], out=o,
                                                           scale=float(p["scale"]),
                                                           zero_point=int(p["zero_point"])))


def gen_requant_int8(ctx: OpCtx) -> None:
    """``tpu.requant_int8`` -> [``eltwise sub`` x_zp to int32] -> ``requant`` [-> ``clip``]."""
    p = params(ctx)
    qmin, qmax = _bounds(ctx, p)
    x_zp = int(p["x_zp"])
    ins, out = ew._views(ctx, [p["x"]])

    def compute(x: list[LocalTensor], o: LocalTensor) -> None:
        src = minus_zp(ctx, x[0], x_zp, x[1] if x_zp else None)
        requant_out(ctx, src, o, (int(p["multiplier"]),), (int(p["shift"]),), int(p["out_zp"]), qmin, qmax)

    ew.sliced_map(ctx, ins, out, compute, scratch=(I32,) if x_zp else ())


def gen_lut_int8(ctx: OpCtx) -> None:
    """``tpu.lut_int8`` -> ``lut`` with the 256-entry table loaded once."""
    x, table = ctx.node.args[:2]
    tv = ctx.weights.add((table.target, "lut"), ctx.const_tensor(table), (1, 1, 1, 256), DType.INT8)
    t_tile, nbytes = load_const(ctx, tv)
    ins, out = ew._views(ctx, [x])
    ew.sliced_map(ctx, ins, out, lambda xs, o: ctx.em.emit(isa.Lut, ctx.layer, x=xs[0], table=t_tile, out=o),
                  const_bytes=nbytes)


def load_interp_tables(ctx: OpCtx, base: fx.Node, slope: fx.Node) -> tuple[LocalTensor, LocalTensor, int]:
    """Load once the two int32 tables of an interpolated LUT, the base one stored as ``base + 128 · slope``
    (:func:`lut_interp_epilogue` interpolates from ``lo - 128``): (base tile, slope tile, per-lane bytes)."""
    sl = ctx.const_tensor(slope).to(torch.int64).reshape(256)
    b128 = derived(ctx, (base.target, slope.target, "base128"),
                   lambda: (ctx.const_tensor(base).to(torch.int64).reshape(256) + 128 * sl).to(torch.int32))
    b_tile, nb = load_const(ctx, ctx.weights.add((base.target, "lut_base128"), b128, (1, 1, 1, 256), I32))
    s_tile, ns = load_const(ctx, ctx.weights.add((slope.target, "lut_slope"), sl.to(torch.int32), (1, 1, 1, 256),
                                                 I32))
    return b_tile, s_tile, nb + ns


def lut_interp_epilogue(ctx: OpCtx, acc: LocalTensor, hi: LocalTensor, t1: LocalTensor, t2: LocalTensor,
                        out: LocalTensor, fine: tuple[tuple[int, ...], tuple[int, ...], int],
                        tables: tuple[LocalTensor, LocalTensor], p: dict[str, Any]) -> None:
    """``tpu.conv2d_lut_int8``'s steps after the MAC (``tpu_ops/int8_eltwise.py``), ``acc`` (int32) updated in place:

    1. ``v = clip(requant(acc, m[c], s[c]) + u_zp - 128, ±32767 - 128)``  (``v = u - 128``)
    2. ``hi = requant(v, 1, 8)`` to int8: ``round_half_away((u - 128) / 256) = floor(u / 256)``, except at a knot
       ``u = 256·j <= 0`` where it gives ``j - 1`` (then ``lo = 256``: the same value, ``256 t[j]``)
    3. ``lo - 128 = v - 256·hi``; ``acc = slope[hi] · (lo - 128) + (base[hi] + 128 · slope[hi])``
    4. ``out = clamp(requant(acc, 1, out_shift) + out_zp, qmin, qmax)``
    """
    multiplier, shift, u_zp = fine
    base128, slope = tables
    qmin, qmax = _bounds(ctx, p)
    fine_max = 32767
    ctx.em.emit(isa.Requant, ctx.layer, x=acc, out=acc, multiplier=multiplier, shift=shift, zero_point=u_zp - 128)
    ctx.em.emit(isa.Activation, ctx.layer, op="clip", x=acc, out=acc, lo=float(-fine_max - 128),
                hi=float(fine_max - 128))
    ctx.em.emit(isa.Requant, ctx.layer, x=acc, out=hi, multiplier=(1,), shift=(8,))
    ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=hi, scalar=-256.0, out=t1)
    ctx.em.emit(isa.Eltwise, ctx.layer, op="add", a=acc, b=t1, out=acc)
    ctx.em.emit(isa.Lut, ctx.layer, x=hi, table=slope, out=t2)
    ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=t2, b=acc, out=acc)
    ctx.em.emit(isa.Lut, ctx.layer, x=hi, table=base128, out=t1)
    ctx.em.emit(isa.Eltwise, ctx.layer, op="add", a=acc, b=t1, out=acc)
    requant_out(ctx, acc, out, (1,), (int(p["out_shift"]),), int(p["out_zp"]), qmin, qmax)


def gen_conv2d_lut_int8(ctx: OpCtx) -> None:
    """``tpu.conv2d_lut_int8`` -> per slice one ``conv2d`` into an int32 tile (padded with x_zp, zero-point-folded
    bias, as ``conv2d_int8``) and :func:`lut_interp_epilogue` (requant to the 16-bit grid, knot index by a
    second requant, two 256-entry int32 ``lut`` lookups, integer interpolation, requant to int8); the
    pre-activation never leaves local memory."""
    cv = ConvInt8.load(ctx)
    p = cv.p
    base128, slope, table_bytes = load_interp_tables(ctx, p["base"], p["slope"])
    fine = (*per_channel(ctx, p["multiplier"], p["shift"]), int(p["u_zp"]))

    def emit(sl: SliceTiles) -> None:
        acc, hi, t1, t2 = sl.out_scratch
        ctx.em.emit(isa.Conv2d, ctx.layer, x=sl.x, w=cv.w, bias=cv.bias, out=acc, pad=sl.pad, **cv.fields)
        lut_interp_epilogue(ctx, acc, hi, t1, t2, sl.out, fine, (base128, slope), p)

    cv.sliced(ctx, emit, table_bytes, (I32, DType.INT8, I32, I32))


def _rescaled_max(zp: int, multiplier: int, shift: int) -> int:
    """The largest ``|round_shift((q - zp) · m, s)|`` over int8 ``q`` (monotonic in ``|q - zp|``)."""
    v = max(abs(-128 - zp), abs(127 - zp)) * multiplier
    return (v + ((1 << shift) >> 1)) >> shift


def gen_add_sub_int8(ctx: OpCtx, op: str) -> None:
    """``tpu.add_int8`` / ``sub_int8``: one ``qadd`` per tile -- both inputs rescaled to the common scale, added
    or subtracted and requantized in one pass, with broadcasting loads. Refused when the chip's int32
    accumulator could not hold the rescaled inputs' sum (the TPU op computes it in int64)."""
    p = params(ctx)
    qmin, qmax = _bounds(ctx, p)
    sides = [(int(p[f"{s}_zp"]), int(p[f"{s}_multiplier"]), int(p[f"{s}_shift"])) for s in ("a", "b")]
    if sum(_rescaled_max(zp, m, s) for zp, m, s in sides) >= INT32_LIMIT:
        raise _refuse(ctx, "the inputs rescaled by {} / 2^{} and {} / 2^{} could sum past int32".format(
            sides[0][1], sides[0][2], sides[1][1], sides[1][2]))
    if any(abs(zp) >= isa.QADD_ZP_LIMIT for zp, _, _ in sides):
        raise _refuse(ctx, f"input zero points {sides[0][0]}, {sides[1][0]}: |zp| must be below {isa.QADD_ZP_LIMIT}")
    ins, out = ew._views(ctx, [p["a"], p["b"]])
    fields = dict(op=op, a_zp=sides[0][0], a_multiplier=sides[0][1], a_shift=sides[0][2], b_zp=sides[1][0],
                  b_multiplier=sides[1][1], b_shift=sides[1][2], multiplier=int(p["out_multiplier"]),
                  shift=int(p["out_shift"]), zero_point=int(p["out_zp"]), qmin=qmin, qmax=qmax)

    def compute(tiles: list[LocalTensor], o: LocalTensor) -> None:
        ctx.em.emit(isa.QAdd, ctx.layer, a=tiles[0], b=tiles[1], out=o, **fields)

    ew.sliced_map(ctx, ins, out, compute)


def gen_mul_int8(ctx: OpCtx) -> None:
    """``tpu.mul_int8`` -> [zero points subtracted to int32] ``eltwise mul`` (int32) -> ``requant`` [-> ``clip``]."""
    p = params(ctx)
    qmin, qmax = _bounds(ctx, p)
    a_zp, b_zp = int(p["a_zp"]), int(p["b_zp"])
    ins, out = ew._views(ctx, [p["a"], p["b"]])

    def compute(tiles: list[LocalTensor], o: LocalTensor) -> None:
        a, b, ta, tb = tiles
        xa, xb = minus_zp(ctx, a, a_zp, ta), minus_zp(ctx, b, b_zp, tb)
        ctx.em.emit(isa.Eltwise, ctx.layer, op="mul", a=xa, b=xb, out=ta)
        requant_out(ctx, ta, o, (int(p["multiplier"]),), (int(p["shift"]),), int(p["out_zp"]), qmin, qmax)

    ew.sliced_map(ctx, ins, out, compute, scratch=(I32, I32))


def gen_concat_int8(ctx: OpCtx) -> None:
    """``tpu.concat_int8``: each input into its block of the output -- nothing when its producer wrote it there
    in place (``DdrPlan.in_place``: an identity requant, ``ddr_plan._copied_inputs``), a ``dma_copy`` when its
    requant is the identity (``m = 2^s``, same zero point), else sliced [``eltwise sub``] -> ``requant``."""
    p = params(ctx)
    out_zp = int(p["out_zp"])
    rank = ctx.node.meta["val"].dim()
    if rank > 4:
        raise _refuse(ctx, "rank > 4")
    d = 4 - rank + int(p["dim"]) % rank
    out = ctx.out()
    pos = 0
    for x, m, s, zp in zip(p["xs"], p["multipliers"], p["shifts"], p["zero_points"]):
        xv = ctx.operand(x)
        start = [0, 0, 0, 0]
        start[d] = pos
        pos += xv.shape[d]
        block = sub_view(out, tuple(start), xv.shape)
        m, s, zp = int(m), int(s), int(zp)
        if ctx.plan.in_place(x, ctx.node):
            continue
        if m == 1 << s and zp == out_zp:
            ctx.em.emit(isa.DmaCopy, ctx.layer, src=xv, dst=block)
            continue

        def compute(tiles: list[LocalTensor], o: LocalTensor, m=m, s=s, zp=zp) -> None:
            src = minus_zp(ctx, tiles[0], zp, tiles[1] if zp else None)
            requant_out(ctx, src, o, (m,), (s,), out_zp, -128, 127)

        ctx.em.arena.reset()
        ew.sliced_map(ctx, [xv], block, compute, scratch=(I32,) if zp else ())


def register(reg: Callable[[str, Callable[[OpCtx], None]], None]) -> None:
    """Add every INT8 handler through the driver's ``reg(name, handler)`` (which refuses duplicates)."""
    reg("conv2d_int8", gen_conv2d_int8)
    reg("linear_int8", gen_linear_int8)
    reg("matmul_int8", gen_matmul_int8)
    reg("conv2d_int8_f32", gen_conv2d_int8)
    reg("linear_int8_f32", gen_linear_int8)
    reg("matmul_int8_f32", gen_matmul_int8)
    reg("max_pool2d_int8", functools.partial(ops_pool.gen_pool2d, mode="max"))
    reg("avg_pool2d_int8", gen_avg_pool2d_int8)
    reg("reduce_sum_int8", gen_reduce_sum_int8)
    reg("quantize_int8", gen_quantize_int8)
    reg("dequantize_int8", gen_dequantize_int8)
    reg("requant_int8", gen_requant_int8)
    reg("lut_int8", gen_lut_int8)
    reg("conv2d_lut_int8", gen_conv2d_lut_int8)
    reg("add_int8", functools.partial(gen_add_sub_int8, op="add"))
    reg("sub_int8", functools.partial(gen_add_sub_int8, op="sub"))
    reg("mul_int8", gen_mul_int8)
    reg("concat_int8", gen_concat_int8)

"""INT8 rules for element-wise ops: binary ``add/sub/mul`` of two tensors, ``cat``, and lookup tables.

* ``add/sub(a, b)`` of two tensors -> ``tpu.add_int8``/``sub_int8`` (a fused relu / relu6 / clip: the
  activation's grid and saturation bounds, as for conv): common scale ``s_c = s_y / 2^k``
  (``k = 8`` extra fraction bits, fewer if ``256 · (s_a + s_b) / s_y · 2^k`` would reach ``2^31``),
  ``a_m · 2^-a_s ≈ s_a / s_c``, ``b_m · 2^-b_s ≈ alpha · s_b / s_c``, ``out = 2^-k`` (``k = 8``: ``2^30 · 2^-38``);
* ``mul(a, b)`` -> ``tpu.mul_int8`` with ``m · 2^-s ≈ s_a · s_b / s_y``;
* ``cat`` -> ``tpu.concat_int8``: input ``i`` requantized by ``s_i / s_y`` (identity when equal);
* **lookup tables**: any element-wise op of ONE int8 activation ``x`` and constants (scalars, one-element
  tensors) -- sigmoid, silu, gelu, tanh, hardswish, hardsigmoid, exp, erf, log, sqrt, rsqrt, relu, leaky_relu,
  clamp/hardtanh, neg, abs, pow, ``x + c``, ``x * c``, ``x / c`` -- becomes ``tpu.lut_int8`` with
  ``table[q & 0xff] = clamp(round(f((q - zp_x) · s_x) / s_y) + zp_y, -128, 127)`` for ``q`` in [-128, 127],
  ``f`` evaluated in float64 by the TOP op itself (NaN -> the zero point).

Constant tensor operands with more than one element are quantized per tensor (``s = max|c| / 127``).

**Convolution + curved activation** (silu, sigmoid, hardswish, hardsigmoid, gelu, tanh after a 2-D conv,
:func:`~torch_tpu.quant.simulate.fusible_pair`) -> one ``tpu.conv2d_lut_int8`` (:func:`lower_conv_lut`): the
int32 accumulator goes onto a 16-bit grid ``u`` over the input interval ``[a, b]`` where the activation's int8
output changes (:func:`lut_domain`: the pre-activation's calibrated range widened :data:`LUT_HEADROOM` times,
its flat ends cut off), ``s_u = (b - a) / 65534``; a 257-knot table interpolates ``f`` between
``u = 256·k``. The separate form (conv requantized to an int8 pre-activation, then a 256-entry table) rounds
the input of the curve to ``T / 127``; this one to ``s_u``, with the interpolation error
``max|f''| · (256·s_u)^2 / 8`` (silu: ``(b - a)^2 / 2^19``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx

from torch_tpu.fixed_point import quantize, round_float
from torch_tpu.graph.names import stable_name
from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.qparams import QParams, multiplier, quantize_bias, quantize_weight, scalar_multiplier
from torch_tpu.lowering.registry import RuleTable, is_constant
from torch_tpu.lowering.rules.int8_mac import fused_bounds
from torch_tpu.tpu_ops.int8_eltwise import FINE_MAX

aten = torch.ops.aten

#: element-wise ops a lookup table can implement (one activation operand, the rest constants).
LUT_OPS = (
    aten.relu.default, aten.sigmoid.default, aten.silu.default, aten.tanh.default, aten.hardswish.default,
    aten.hardsigmoid.default, aten.exp.default, aten.erf.default, aten.log.default, aten.sqrt.default,
    aten.rsqrt.default, aten.neg.default, aten.abs.default, aten.gelu.default, aten.leaky_relu.default,
    aten.hardtanh.default, aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default,
    aten.pow.Tensor_Scalar, aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar, aten.div.Scalar, aten.rsub.Scalar,
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor,
)
BINARY = {aten.add.Tensor: "add", aten.sub.Tensor: "sub", aten.mul.Tensor: "mul"}


def _activations(node: fx.Node) -> list[fx.Node]:
    """Tensor operands that are not constants."""
    return [a for a in node.all_input_nodes if not is_constant(a)]


def lut_applicable(node: fx.Node) -> bool:
    """One float activation operand, constants of one element otherwise, output shaped like the operand."""
    acts = _activations(node)
    if len(acts) != 1 or not acts[0].meta["val"].dtype.is_floating_point:
        return False
    if any(is_constant(a) and a.meta["val"].numel() != 1 for a in node.all_input_nodes):
        return False
    if node.target == aten.div.Tensor and bind_params(node).get("rounding_mode") is not None:
        return False
    out = node.meta["val"]
    return out.dtype.is_floating_point and tuple(out.shape) == tuple(acts[0].meta["val"].shape)


def lut_table(ctx: LowerCtx) -> torch.Tensor:
    """The 256 int8 entries (ordered by ``q & 0xff``) of the op applied to every int8 value (module doc)."""
    (x,) = _activations(ctx.node)
    qx, qy = ctx.quant.of(x), ctx.quant.of(ctx.node)
    q = torch.cat([torch.arange(0, 128), torch.arange(-128, 0)]).to(torch.float64)
    grid = (q - qx.zero_point) * qx.scale

    def sub(n: fx.Node):
        return grid if n is x else ctx.const(n).to(torch.float64)

    args = fx.node.map_arg(ctx.node.args, sub)
    kwargs = fx.node.map_arg(ctx.node.kwargs, sub)
    with torch.no_grad():
        y = ctx.node.target(*args, **kwargs).to(torch.float64)
    y = torch.nan_to_num(y, nan=0.0, posinf=1e30, neginf=-1e30)
    return quantize(y, qy.scale, qy.zero_point, dtype=torch.int8)


def lower_lut(ctx: LowerCtx) -> fx.Node:
    """An element-wise op of one int8 activation -> ``tpu.lut_int8`` (table in the module doc)."""
    (x,) = _activations(ctx.node)
    return ctx.emit("lut_int8", ctx.operand(x), ctx.add_const(lut_table(ctx), "table"))


#: fraction bits of the interpolated table's knots (in output steps); ``out_shift = 8 + LUT_FRAC_BITS``
LUT_FRAC_BITS = 8
#: knots are clamped to +-this many output steps (beyond +-256 the int8 output saturates anyway); keeps
#: ``256 · t + slope · lo`` far inside int32
KNOT_LIMIT = 1024
#: the pre-activation's calibrated range ``[-M, M]`` (``M = max(|min|, |max|, T)``) is widened this many times
#: before the flat ends are cut: a sample beyond the calibrated range still meets the curve
LUT_HEADROOM = 2.0


def act_function(ctx: LowerCtx, act: fx.Node, x: fx.Node) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(grid)``: the TOP activation ``act`` applied to a float64 tensor in place of its operand ``x``."""
    def f(grid: torch.Tensor) -> torch.Tensor:
        def sub(n: fx.Node):
            return grid if n is x else ctx.const(n).to(torch.float64)
        with torch.no_grad():
            y = act.target(*fx.node.map_arg(act.args, sub), **fx.node.map_arg(act.kwargs, sub))
        return torch.nan_to_num(y.to(torch.float64), nan=0.0, posinf=1e30, neginf=-1e30)
    return f


def lut_domain(f: Callable[[torch.Tensor], torch.Tensor], qy: QParams, bound: float,
               points: int = 1 << 16) -> tuple[float, float]:
    """``[a, b]`` inside ``[-bound, bound]`` outside which ``f``'s int8 output code is constant (the code at
    the window's ends): the interval an interpolated table has to resolve, one sampling step wider on
    each side."""
    xs = torch.linspace(-bound, bound, points + 1, dtype=torch.float64)
    q = quantize(f(xs), qy.scale, qy.zero_point, dtype=torch.int8)
    change = (q[1:] != q[:-1]).nonzero().flatten()
    if change.numel() == 0:
        return -bound, bound
    step = 2.0 * bound / points
    return max(-bound, float(xs[int(change[0])]) - step), min(bound, float(xs[int(change[-1]) + 1]) + step)


def interp_table(f: Callable[[torch.Tensor], torch.Tensor], s_u: float, u_zp: int, s_y: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, slope)`` int32 tables of ``tpu.conv2d_lut_int8`` ordered by ``k & 0xff``: knots
    ``t[k] = clamp(round(f((256·k - u_zp) · s_u) / s_y · 2^F), ±KNOT_LIMIT · 2^F)`` for k in [-128, 128],
    ``base[k] = 256 · t[k]``, ``slope[k] = t[k+1] - t[k]``."""
    k = torch.arange(-128, 129, dtype=torch.float64)
    lim = KNOT_LIMIT * 2.0 ** LUT_FRAC_BITS
    t = round_float(f((256.0 * k - u_zp) * s_u) / s_y * 2.0 ** LUT_FRAC_BITS).clamp(-lim, lim).to(torch.int64)
    base, slope = 256 * t[:-1], t[1:] - t[:-1]
    order = torch.cat([torch.arange(128, 256), torch.arange(0, 128)])   # k = 0..127, then -128..-1
    return base[order].to(torch.int32), slope[order].to(torch.int32)


def lower_conv_lut(ctx: LowerCtx) -> fx.Node:
    """A 2-D ``convolution`` with a fused curved activation (``ctx.fused_act``) -> ``tpu.conv2d_lut_int8``
    (module doc). Always the int8 form: the driver's float-output MACs take only bound-like activations."""
    conv, act = ctx.node, ctx.fused_act
    p = ctx.params
    qx, qy = ctx.quant.of(ctx.arg("input")), ctx.quant.of(act)
    ctx.quant.of(conv)                 # a clear error when the table lacks the pre-activation
    entry = ctx.quant.table[stable_name(conv)]
    bound = LUT_HEADROOM * max(abs(entry.min), abs(entry.max), abs(entry.threshold), 1e-6)
    f = act_function(ctx, act, conv)
    a, b = lut_domain(f, qy, bound)
    s_u = max(b - a, 1e-12) / (2.0 * FINE_MAX)
    u_zp = -int(round_float(torch.tensor((a + b) / 2.0 / s_u, dtype=torch.float64)))
    wq, s_w = quantize_weight(ctx.const("weight"), axis=0)
    bias = None
    if p["bias"] is not None:
        bias = ctx.add_const(quantize_bias(ctx.const("bias"), qx.scale, s_w), "bias_int32")
    m, s = multiplier(qx.scale * s_w / s_u)
    base, slope = interp_table(f, s_u, u_zp, qy.scale)
    ph, pw = p["padding"]
    return ctx.emit("conv2d_lut_int8", ctx.operand("input"), ctx.add_const(wq, "weight_int8"), bias,
                    list(p["stride"]), [ph, ph, pw, pw], list(p["dilation"]), p["groups"],
                    ctx.add_const(m, "multiplier"), ctx.add_const(s, "shift"), qx.zero_point, u_zp,
                    ctx.add_const(base, "lut_base"), ctx.add_const(slope, "lut_slope"), 8 + LUT_FRAC_BITS,
                    qy.zero_point)


def binary_applicable(node: fx.Node) -> bool:
    """Two float tensor operands (a constant one with more than one element is quantized per tensor)."""
    p = bind_params(node)
    a, b = p.get("self"), p.get("other")
    return (isinstance(a, fx.Node) and isinstance(b, fx.Node) and node.meta["val"].dtype.is_floating_point
            and a.meta["val"].dtype.is_floating_point and b.meta["val"].dtype.is_floating_point
            and not (is_constant(a) and is_constant(b)))


def common_scale_bits(ratio_a: float, ratio_b: float, bits: int = 8) -> int:
    """Extra fraction bits ``k`` of the common scale ``s_y / 2^k``: 8, fewer when the two inputs rescaled by
    ``ratio · 2^k`` could sum past int32 (``256 · (ratio_a + ratio_b) · 2^k < 2^31``: the chip's ``qadd``
    holds the sum in an int32 accumulator)."""
    worst = 256.0 * max(ratio_a + ratio_b, 1e-30)
    while bits > 0 and worst * 2.0 ** bits >= 2.0 ** 31:
        bits -= 1
    return bits


def lower_binary(ctx: LowerCtx, op: str) -> fx.Node:
    """``add/sub/mul`` of two int8 tensors (module doc)."""
    a, b = ctx.arg("self"), ctx.arg("other")
    qy, qmin, qmax = fused_bounds(ctx)   # a fused relu / relu6 / clip: its grid and bounds
    qa, qb = ctx.quant.of(a), ctx.quant.of(b)
    xa, xb = ctx.operand(a), ctx.operand(b)
    if op == "mul":
        m, s = scalar_multiplier(qa.scale * qb.scale / qy.scale)
        return ctx.emit("mul_int8", xa, xb, m, s, qa.zero_point, qb.zero_point, qy.zero_point, qmin, qmax)
    alpha = float(ctx.params.get("alpha", 1) or 1)
    if alpha < 0:
        op, alpha = ("sub" if op == "add" else "add"), -alpha
    bits = common_scale_bits(qa.scale / qy.scale, alpha * qb.scale / qy.scale)
    s_c = qy.scale / 2.0 ** bits
    ma, sa = scalar_multiplier(qa.scale / s_c)
    mb, sb = scalar_multiplier(alpha * qb.scale / s_c)
    mo, so = scalar_multiplier(2.0 ** -bits)
    return ctx.emit(f"{op}_int8", xa, xb, ma, sa, mb, sb, mo, so, qa.zero_point, qb.zero_point, qy.zero_point,
                    qmin, qmax)


def lower_elementwise(ctx: LowerCtx) -> fx.Node:
    """``add/sub/mul/div.Tensor``: a lookup table when one operand is a scalar constant, else the binary op."""
    if lut_applicable(ctx.node):
        return lower_lut(ctx)
    return lower_binary(ctx, BINARY[ctx.node.target])


def elementwise_supported(node: fx.Node) -> bool:
    """A lookup-table form, or (add/sub/mul) two tensor operands."""
    return lut_applicable(node) or (node.target in BINARY and binary_applicable(node))


def cat_supported(node: fx.Node) -> bool:
    """Float operands."""
    return all(t.meta["val"].dtype.is_floating_point for t in node.all_input_nodes) and \
        node.meta["val"].dtype.is_floating_point


def lower_cat_int8(ctx: LowerCtx) -> fx.Node:
    """``cat(tensors, dim)`` -> ``tpu.concat_int8`` (each input requantized to the output scale)."""
    qy = ctx.quant.of(ctx.node)
    xs, ms, ss, zs = [], [], [], []
    for t in ctx.params["tensors"]:
        if t.meta["val"].numel() == 0:
            continue
        qt = ctx.quant.of(t)
        m, s = scalar_multiplier(qt.scale / qy.scale)
        xs.append(ctx.operand(t))
        ms.append(m)
        ss.append(s)
        zs.append(qt.zero_point)
    return ctx.emit("concat_int8", xs, int(ctx.params["dim"]) % ctx.val("out").dim(), ms, ss, zs, qy.zero_point)


def register(table: RuleTable) -> None:
    """Add this family's int8 rules to ``table`` (called once, from ``rules/__init__.py``)."""
    kw = {"precisions": ("int8",)}
    for op in LUT_OPS:
        if op in BINARY or op == aten.div.Tensor:
            table.register(op, lower_elementwise, extra_check=elementwise_supported,
                           reason="element-wise op without an int8 form (non-float or two constants)", **kw)
        else:
            table.register(op, lower_lut, extra_check=lut_applicable,
                           reason="element-wise op of more than one activation or of a non-float tensor", **kw)
    table.register(aten.cat.default, lower_cat_int8, extra_check=cat_supported, reason="non-float operands", **kw)

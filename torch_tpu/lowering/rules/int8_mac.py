"""INT8 rules for convolution and matrix products -> ``tpu.conv2d_int8`` / ``linear_int8`` / ``matmul_int8``.

Per output channel ``o`` (formulas in :mod:`torch_tpu.lowering.qparams`): ``W_q = round(W / s_w[o])`` with
``s_w[o] = max|W[o]| / 127``; ``b_q = round(b / (s_x · s_w[o]))`` (int32);
``m[o] · 2^-shift[o] ≈ s_x · s_w[o] / s_y``. ``s_y`` is the scale of the fused activation's output when
one is fused (``ctx.fused_act``), whose bounds become ``qmin``/``qmax``.

With ``ctx.float_out`` (every consumer reads the value in float, e.g. the graph output) the ops are the
float-output forms ``tpu.conv2d_int8_f32`` / ``linear_int8_f32`` / ``matmul_int8_f32``: the same int8
operands and int32 accumulator, then ``f32(acc) · scale[o]`` with ``scale[o] = f32(s_x · s_w[o])`` (matmul:
``s_a · s_b``) and the fused activation's bounds applied in float (:func:`float_bounds`); no output scale.
"""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.qparams import (QParams, act_bounds, f32, multiplier, quantize_bias, quantize_weight,
                                        scalar_multiplier)
from torch_tpu.lowering.registry import RuleTable
from torch_tpu.lowering.rules.conv import conv_supported
from torch_tpu.lowering.rules.matmul import addmm_supported

aten = torch.ops.aten
#: smallest scale of the float-output forms (the smallest normal f32)
MIN_SCALE = 2.0 ** -126


def fused_bounds(ctx: LowerCtx) -> tuple[QParams, int, int]:
    """``(output qparams, qmin, qmax)``: of the fused activation if any, else of the node itself."""
    act = ctx.fused_act
    if act is None:
        return ctx.quant.of(ctx.node), -128, 127
    qp = ctx.quant.of(act)
    p = bind_params(act)
    if act.target == aten.relu.default:
        return (qp, *act_bounds("relu", 0.0, 0.0, qp))
    if act.target == aten.hardtanh.default:
        lo, hi = float(p["min_val"]), float(p["max_val"])
    else:
        lo = -math.inf if p.get("min") is None else float(p["min"])
        hi = math.inf if p.get("max") is None else float(p["max"])
    return (qp, *act_bounds("clip", lo, hi, qp))


def float_bounds(ctx: LowerCtx) -> tuple[float | None, float | None]:
    """``(lo, hi)`` in real units of the fused relu / relu6 / clip (None: unbounded), for the float-output form."""
    act = ctx.fused_act
    if act is None:
        return None, None
    p = bind_params(act)
    if act.target == aten.relu.default:
        return 0.0, None
    if act.target == aten.hardtanh.default:
        return float(p["min_val"]), float(p["max_val"])
    return (None if p.get("min") is None else float(p["min"])), (None if p.get("max") is None else float(p["max"]))


def _f32_scale(ctx: LowerCtx, real: torch.Tensor) -> fx.Node:
    """The float-output form's per-channel ``scale`` constant: ``s_x · s_w[o]`` rounded once to f32 (at least
    the smallest normal f32, so a degenerate all-zero calibration never gives a zero scale)."""
    return ctx.add_const(real.to(torch.float64).clamp(min=MIN_SCALE).to(torch.float32).reshape(-1), "scale")


def _requant_consts(ctx: LowerCtx, real: torch.Tensor) -> tuple[fx.Node, fx.Node]:
    m, s = multiplier(real)
    return ctx.add_const(m, "multiplier"), ctx.add_const(s, "shift")


def int8_conv_supported(node: fx.Node) -> bool:
    """As the float rule: constant weights, not transposed, 1-D or 2-D; and a float input."""
    return conv_supported(node) and node.args[0].meta["val"].dtype.is_floating_point


def lower_convolution_int8(ctx: LowerCtx) -> fx.Node:
    """``convolution`` -> ``tpu.conv2d_int8`` (1-D convs as 2-D with H = 1)."""
    p = ctx.params
    w = ctx.const("weight")
    qx = ctx.quant.of(ctx.arg("input"))
    w4 = w if w.dim() == 4 else w.unsqueeze(2)
    wq, s_w = quantize_weight(w4, axis=0)
    bias = None
    if p["bias"] is not None:
        bias = ctx.add_const(quantize_bias(ctx.const("bias"), qx.scale, s_w), "bias_int32")
    wnode = ctx.add_const(wq, "weight_int8")
    if ctx.float_out:
        op, tail = "conv2d_int8_f32", (_f32_scale(ctx, qx.scale * s_w), qx.zero_point, *float_bounds(ctx))
    else:
        qy, qmin, qmax = fused_bounds(ctx)
        op, tail = "conv2d_int8", (*_requant_consts(ctx, qx.scale * s_w / qy.scale), qx.zero_point, qy.zero_point,
                                   qmin, qmax)
    x = ctx.operand("input")
    if w.dim() == 4:
        ph, pw = p["padding"]
        return ctx.emit(op, x, wnode, bias, list(p["stride"]), [ph, ph, pw, pw], list(p["dilation"]), p["groups"],
                        *tail)
    n, c, length = ctx.val("input").shape
    x4 = ctx.emit("reshape", x, [n, c, 1, length], suffix="as_2d")
    (pad,) = p["padding"]
    y4 = ctx.emit(op, x4, wnode, bias, [1, p["stride"][0]], [0, 0, pad, pad], [1, p["dilation"][0]], p["groups"],
                  *tail, suffix="conv2d")
    return ctx.emit("reshape", y4, list(ctx.val("out").shape))


def _float_operands(node: fx.Node) -> bool:
    return all(a.meta["val"].dtype.is_floating_point for a in node.all_input_nodes)


def _product(ctx: LowerCtx, a: str, b: str, bias: torch.Tensor | None) -> fx.Node:
    qx = ctx.quant.of(ctx.arg(a))
    wb = ctx.const(b)
    x = ctx.operand(a)
    if wb is not None and wb.dim() == 2:
        wq, s_w = quantize_weight(wb.t(), axis=0)            # [N, K], per output feature
        bnode = None if bias is None else ctx.add_const(quantize_bias(bias, qx.scale, s_w), "bias_int32")
        wnode = ctx.add_const(wq, "weight_int8")
        if ctx.float_out:
            return ctx.emit("linear_int8_f32", x, wnode, bnode, _f32_scale(ctx, qx.scale * s_w), qx.zero_point,
                            *float_bounds(ctx))
        qy, qmin, qmax = fused_bounds(ctx)
        m, s = _requant_consts(ctx, qx.scale * s_w / qy.scale)
        return ctx.emit("linear_int8", x, wnode, bnode, m, s, qx.zero_point, qy.zero_point, qmin, qmax)
    qb = ctx.quant.of(ctx.arg(b))
    if ctx.float_out:
        scale = f32(max(qx.scale * qb.scale, MIN_SCALE))
        return ctx.emit("matmul_int8_f32", x, ctx.operand(b), scale, qx.zero_point, qb.zero_point, *float_bounds(ctx))
    qy, qmin, qmax = fused_bounds(ctx)
    m, s = scalar_multiplier(qx.scale * qb.scale / qy.scale)
    return ctx.emit("matmul_int8", x, ctx.operand(b), m, s, qx.zero_point, qb.zero_point, qy.zero_point, qmin, qmax)


def int8_addmm_supported(node: fx.Node) -> bool:
    """``beta == alpha == 1``, a constant 2-D weight and a constant bias of N elements (or none)."""
    p = bind_params(node)
    if not (addmm_supported(node) and _float_operands(node) and p["mat2"].op == "get_attr"):
        return False
    bias = p["self"]
    n = node.meta["val"].shape[-1]
    return bias.op == "get_attr" and bias.meta["val"].numel() == n


def lower_addmm_int8(ctx: LowerCtx) -> fx.Node:
    """``addmm(b, x, W) = b + x @ W`` -> ``tpu.linear_int8``."""
    n = ctx.val("out").shape[-1]
    return _product(ctx, "mat1", "mat2", ctx.const("self").reshape(n))


def lower_mm_int8(ctx: LowerCtx) -> fx.Node:
    """``mm``/``bmm``/``matmul``: constant right operand -> ``linear_int8``, else ``matmul_int8``."""
    keys = list(ctx.params)
    return _product(ctx, keys[0], keys[1], None)


def mm_supported(node: fx.Node) -> bool:
    """Float operands (a computed right operand uses the batched int8 matmul)."""
    return _float_operands(node)


def register(table: RuleTable) -> None:
    """Add this family's int8 rules to ``table`` (called once, from ``rules/__init__.py``)."""
    kw = {"precisions": ("int8",)}
    table.register(aten.convolution.default, lower_convolution_int8, extra_check=int8_conv_supported,
                   reason="only non-transposed 1-D/2-D convolutions with constant weight and bias", **kw)
    table.register(aten.addmm.default, lower_addmm_int8, extra_check=int8_addmm_supported,
                   reason="addmm needs a constant weight and bias and alpha = beta = 1", **kw)
    for op in (aten.mm.default, aten.bmm.default, aten.matmul.default):
        table.register(op, lower_mm_int8, extra_check=mm_supported, reason="non-float operands", **kw)

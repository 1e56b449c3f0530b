"""Unary activations and math: one generic rule (``lower_unary``) serves the whole table via ``partial``;
``hardtanh``/``clamp`` become ``tpu.clip``, ``gelu``/``leaky_relu``/``pow`` carry their parameter.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.registry import RuleTable

aten = torch.ops.aten

#: TOP op -> parameterless tpu op.
UNARY = {
    aten.relu.default: "relu", aten.sigmoid.default: "sigmoid", aten.silu.default: "silu",
    aten.tanh.default: "tanh", aten.hardswish.default: "hardswish", aten.hardsigmoid.default: "hardsigmoid",
    aten.exp.default: "exp", aten.erf.default: "erf", aten.log.default: "log", aten.sqrt.default: "sqrt",
    aten.rsqrt.default: "rsqrt", aten.neg.default: "neg", aten.abs.default: "abs",
}


def lower_unary(ctx: LowerCtx, op: str) -> fx.Node:
    """``aten.<f>(x)`` -> ``tpu.<f>(x)``."""
    return ctx.emit(op, ctx.operand(0))


def lower_gelu(ctx: LowerCtx) -> fx.Node:
    """``gelu(x, approximate)`` (``none`` = erf form, ``tanh``)."""
    return ctx.emit("gelu", ctx.operand("self"), ctx.params["approximate"])


def lower_leaky_relu(ctx: LowerCtx) -> fx.Node:
    """``leaky_relu(x, negative_slope)``."""
    return ctx.emit("leaky_relu", ctx.operand("self"), float(ctx.params["negative_slope"]))


def lower_hardtanh(ctx: LowerCtx) -> fx.Node:
    """``hardtanh(x, min_val, max_val)`` (ReLU6 from torchvision) -> ``tpu.clip``."""
    return ctx.emit("clip", ctx.operand("self"), float(ctx.params["min_val"]), float(ctx.params["max_val"]))


def lower_clamp(ctx: LowerCtx) -> fx.Node:
    """``clamp(x, min, max)`` with missing bounds as -inf / +inf -> ``tpu.clip``."""
    lo, hi = ctx.params.get("min"), ctx.params.get("max")
    return ctx.emit("clip", ctx.operand("self"), -math.inf if lo is None else float(lo),
                    math.inf if hi is None else float(hi))


def lower_clamp_min(ctx: LowerCtx) -> fx.Node:
    """``clamp_min(x, min)`` -> ``tpu.clip(x, min, inf)``."""
    return ctx.emit("clip", ctx.operand("self"), float(ctx.params["min"]), math.inf)


def lower_clamp_max(ctx: LowerCtx) -> fx.Node:
    """``clamp_max(x, max)`` -> ``tpu.clip(x, -inf, max)``."""
    return ctx.emit("clip", ctx.operand("self"), -math.inf, float(ctx.params["max"]))


def float_only(node: fx.Node) -> bool:
    """The activation applies to a float tensor."""
    return node.args[0].meta["val"].dtype.is_floating_point


def clamp_supported(node: fx.Node) -> bool:
    """Float input and Python-number bounds."""
    p = bind_params(node)
    return float_only(node) and not isinstance(p.get("min"), fx.Node) and not isinstance(p.get("max"), fx.Node)


def lower_pow(ctx: LowerCtx) -> fx.Node:
    """``pow(x, c)`` with a constant exponent."""
    return ctx.emit("pow", ctx.operand("self"), float(ctx.params["exponent"]))


def register(table: RuleTable) -> None:
    """Add this family's rules to ``table`` (called once, from ``rules/__init__.py``)."""
    reason = "activation of a non-float tensor"
    for op, name in UNARY.items():
        table.register(op, functools.partial(lower_unary, op=name), extra_check=float_only, reason=reason)
    table.register(aten.gelu.default, lower_gelu, extra_check=float_only, reason=reason)
    table.register(aten.leaky_relu.default, lower_leaky_relu, extra_check=float_only, reason=reason)
    table.register(aten.hardtanh.default, lower_hardtanh, extra_check=float_only, reason=reason)
    table.register(aten.clamp.default, lower_clamp, extra_check=clamp_supported,
                   reason="clamp of a non-float tensor or with tensor bounds")
    table.register(aten.clamp_min.default, lower_clamp_min, extra_check=float_only, reason=reason)
    table.register(aten.clamp_max.default, lower_clamp_max, extra_check=float_only, reason=reason)
    table.register(aten.pow.Tensor_Scalar, lower_pow, extra_check=float_only, reason=reason)

"""Normalisations: ``_softmax``, ``_log_softmax``, ``native_layer_norm`` and inference batch norm.

``_native_batch_norm_legit_no_training`` (the raw captured BatchNorm) becomes one ``tpu.scale_shift`` with
constants computed in f64 and stored in the precision's dtype::

    s = gamma / sqrt(running_var + eps),   t = beta - running_mean * s,   y = x * s + t

``compute_dtype`` lets a target override compute softmax/layernorm in f32 in a low precision
(``functools.partial(lower_softmax, compute_dtype=torch.float32)`` in its override table): the operand is
cast to f32 and the f32 result is cast back where it is used.
"""

from __future__ import annotations

import functools

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.registry import RuleTable, is_constant, only_first_output_used

aten = torch.ops.aten


def lower_softmax(ctx: LowerCtx, compute_dtype: torch.dtype | None = None, op: str = "softmax") -> fx.Node:
    """``_softmax(x, dim, half_to_float=False)`` -> ``tpu.softmax`` (or ``log_softmax``)."""
    return ctx.emit(op, ctx.operand("self", compute_dtype), int(ctx.params["dim"]))


def softmax_supported(node: fx.Node) -> bool:
    """No half-to-float output."""
    return not bind_params(node)["half_to_float"]


def layer_norm_supported(node: fx.Node) -> bool:
    """Only the normalized output is used; weight/bias constant or absent."""
    p = bind_params(node)
    return only_first_output_used(node) and all(p[k] is None or is_constant(p[k]) for k in ("weight", "bias"))


def lower_layer_norm(ctx: LowerCtx, compute_dtype: torch.dtype | None = None) -> tuple:
    """``native_layer_norm(x, shape, w, b, eps)`` -> ``(tpu.layer_norm, None, None)``."""
    p = ctx.params
    dtype = compute_dtype or ctx.dtype
    w = None if p["weight"] is None else ctx.operand("weight", dtype)
    b = None if p["bias"] is None else ctx.operand("bias", dtype)
    y = ctx.emit("layer_norm", ctx.operand("input", dtype), w, b, len(p["normalized_shape"]), float(p["eps"]))
    return (y, None, None)


def batch_norm_supported(node: fx.Node) -> bool:
    """Constant statistics and affine parameters; only the output is used; channel dim 1."""
    p = bind_params(node)
    return (only_first_output_used(node) and is_constant(p["running_mean"]) and is_constant(p["running_var"])
            and all(p[k] is None or is_constant(p[k]) for k in ("weight", "bias")))


def lower_batch_norm(ctx: LowerCtx) -> tuple:
    """Inference batch norm -> ``(tpu.scale_shift(x, s, t, 1), None, None)`` (formula in the module doc)."""
    p = ctx.params
    mean = ctx.const("running_mean").double()
    var = ctx.const("running_var").double()
    gamma = ctx.const("weight").double() if p["weight"] is not None else torch.ones_like(mean)
    beta = ctx.const("bias").double() if p["bias"] is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + float(p["eps"]))
    t = beta - mean * s
    scale = ctx.add_const(ctx.to_storage(s.float()), "scale")
    shift = ctx.add_const(ctx.to_storage(t.float()), "shift")
    return (ctx.emit("scale_shift", ctx.operand("input"), scale, shift, 1), None, None)


def register(table: RuleTable) -> None:
    """Add this family's rules to ``table`` (called once, from ``rules/__init__.py``)."""
    table.register(aten._softmax.default, lower_softmax, extra_check=softmax_supported,
                   reason="softmax with half_to_float")
    table.register(aten._log_softmax.default, functools.partial(lower_softmax, op="log_softmax"),
                   extra_check=softmax_supported, reason="log_softmax with half_to_float")
    table.register(aten.native_layer_norm.default, lower_layer_norm, extra_check=layer_norm_supported,
                   reason="layer norm whose mean/rstd are used, or with computed weight/bias")
    table.register(aten._native_batch_norm_legit_no_training.default, lower_batch_norm,
                   extra_check=batch_norm_supported,
                   reason="batch norm with computed statistics, or whose saved statistics are used")

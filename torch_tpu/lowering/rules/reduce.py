"""Reductions: ``mean``/``sum`` (``.dim`` and full), ``amax``/``amin``, ``max.dim`` (values only), ``any``."""

from __future__ import annotations

import functools

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.registry import RuleTable, only_first_output_used

aten = torch.ops.aten


def _dims(ctx: LowerCtx, key: str = "dim") -> list[int]:
    d = ctx.params.get(key)
    rank = ctx.val("self").dim()
    if d is None or (isinstance(d, (list, tuple)) and len(d) == 0):
        return list(range(rank))
    return [int(x) % rank for x in (d if isinstance(d, (list, tuple)) else [d])]


def lower_reduce(ctx: LowerCtx, mode: str) -> fx.Node:
    """``aten.<mode>(x, dims, keepdim)`` -> ``tpu.reduce_<mode>``."""
    return ctx.emit(f"reduce_{mode}", ctx.operand("self"), _dims(ctx), bool(ctx.params.get("keepdim") or False))


def lower_max_dim(ctx: LowerCtx) -> tuple:
    """``max.dim`` -> ``(tpu.reduce_max, None)`` (the argmax has no TPU value)."""
    return (ctx.emit("reduce_max", ctx.operand("self"), _dims(ctx), bool(ctx.params["keepdim"])), None)


def lower_any(ctx: LowerCtx) -> fx.Node:
    """``any(mask, dims, keepdim)`` -> ``tpu.reduce_any`` (non-bool input cast to bool first)."""
    x = ctx.builder.value(ctx.arg("self"), torch.bool)
    return ctx.emit("reduce_any", x, _dims(ctx), bool(ctx.params.get("keepdim") or False))


def float_reduce(node: fx.Node) -> bool:
    """Float input, no dtype change requested."""
    p = bind_params(node)
    return node.args[0].meta["val"].dtype.is_floating_point and p.get("dtype") is None


def max_dim_supported(node: fx.Node) -> bool:
    """Float input and only the values used."""
    return float_reduce(node) and only_first_output_used(node)


def register(table: RuleTable) -> None:
    """Add this family's rules to ``table`` (called once, from ``rules/__init__.py``)."""
    reason = "reduction of a non-float tensor or with a dtype change"
    for op, mode in ((aten.mean.dim, "mean"), (aten.mean.default, "mean"), (aten.sum.dim_IntList, "sum"),
                     (aten.sum.default, "sum"), (aten.amax.default, "max"), (aten.amin.default, "min")):
        table.register(op, functools.partial(lower_reduce, mode=mode), extra_check=float_reduce, reason=reason)
    table.register(aten.max.dim, lower_max_dim,
                   extra_check=max_dim_supported,
                   reason="max.dim whose indices are used")
    table.register(aten.any.dim, lower_any)
    table.register(aten.any.dims, lower_any)
    table.register(aten.any.default, lower_any)

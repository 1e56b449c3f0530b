"""Element-wise binary ops, comparisons, logic, ``where`` and ``full_like``.

One generic rule serves each kind through ``functools.partial``:

* ``add/sub/mul/div/maximum/minimum`` (``.Tensor`` and ``.Scalar``, ``rsub``): a Python number or a
  one-element constant operand becomes ``tpu.<op>_const(x, c, reverse)``; otherwise ``tpu.<op>(a, b)``
  with both operands in the output's storage dtype. ``alpha`` != 1 scales the second operand.
* ``eq/ne/lt/le/gt/ge``: the same with a bool result, operands in their common storage dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.registry import RuleTable

aten = torch.ops.aten

_ARITH_TENSOR = {
    aten.add.Tensor: "add", aten.sub.Tensor: "sub", aten.mul.Tensor: "mul", aten.div.Tensor: "div",
    aten.maximum.default: "maximum", aten.minimum.default: "minimum",
}
_ARITH_SCALAR = {aten.add.Scalar: "add", aten.sub.Scalar: "sub", aten.mul.Scalar: "mul", aten.div.Scalar: "div"}
_COMPARE = {
    **{getattr(aten, c).Tensor: c for c in ("eq", "ne", "lt", "le", "gt", "ge")},
    **{getattr(aten, c).Scalar: c for c in ("eq", "ne", "lt", "le", "gt", "ge")},
}


def _scalar_of(ctx: LowerCtx, a: Any) -> float | None:
    """The value of a Python number or a one-element constant operand, else None."""
    if isinstance(a, (int, float, bool)):
        return float(a)
    if isinstance(a, fx.Node):
        c = ctx.const(a)
        if c is not None and c.numel() == 1 and c.dim() <= ctx.val("out").dim() and \
                c.dtype.is_floating_point == ctx.val("out").dtype.is_floating_point:
            return float(c.reshape(()).item())
    return None


def _binary(ctx: LowerCtx, op: str, a: Any, b: Any, dtype: torch.dtype, alpha: float = 1.0) -> fx.Node:
    sa, sb = _scalar_of(ctx, a), _scalar_of(ctx, b)
    if sb is not None and isinstance(a, fx.Node):
        return ctx.emit(f"{op}_const", ctx.builder.value(a, dtype), sb * alpha)
    if sa is not None and isinstance(b, fx.Node):
        xb = ctx.builder.value(b, dtype)
        if alpha != 1.0:
            xb = ctx.emit("mul_const", xb, alpha, suffix="alpha")
        return ctx.emit(f"{op}_const", xb, sa, reverse=True)
    xa, xb = ctx.builder.value(a, dtype), ctx.builder.value(b, dtype)
    if alpha != 1.0:
        xb = ctx.emit("mul_const", xb, alpha, suffix="alpha")
    return ctx.emit(op, xa, xb)


def _dtype_of(a: Any) -> torch.dtype:
    return a.meta["val"].dtype if isinstance(a, fx.Node) else torch.float32


def lower_arith(ctx: LowerCtx, op: str) -> fx.Node:
    """``aten.<op>(self, other[, alpha])`` -> ``tpu.<op>`` / ``tpu.<op>_const``."""
    alpha = float(ctx.params.get("alpha", 1) or 1)
    return _binary(ctx, op, ctx.arg("self"), ctx.arg("other"), ctx.storage_dtype(ctx.val("out").dtype), alpha)


def lower_rsub(ctx: LowerCtx) -> fx.Node:
    """``rsub(self, other, alpha) = other - alpha * self``."""
    alpha = float(ctx.params.get("alpha", 1) or 1)
    x = ctx.operand("self")
    if alpha != 1.0:
        x = ctx.emit("mul_const", x, alpha, suffix="alpha")
    return ctx.emit("sub_const", x, float(ctx.arg("other")), reverse=True)


def lower_compare(ctx: LowerCtx, op: str) -> fx.Node:
    """``aten.<cmp>(self, other)`` -> bool ``tpu.<cmp>`` / ``tpu.<cmp>_const``."""
    a, b = ctx.arg("self"), ctx.arg("other")
    common = torch.promote_types(_dtype_of(a), _dtype_of(b)) if isinstance(b, fx.Node) else _dtype_of(a)
    return _binary(ctx, op, a, b, ctx.storage_dtype(common))


def div_supported(node: fx.Node) -> bool:
    """True division only (no rounding mode)."""
    return bind_params(node).get("rounding_mode") is None


def lower_logical(ctx: LowerCtx, op: str) -> fx.Node:
    """``logical_not/and/or`` on bool masks (other dtypes are first cast to bool)."""
    ins = [ctx.builder.value(ctx.arg(k), torch.bool) for k in ("self", "other") if k in ctx.params]
    return ctx.emit(op, *ins)


def bool_operands(node: fx.Node) -> bool:
    """``bitwise_*`` on bool masks (the logical ops)."""
    return all(a.meta["val"].dtype == torch.bool for a in node.all_input_nodes)


def lower_where(ctx: LowerCtx) -> fx.Node:
    """``where(cond, a, b)`` -> ``tpu.where`` (a, b in the output's storage dtype)."""
    dtype = ctx.storage_dtype(ctx.val("out").dtype)
    cond = ctx.builder.value(ctx.arg("condition"), torch.bool)
    return ctx.emit("where", cond, ctx.builder.value(ctx.arg("self"), dtype),
                    ctx.builder.value(ctx.arg("other"), dtype))


def lower_full(ctx: LowerCtx) -> fx.Node:
    """``full_like(x, v)`` / ``full(size, v)`` -> ``tpu.full`` of the output's shape."""
    out = ctx.val("out")
    return ctx.emit("full", list(out.shape), float(ctx.arg("fill_value")), ctx.storage_dtype(out.dtype))


def register(table: RuleTable) -> None:
    """Add this family's rules to ``table`` (called once, from ``rules/__init__.py``)."""
    for op, name in _ARITH_TENSOR.items():
        check = div_supported if name == "div" else None
        table.register(op, functools.partial(lower_arith, op=name), extra_check=check,
                       reason="division with a rounding mode")
    for op, name in _ARITH_SCALAR.items():
        table.register(op, functools.partial(lower_arith, op=name))
    table.register(aten.div.Tensor_mode, functools.partial(lower_arith, op="div"), extra_check=div_supported,
                   reason="division with a rounding mode")
    table.register(aten.rsub.Scalar, lower_rsub)
    for op, name in _COMPARE.items():
        table.register(op, functools.partial(lower_compare, op=name))
    table.register(aten.logical_not.default, functools.partial(lower_logical, op="logical_not"))
    table.register(aten.logical_and.default, functools.partial(lower_logical, op="logical_and"))
    table.register(aten.logical_or.default, functools.partial(lower_logical, op="logical_or"))
    for op, name in ((aten.bitwise_not.default, "logical_not"), (aten.bitwise_and.Tensor, "logical_and"),
                     (aten.bitwise_or.Tensor, "logical_or")):
        table.register(op, functools.partial(lower_logical, op=name), extra_check=bool_operands,
                       reason="bitwise op on integers")
    table.register(aten.where.self, lower_where)
    table.register(aten.full_like.default, lower_full)
    table.register(aten.full.default, lower_full)

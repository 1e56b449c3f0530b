"""Element-wise binary ops with numpy broadcasting, their scalar-constant forms, comparisons, logic and
``where``.

Semantics::

    tpu.<op>(a, b)                    y = round(f(f32(a), f32(b)))           a, b same dtype, broadcast
    tpu.<op>_const(x, c, reverse)     y = round(f(f32(x), f32(c)))  or  round(f(f32(c), f32(x))) if reverse
    f in add: a + b | sub: a - b | mul: a * b | div: a / b (IEEE) | maximum | minimum (NaN propagates)
    tpu.<cmp>(a, b) / <cmp>_const     bool mask, compared in f32 (exact for bf16/f16 inputs)
    tpu.logical_not / _and / _or      on bool masks
    tpu.where(cond, a, b)             y = cond ? a : b  (a, b same dtype; exact selection, no rounding)

The constant ``c`` is a Python float rounded to f32. Integer operands are computed exactly in their own
dtype (index arithmetic).
"""

from __future__ import annotations

from typing import Callable

import torch

from torch_tpu.tpu_ops._common import OpDef, broadcast_shape, finish, up

#: name -> f32 formula of the arithmetic binary ops.
ARITH: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
}

#: name -> comparison (result bool).
COMPARE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
}


def _const_tensor(x: torch.Tensor, value: float) -> torch.Tensor:
    xf = up(x)
    return torch.tensor(value, dtype=xf.dtype, device=x.device)


def _make_binary(name: str, fn: Callable, out_bool: bool) -> OpDef:
    def impl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = fn(up(a), up(b))
        return y if out_bool else finish(y, a.dtype, a, b)

    def fake(a, b):
        return a.new_empty(broadcast_shape(a.shape, b.shape), dtype=torch.bool if out_bool else a.dtype)

    impl.__name__ = name
    impl.__doc__ = f"Element-wise ``{name}`` with broadcasting (formula in the module docstring)."
    return OpDef(name, impl, fake)


def _make_binary_const(name: str, fn: Callable, out_bool: bool) -> OpDef:
    def impl(x: torch.Tensor, value: float, reverse: bool = False) -> torch.Tensor:
        c = _const_tensor(x, value)
        y = fn(c, up(x)) if reverse else fn(up(x), c)
        return y if out_bool else finish(y, x.dtype, x)

    def fake(x, value, reverse=False):
        return x.new_empty(x.shape, dtype=torch.bool if out_bool else x.dtype)

    impl.__name__ = f"{name}_const"
    impl.__doc__ = f"``{name}`` of a tensor and an f32 constant (``reverse``: constant first)."
    return OpDef(f"{name}_const", impl, fake)


def logical_not(x: torch.Tensor) -> torch.Tensor:
    """``y = not x`` on a bool mask."""
    return torch.logical_not(x)


def logical_and(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``y = a and b`` on bool masks, broadcast."""
    return torch.logical_and(a, b)


def logical_or(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``y = a or b`` on bool masks, broadcast."""
    return torch.logical_or(a, b)


def _logic_fake(a, b=None):
    shape = a.shape if b is None else broadcast_shape(a.shape, b.shape)
    return a.new_empty(shape, dtype=torch.bool)


def where(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``y = cond ? a : b`` with broadcasting; ``a`` and ``b`` share a dtype, selection is exact."""
    return torch.where(cond, a, b)


def _where_fake(cond, a, b):
    return a.new_empty(broadcast_shape(cond.shape, a.shape, b.shape))


OPS = (
    *(_make_binary(n, f, False) for n, f in ARITH.items()),
    *(_make_binary_const(n, f, False) for n, f in ARITH.items()),
    *(_make_binary(n, f, True) for n, f in COMPARE.items()),
    *(_make_binary_const(n, f, True) for n, f in COMPARE.items()),
    OpDef("logical_not", logical_not, _logic_fake),
    OpDef("logical_and", logical_and, _logic_fake),
    OpDef("logical_or", logical_or, _logic_fake),
    OpDef("where", where, _where_fake),
)

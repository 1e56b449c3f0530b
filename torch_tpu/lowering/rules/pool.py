"""Pooling: ``max_pool2d_with_indices`` (values only), ``avg_pool2d``, ``_adaptive_avg_pool2d``.

Symmetric ATen padding ``[ph, pw]`` becomes the explicit ``[ph, ph, pw, pw]``; an empty stride means the
kernel size.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx
from torch_tpu.lowering.registry import RuleTable, only_first_output_used

aten = torch.ops.aten


def _pair(v, default: list[int]) -> list[int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return list(default)
    if isinstance(v, int):
        return [v, v]
    return [int(v[0]), int(v[0])] if len(v) == 1 else [int(v[0]), int(v[1])]


def _four(padding) -> list[int]:
    ph, pw = _pair(padding, [0, 0])
    return [ph, ph, pw, pw]


def max_pool_supported(node: fx.Node) -> bool:
    """Only the pooled values are used (not the indices), NCHW input."""
    return only_first_output_used(node) and node.args[0].meta["val"].dim() == 4


def lower_max_pool2d_with_indices(ctx: LowerCtx) -> tuple:
    """-> ``(tpu.max_pool2d(...), None)``: the indices have no TPU value."""
    p = ctx.params
    k = _pair(p["kernel_size"], [1, 1])
    y = ctx.emit("max_pool2d", ctx.operand("self"), k, _pair(p["stride"], k), _four(p["padding"]),
                 _pair(p["dilation"], [1, 1]), bool(p["ceil_mode"]))
    return (y, None)


def avg_pool_supported(node: fx.Node) -> bool:
    """NCHW input."""
    return node.args[0].meta["val"].dim() == 4


def lower_avg_pool2d(ctx: LowerCtx) -> fx.Node:
    """``avg_pool2d(x, k, stride, padding, ceil_mode, count_include_pad, divisor_override)``."""
    p = ctx.params
    k = _pair(p["kernel_size"], [1, 1])
    return ctx.emit("avg_pool2d", ctx.operand("self"), k, _pair(p["stride"], k), _four(p["padding"]),
                    bool(p["ceil_mode"]), bool(p["count_include_pad"]), int(p["divisor_override"] or 0))


def lower_adaptive_avg_pool2d(ctx: LowerCtx) -> fx.Node:
    """``_adaptive_avg_pool2d(x, output_size)``."""
    return ctx.emit("adaptive_avg_pool2d", ctx.operand("self"), list(ctx.val("out").shape[-2:]))


def register(table: RuleTable) -> None:
    """Add this family's rules to ``table`` (called once, from ``rules/__init__.py``)."""
    table.register(aten.max_pool2d_with_indices.default, lower_max_pool2d_with_indices,
                   extra_check=max_pool_supported, reason="the max-pool indices are used, or not NCHW")
    table.register(aten.avg_pool2d.default, lower_avg_pool2d, extra_check=avg_pool_supported,
                   reason="only NCHW input")
    table.register(aten._adaptive_avg_pool2d.default, lower_adaptive_avg_pool2d, extra_check=avg_pool_supported,
                   reason="only NCHW input")

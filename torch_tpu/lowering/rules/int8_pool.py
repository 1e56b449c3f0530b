"""INT8 rules for pooling and reductions, and range-preserving data movement.

* ``max_pool2d_with_indices`` (values only) -> ``tpu.max_pool2d_int8``; the output keeps the input's qparams.
* ``avg_pool2d`` with a constant divisor (``count_include_pad`` or no padding, no ``ceil_mode``, no
  ``divisor_override``) -> ``tpu.avg_pool2d_int8`` with ``m · 2^-s ≈ s_x / (k_h · k_w · s_y)``.
* ``_adaptive_avg_pool2d`` to 1x1, or with an output size dividing the input -> the same, as a window
  sum over ``H/OH x W/OW`` (1x1: ``tpu.reduce_sum_int8`` over H, W).
* ``mean``/``sum`` over dims -> ``tpu.reduce_sum_int8`` with ``m · 2^-s ≈ s_x / (n · s_y)`` (``n`` = 1 for sum).
* view/reshape/squeeze/unsqueeze/permute/expand/slice/select/split/clone: the float rules, on int8 values,
  with the output taking the input's qparams (no requantization).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.qparams import scalar_multiplier
from torch_tpu.lowering.registry import RuleTable, only_first_output_used
from torch_tpu.lowering.rules import reduce as float_reduce
from torch_tpu.lowering.rules import shape as float_shape
from torch_tpu.lowering.rules.pool import _four, _pair

aten = torch.ops.aten


def _float_io(node: fx.Node) -> bool:
    v = node.args[0].meta["val"]
    return isinstance(v, torch.Tensor) and v.dtype.is_floating_point


def max_pool_int8_supported(node: fx.Node) -> bool:
    """Only the values used, NCHW float input."""
    return only_first_output_used(node) and _float_io(node) and node.args[0].meta["val"].dim() == 4


def lower_max_pool_int8(ctx: LowerCtx) -> tuple:
    """-> ``(tpu.max_pool2d_int8(...), None)``; the values keep the input's qparams."""
    p = ctx.params
    k = _pair(p["kernel_size"], [1, 1])
    y = ctx.emit("max_pool2d_int8", ctx.operand("self"), k, _pair(p["stride"], k), _four(p["padding"]),
                 _pair(p["dilation"], [1, 1]), bool(p["ceil_mode"]))
    ctx.quant.inherit(ctx.node, ctx.arg("self"))
    return (y, None)


def avg_pool_int8_supported(node: fx.Node) -> bool:
    """NCHW float input and a divisor that is the same for every window."""
    p = bind_params(node)
    pads = _four(p["padding"])
    return (_float_io(node) and node.args[0].meta["val"].dim() == 4 and not p["ceil_mode"]
            and not p["divisor_override"] and (p["count_include_pad"] or not any(pads)))


def lower_avg_pool_int8(ctx: LowerCtx) -> fx.Node:
    """``avg_pool2d`` -> ``tpu.avg_pool2d_int8`` (formula in the module doc)."""
    p = ctx.params
    k = _pair(p["kernel_size"], [1, 1])
    qx, qy = ctx.quant.of(ctx.arg("self")), ctx.quant.of(ctx.node)
    m, s = scalar_multiplier(qx.scale / (k[0] * k[1] * qy.scale))
    return ctx.emit("avg_pool2d_int8", ctx.operand("self"), k, _pair(p["stride"], k), _four(p["padding"]), m, s,
                    qx.zero_point, qy.zero_point)


def adaptive_int8_supported(node: fx.Node) -> bool:
    """NCHW float input; output 1x1 or dividing the input size."""
    if not _float_io(node) or node.args[0].meta["val"].dim() != 4:
        return False
    h, w = node.args[0].meta["val"].shape[-2:]
    oh, ow = node.meta["val"].shape[-2:]
    return h % oh == 0 and w % ow == 0


def lower_adaptive_avg_pool_int8(ctx: LowerCtx) -> fx.Node:
    """``_adaptive_avg_pool2d`` as an int8 window sum (module doc)."""
    h, w = ctx.val("self").shape[-2:]
    oh, ow = ctx.val("out").shape[-2:]
    qx, qy = ctx.quant.of(ctx.arg("self")), ctx.quant.of(ctx.node)
    kh, kw = h // oh, w // ow
    m, s = scalar_multiplier(qx.scale / (kh * kw * qy.scale))
    if oh == ow == 1:
        return ctx.emit("reduce_sum_int8", ctx.operand("self"), [2, 3], True, m, s, qx.zero_point, qy.zero_point)
    return ctx.emit("avg_pool2d_int8", ctx.operand("self"), [kh, kw], [kh, kw], [0, 0, 0, 0], m, s, qx.zero_point,
                    qy.zero_point)


def lower_reduce_int8(ctx: LowerCtx, mode: str) -> fx.Node:
    """``mean``/``sum`` -> ``tpu.reduce_sum_int8`` (``1/n`` folded into the multiplier for mean)."""
    dims = float_reduce._dims(ctx)
    shape = ctx.val("self").shape
    n = math.prod(shape[d] for d in dims) if mode == "mean" else 1
    qx, qy = ctx.quant.of(ctx.arg("self")), ctx.quant.of(ctx.node)
    m, s = scalar_multiplier(qx.scale / (n * qy.scale))
    return ctx.emit("reduce_sum_int8", ctx.operand("self"), dims, bool(ctx.params.get("keepdim") or False), m, s,
                    qx.zero_point, qy.zero_point)


def lower_passthrough(ctx: LowerCtx, rule: Callable[[LowerCtx], object]):
    """A data-movement float rule applied to int8 values; the output keeps the input's qparams."""
    out = rule(ctx)
    src = next(a for a in ctx.node.all_input_nodes)
    ctx.quant.inherit(ctx.node, src)
    return out


def passthrough_supported(node: fx.Node) -> bool:
    """A float tensor in, float out (or a tuple of float tensors for split)."""
    out = node.meta["val"]
    outs = out if isinstance(out, (tuple, list)) else [out]
    return _float_io(node) and all(isinstance(o, torch.Tensor) and o.dtype.is_floating_point for o in outs)


def to_copy_int8_supported(node: fx.Node) -> bool:
    """A float -> float ``_to_copy`` on the same device (a copy at int8)."""
    return passthrough_supported(node) and float_shape.to_copy_supported(node)


PASSTHROUGH = {
    aten.view.default: float_shape.lower_reshape, aten._unsafe_view.default: float_shape.lower_reshape,
    aten.reshape.default: float_shape.lower_reshape, aten.squeeze.dims: float_shape.lower_reshape,
    aten.squeeze.dim: float_shape.lower_reshape, aten.squeeze.default: float_shape.lower_reshape,
    aten.unsqueeze.default: float_shape.lower_reshape, aten.permute.default: float_shape.lower_permute,
    aten.expand.default: float_shape.lower_expand, aten.slice.Tensor: float_shape.lower_slice,
    aten.select.int: float_shape.lower_select, aten.split.Tensor: float_shape.lower_split,
    aten.split_with_sizes.default: float_shape.lower_split, aten.clone.default: float_shape.lower_copy,
    aten.alias.default: float_shape.lower_copy, aten.detach.default: float_shape.lower_copy,
    aten.lift_fresh_copy.default: float_shape.lower_copy,
}


def register(table: RuleTable) -> None:
    """Add this family's int8 rules to ``table`` (called once, from ``rules/__init__.py``)."""
    kw = {"precisions": ("int8",)}
    table.register(aten.max_pool2d_with_indices.default, lower_max_pool_int8, extra_check=max_pool_int8_supported,
                   reason="max-pool indices used, or not NCHW float", **kw)
    table.register(aten.avg_pool2d.default, lower_avg_pool_int8, extra_check=avg_pool_int8_supported,
                   reason="avg pool whose divisor varies per window (ceil_mode, divisor_override, padding "
                          "excluded from the count)", **kw)
    table.register(aten._adaptive_avg_pool2d.default, lower_adaptive_avg_pool_int8,
                   extra_check=adaptive_int8_supported, reason="adaptive pool with unequal windows", **kw)
    reason = "reduction of a non-float tensor or with a dtype change"
    for op, mode in ((aten.mean.dim, "mean"), (aten.mean.default, "mean"), (aten.sum.dim_IntList, "sum"),
                     (aten.sum.default, "sum")):
        table.register(op, functools.partial(lower_reduce_int8, mode=mode), extra_check=float_reduce.float_reduce,
                       reason=reason, **kw)
    for op, rule in PASSTHROUGH.items():
        table.register(op, functools.partial(lower_passthrough, rule=rule), extra_check=passthrough_supported,
                       reason="data movement of a non-float tensor", **kw)
    table.register(aten._to_copy.default, functools.partial(lower_passthrough, rule=float_shape.lower_to_copy),
                   extra_check=to_copy_int8_supported, reason="a dtype or device change", **kw)

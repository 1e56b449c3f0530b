"""Convolution: ``aten.convolution`` (2-D and 1-D, grouped/depthwise, dilation) -> ``tpu.conv2d``.

Supported when the weight (and bias) are constants and the conv is not transposed; 1-D convs run as 2-D
ones with H = 1 (``reshape`` around them). Padding becomes the explicit ``[top, bottom, left, right]``.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.registry import RuleTable, is_constant

aten = torch.ops.aten


def conv_supported(node: fx.Node) -> bool:
    """Constant weight/bias, not transposed, 1-D or 2-D."""
    p = bind_params(node)
    return (not p["transposed"] and is_constant(p["weight"]) and (p["bias"] is None or is_constant(p["bias"]))
            and p["weight"].meta["val"].dim() in (3, 4))


def lower_convolution(ctx: LowerCtx) -> fx.Node:
    """``convolution(x, w, b, stride, padding, dilation, False, _, groups)`` -> ``tpu.conv2d``."""
    p = ctx.params
    w = ctx.const("weight")
    bias = ctx.operand("bias") if p["bias"] is not None else None
    x = ctx.operand("input")
    if w.dim() == 4:
        ph, pw = p["padding"]
        return ctx.emit("conv2d", x, ctx.operand("weight"), bias, list(p["stride"]), [ph, ph, pw, pw],
                        list(p["dilation"]), p["groups"])
    # 1-D: [N, C, L] -> [N, C, 1, L]
    n, c, length = ctx.val("input").shape
    x4 = ctx.emit("reshape", x, [n, c, 1, length], suffix="as_2d")
    w4 = ctx.add_const(ctx.to_storage(w.unsqueeze(2)), "weight_2d")
    (pad,) = p["padding"]
    y4 = ctx.emit("conv2d", x4, w4, bias, [1, p["stride"][0]], [0, 0, pad, pad], [1, p["dilation"][0]],
                  p["groups"], suffix="conv2d")
    return ctx.emit("reshape", y4, list(ctx.val("out").shape))


def register(table: RuleTable) -> None:
    """Add this family's rules to ``table`` (called once, from ``rules/__init__.py``)."""
    table.register(aten.convolution.default, lower_convolution, extra_check=conv_supported,
                   reason="only non-transposed 1-D/2-D convolutions with constant weight and bias")

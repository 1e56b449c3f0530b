"""Matrix products: ``addmm``, ``mm``, ``bmm`` -> ``tpu.linear`` (constant right operand) or ``tpu.matmul``.

``addmm(b, x, permute(w))`` as captured from ``nn.Linear`` has a constant ``permute(w)`` (folded before
lowering), so it becomes ``tpu.linear(x, w, b)`` with the weight back in ``[N, K]`` layout.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.lowering.context import LowerCtx, bind_params
from torch_tpu.lowering.registry import RuleTable

aten = torch.ops.aten


def addmm_supported(node: fx.Node) -> bool:
    """``beta == alpha == 1``."""
    p = bind_params(node)
    return p["beta"] == 1 and p["alpha"] == 1


def _product(ctx: LowerCtx, a: str, b: str, bias: torch.Tensor | None, suffix: str | None) -> fx.Node:
    """``a @ b (+ bias)``: tpu.linear when ``b`` is a constant, tpu.matmul otherwise."""
    wb = ctx.const(b)
    x = ctx.operand(a)
    if wb is not None and wb.dim() == 2:
        w = ctx.add_const(ctx.to_storage(wb.t().contiguous()), "weight")
        bnode = None if bias is None else ctx.add_const(ctx.to_storage(bias), "bias")
        return ctx.emit("linear", x, w, bnode, suffix=suffix)
    return ctx.emit("matmul", x, ctx.operand(b), suffix=suffix)


def lower_addmm(ctx: LowerCtx) -> fx.Node:
    """``addmm(bias, x, w) = bias + x @ w``."""
    n = ctx.val("out").shape[-1]
    bias = ctx.const("self")
    if bias is not None and bias.numel() == n and ctx.const("mat2") is not None:
        return _product(ctx, "mat1", "mat2", bias.reshape(n), None)
    y = _product(ctx, "mat1", "mat2", None, "matmul")
    return ctx.emit("add", y, ctx.operand("self"))


def lower_mm(ctx: LowerCtx) -> fx.Node:
    """``mm(a, b) = a @ b``."""
    return _product(ctx, "self", "mat2", None, None)


def lower_bmm(ctx: LowerCtx) -> fx.Node:
    """``bmm(a, b)`` batched product."""
    return ctx.emit("matmul", ctx.operand("self"), ctx.operand("mat2"))


def register(table: RuleTable) -> None:
    """Add this family's rules to ``table`` (called once, from ``rules/__init__.py``)."""
    table.register(aten.addmm.default, lower_addmm, extra_check=addmm_supported, reason="beta and alpha must be 1")
    table.register(aten.mm.default, lower_mm)
    table.register(aten.bmm.default, lower_bmm)

"""Codegen of comparisons, logical ops and ``where``: bool masks are uint8 0 / 1 tiles (``ddr_plan.cm_dtype``).

=====================  =================================================================================
``tpu.<cmp>(a, b)``    ``compare`` (broadcast loads as the binary ops), mask out
``tpu.<cmp>_const``    ``compare`` with ``scalar``; ``reverse`` (constant first) swaps the comparison
``logical_not``        ``compare eq 0`` of the mask
``logical_and / or``   ``eltwise min / max`` of two masks (exact on 0 / 1)
``where(c, a, b)``     ``select``: an exact copy of ``a`` or ``b`` per element
=====================  =================================================================================
"""

from __future__ import annotations

from torch_tpu.cmodel import isa
from torch_tpu.lowering.codegen.context import OpCtx
from torch_tpu.lowering.codegen.ops_elementwise import _views, sliced_map

#: tpu comparison -> cmodel compare op
COMPARISONS = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}
#: ``c OP x`` == ``x SWAPPED[OP] c``
SWAPPED = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def gen_compare(ctx: OpCtx, op: str) -> None:
    """``tpu.<op>(a, b)`` with broadcasting -> ``compare``."""
    ins, out = _views(ctx, list(ctx.node.args[:2]))
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Compare, ctx.layer, op=op, a=x[0], b=x[1], out=o))


def gen_compare_const(ctx: OpCtx, op: str) -> None:
    """``tpu.<op>_const(x, value, reverse)`` -> ``compare`` against ``scalar``."""
    args = ctx.node.args
    reverse = bool(args[2]) if len(args) > 2 else bool(ctx.node.kwargs.get("reverse", False))
    cop = SWAPPED[op] if reverse else op
    ins, out = _views(ctx, [args[0]])
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Compare, ctx.layer, op=cop, a=x[0],
                                                        scalar=float(args[1]), out=o))


def gen_logical_not(ctx: OpCtx) -> None:
    ins, out = _views(ctx, [ctx.node.args[0]])
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Compare, ctx.layer, op="eq", a=x[0], scalar=0.0, out=o))


def gen_logical(ctx: OpCtx, op: str) -> None:
    """``logical_and`` / ``logical_or`` -> ``eltwise min`` / ``max`` of the 0 / 1 masks."""
    ins, out = _views(ctx, list(ctx.node.args[:2]))
    ew = {"and": "min", "or": "max"}[op]
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Eltwise, ctx.layer, op=ew, a=x[0], b=x[1], out=o))


def gen_where(ctx: OpCtx) -> None:
    """``tpu.where(cond, a, b)`` -> ``select`` (every operand broadcast to the output)."""
    ins, out = _views(ctx, list(ctx.node.args[:3]))
    sliced_map(ctx, ins, out, lambda x, o: ctx.em.emit(isa.Select, ctx.layer, cond=x[0], a=x[1], b=x[2], out=o))

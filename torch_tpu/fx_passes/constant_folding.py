"""Constant folding.

Matches: every ``call_function`` node whose tensor inputs are all constants (``get_attr`` nodes or
    nodes folded before it) — ``permute(fc.weight)``, ``expand(cls_token)``, attention masks built from
    ``arange`` / ``full`` / ``scalar_tensor`` chains, embeddings of constant indices — except ops that
    draw random numbers or mutate, and results larger than ``max(max_elements, largest constant input)``
    elements (a broadcast that would blow a small constant up into a big one stays an op).
Rewrites to: one new ``get_attr`` constant per folded value that something non-constant still uses;
    it takes the stable name of the last folded node (``fc.permute``), intermediate constants die.
Why valid: the op is deterministic and its inputs are fixed, so evaluating it once at compile time with
    the same PyTorch kernel gives exactly the tensor it would give at run time.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from torch_tpu.fx_passes.graph_edit import GraphEditor
from torch_tpu.fx_passes.manager import PassResult

#: Default size limit (elements) of a folded constant that is larger than every constant it comes from.
FOLD_MAX_ELEMENTS = 1 << 16


#: Ops whose result is not a function of their inputs (uninitialized memory); never folded.
NEVER_FOLD = frozenset({torch.ops.aten.empty.memory_format, torch.ops.aten.empty_strided.default,
                        torch.ops.aten.empty_like.default, torch.ops.aten.empty_permuted.default})


def _foldable_op(target: Any) -> bool:
    if target is operator.getitem:
        return True
    if not isinstance(target, torch._ops.OpOverload) or target in NEVER_FOLD:
        return False
    return (torch.Tag.nondeterministic_seeded not in target.tags and not target._schema.is_mutable
            and torch.Tag.inplace not in target.tags)


def _numel(v: Any) -> int:
    return sum(t.numel() for t in pytree.tree_leaves(v) if isinstance(t, torch.Tensor))


def fold_constants(gm: fx.GraphModule, *, max_elements: int = FOLD_MAX_ELEMENTS) -> PassResult:
    """Evaluate constant sub-graphs once and store their results as constants (see the module docstring).

    Args:
        gm: the TOP graph module (edited in place).
        max_elements: size limit for a folded value that is larger than all of its constant inputs.

    Example:
        >>> fold_constants(gm).modified      # permute(fc.weight) is now a constant   # doctest: +SKIP
        True
    """
    ed = GraphEditor(gm)
    values: dict[fx.Node, Any] = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            t = ed.const(n)
            if t is not None:
                values[n] = t
        elif n.op == "call_function" and _foldable_op(n.target):
            inputs = n.all_input_nodes
            if not all(a in values for a in inputs):
                continue
            args, kwargs = pytree.tree_map_only(fx.Node, lambda a: values[a], (n.args, n.kwargs))
            try:
                with torch.no_grad():
                    out = n.target(*args, **kwargs)
            except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError):
                continue  # the op refuses these constants here; it stays an op and fails (or not) at run time
            biggest = max((_numel(values[a]) for a in inputs), default=0)
            if _numel(out) > max(max_elements, biggest):
                continue
            values[n] = out

    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n not in values or getattr(n, "_erased", False):
            continue
        if all(u in values for u in n.users):
            continue  # only used inside the constant sub-graph
        out, val = values[n], n.meta.get("val")
        if not isinstance(out, torch.Tensor) or not isinstance(val, torch.Tensor) or (
                out.shape != val.shape or out.dtype != val.dtype):
            continue
        const = ed.add_constant(out, f"{n.name}__folded", before=n)
        ed.replace(n, const)
    return ed.finish()

"""Dead code removal.

Matches: nodes whose value nobody uses (no users, not an input or the output), trace-time assertion
    ops (:data:`ASSERTION_OPS`, e.g. ``_assert_tensor_metadata`` that ``torch.export`` leaves for
    ``.to(dtype)``), and tensor attributes (parameters, buffers, constants) that no ``get_attr`` reads.
Rewrites to: nothing — they are erased; submodules left empty are removed.
Why valid: a TOP graph is functional (the checker refuses mutating ops), so an unused value has no
    effect on the outputs; the assertions restate shapes and dtypes that ``meta["val"]`` already fixes.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.fx_passes.graph_edit import drop_unused_attributes
from torch_tpu.fx_passes.manager import PassResult


#: Ops that only assert facts known at trace time; they have no outputs and are dropped.
ASSERTION_OPS = frozenset({
    torch.ops.aten._assert_tensor_metadata.default, torch.ops.aten._assert_scalar.default,
    torch.ops.aten.sym_constrain_range_for_size.default, torch.ops.aten._assert_async.msg,
})


def remove_dead_code(gm: fx.GraphModule) -> PassResult:
    """Erase unused nodes and unused attributes (see the module docstring).

    Example:
        >>> remove_dead_code(gm).modified        # doctest: +SKIP
        False
    """
    changed = False
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and n.target in ASSERTION_OPS and not n.users:
            gm.graph.erase_node(n)
            changed = True
    changed |= drop_unused_attributes(gm)
    if changed:
        gm.graph.lint()
        gm.recompile()
    return PassResult(gm, changed)

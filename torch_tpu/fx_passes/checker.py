"""The TOP checker: the invariants of a TOP graph, written as rules.

Node rules (each ``rule(gm, node, fake_mode) -> problem or None``), run on every node in this order;
the first one that fails is reported for the node:

* ``node-kind``: only ``placeholder``, ``get_attr``, ``call_function`` and ``output`` nodes;
* ``functional``: no in-place or mutating op (a mutable schema or the ``inplace`` tag);
* ``core-aten``: a ``call_function`` target is ``operator.getitem``, a core ATen ``OpOverload``
  (tagged ``core``) or one of :data:`TOP_EXTRA_OPS` (activations the passes recognize);
* ``has-val``: every value node carries ``meta["val"]`` (a tensor, or a tuple for multi-output ops);
* ``val-matches``: the stored shape and dtype equal what the op produces from its inputs' stored
  vals (the op is re-run on fake tensors, node by node: cheap, no real data);
* ``attr-exists``: a ``get_attr`` target resolves to a tensor on the module.

Graph rules: ``unique-names`` (every node has a stable name and no two are equal) and
``output-tuple`` (the output is a tuple of nodes).

Example:
    >>> check_top(capture_module(model, (x,)).gm)      # raises VerificationError on a violation  # doctest: +SKIP
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from torch_tpu.errors import VerificationError
from torch_tpu.graph.names import STABLE_NAME, stable_name
from torch_tpu.graph.printer import op_str, type_str

aten = torch.ops.aten

#: Non-core ATen ops allowed in a TOP graph: activations that fx_passes recognizes from their decompositions.
TOP_EXTRA_OPS = frozenset({aten.silu.default, aten.hardswish.default, aten.hardsigmoid.default})

_NODE_KINDS = frozenset({"placeholder", "get_attr", "call_function", "output"})

NodeRule = Callable[[fx.GraphModule, fx.Node, FakeTensorMode], "str | None"]


def find_fake_mode(gm: fx.GraphModule) -> FakeTensorMode:
    """The fake mode of the graph's ``meta["val"]`` tensors (a fresh one if the graph has none)."""
    for n in gm.graph.nodes:
        for v in pytree.tree_leaves(n.meta.get("val")):
            if isinstance(v, FakeTensor):
                return v.fake_mode
    return FakeTensorMode(allow_non_fake_inputs=True)


def _rule_node_kind(gm: fx.GraphModule, n: fx.Node, mode: FakeTensorMode) -> str | None:
    return None if n.op in _NODE_KINDS else f"{n.op} nodes are not allowed in a TOP graph"


def _rule_core_aten(gm: fx.GraphModule, n: fx.Node, mode: FakeTensorMode) -> str | None:
    if n.op != "call_function" or n.target is operator.getitem:
        return None
    t = n.target
    if not isinstance(t, torch._ops.OpOverload):
        return f"target {t!r} is not an ATen OpOverload"
    if t.namespace != "aten":
        return f"op {op_str(t)} is not an ATen op"
    if torch.Tag.core not in t.tags and t not in TOP_EXTRA_OPS:
        return f"op {op_str(t)} is not core ATen (nor one of TOP_EXTRA_OPS)"
    return None


def _rule_functional(gm: fx.GraphModule, n: fx.Node, mode: FakeTensorMode) -> str | None:
    t = n.target
    if n.op == "call_function" and isinstance(t, torch._ops.OpOverload) and (
            t._schema.is_mutable or torch.Tag.inplace in t.tags):
        return f"op {op_str(t)} mutates its inputs"
    return None


def _rule_has_val(gm: fx.GraphModule, n: fx.Node, mode: FakeTensorMode) -> str | None:
    if n.op == "output":
        return None
    v = n.meta.get("val")
    leaves = pytree.tree_leaves(v)
    if v is None or not leaves or not all(isinstance(x, torch.Tensor) for x in leaves if x is not None):
        return "missing meta['val'] (a tensor or a tuple of tensors)"
    return None


def _shape_dtype(v: Any) -> Any:
    return pytree.tree_map_only(torch.Tensor, lambda t: (tuple(t.shape), t.dtype), v)


def _rule_val_matches(gm: fx.GraphModule, n: fx.Node, mode: FakeTensorMode) -> str | None:
    if n.op == "get_attr":
        t = _resolve(gm, str(n.target))
        v = n.meta.get("val")
        if isinstance(t, torch.Tensor) and isinstance(v, torch.Tensor) and _shape_dtype(t) != _shape_dtype(v):
            return f"meta['val'] is {type_str(v)} but the attribute holds {type_str(t)}"
        return None
    if n.op != "call_function":
        return None
    if any(not isinstance(a.meta.get("val"), (torch.Tensor, tuple, list)) for a in n.all_input_nodes):
        return None  # reported by has-val on the input
    args, kwargs = pytree.tree_map_only(fx.Node, lambda a: a.meta["val"], (n.args, n.kwargs))
    if n.target is operator.getitem:
        got = args[0][args[1]]
    else:
        try:
            with mode:
                got = n.target(*args, **kwargs)
        except Exception as e:  # any op error on these operands is the finding itself
            return f"re-running the op on its inputs' vals failed: {type(e).__name__}: {e}"
    if _shape_dtype(got) != _shape_dtype(n.meta["val"]):
        return f"meta['val'] is {type_str(n.meta['val'])} but the op produces {type_str(got)}"
    return None


def _resolve(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _rule_attr_exists(gm: fx.GraphModule, n: fx.Node, mode: FakeTensorMode) -> str | None:
    if n.op == "get_attr" and not isinstance(_resolve(gm, str(n.target)), torch.Tensor):
        return f"get_attr target '{n.target}' is not a tensor attribute of the module"
    return None


#: The node rules, in the order they run: (rule name, rule).
NODE_RULES: tuple[tuple[str, NodeRule], ...] = (
    ("node-kind", _rule_node_kind),
    ("functional", _rule_functional),
    ("core-aten", _rule_core_aten),
    ("has-val", _rule_has_val),
    ("attr-exists", _rule_attr_exists),
    ("val-matches", _rule_val_matches),
)


def _graph_problems(gm: fx.GraphModule) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for n in gm.graph.nodes:
        if n.op == "output":
            if not isinstance(n.args[0], (tuple, list)) or not all(isinstance(a, fx.Node) for a in n.args[0]):
                problems.append("rule output-tuple: the output is not a tuple of nodes")
            continue
        name = n.meta.get(STABLE_NAME)
        if not name:
            problems.append(f"rule unique-names: node {n.name} ({op_str(n.target)}) has no stable name")
        elif name in seen:
            problems.append(f"rule unique-names: stable name '{name}' is used by nodes {seen[name]} and {n.name}")
        else:
            seen[name] = n.name
    return problems


def top_problems(gm: fx.GraphModule) -> list[str]:
    """Every violation of the TOP invariants, one readable line each (empty when the graph is valid)."""
    problems = _graph_problems(gm)
    mode = find_fake_mode(gm)
    for n in gm.graph.nodes:
        for rule_name, rule in NODE_RULES:
            msg = rule(gm, n, mode)
            if msg:
                op = op_str(n.target) if n.op == "call_function" else n.op
                problems.append(f"node '{stable_name(n)}' ({op}): rule {rule_name}: {msg}")
                break
    return problems


def check_top(gm: fx.GraphModule) -> fx.GraphModule:
    """Check the TOP invariants (see the module docstring); return ``gm`` unchanged.

    Raises:
        VerificationError: naming each bad node (stable name, op) and the rule it breaks.
    """
    problems = top_problems(gm)
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise VerificationError(f"TOP check failed ({len(problems)} problem(s)):\n  {shown}{more}")
    return gm

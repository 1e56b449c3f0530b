"""No-op removal.

Matches (a rule per op, in :data:`NOOP_RULES`):
    ``clone``, ``alias``, ``lift_fresh_copy``; ``_to_copy`` to the same dtype and device; ``view`` /
    ``_unsafe_view`` / ``expand`` / ``squeeze`` / ``slice`` whose output has the input's shape;
    ``permute`` by the identity; ``cat`` of one tensor; dropout remnants (``native_dropout`` with
    ``train=False``, element 0); ``add``/``sub`` of 0, ``mul``/``div`` by 1, ``pow`` by 1 (a Python
    scalar or a constant tensor of that value).
Rewrites to: the input itself (which keeps its own stable name).
Why valid: each op returns its input's values unchanged. The rewrite is applied only when the
    output's ``meta["val"]`` has the same shape, dtype *and strides* as the input's, so the graph still
    runs in eager PyTorch (a ``clone(memory_format=contiguous)`` of a permuted tensor feeds a ``view``
    and is kept) and the vals of later nodes stay exact. ``x + 0`` turns ``-0.0`` into ``+0.0``, which
    no comparison can see.
"""

from __future__ import annotations

import operator
from typing import Callable

import torch
import torch.fx as fx

from torch_tpu.fx_passes.graph_edit import GraphEditor, bypass, same_layout
from torch_tpu.fx_passes.manager import PassResult

aten = torch.ops.aten

NoopRule = Callable[[GraphEditor, fx.Node], "fx.Node | None"]


def _first(ed: GraphEditor, n: fx.Node) -> fx.Node | None:
    src = n.args[0] if n.args else None
    return src if isinstance(src, fx.Node) else None


def _to_copy_same(ed: GraphEditor, n: fx.Node) -> fx.Node | None:
    src = _first(ed, n)
    if src is None:
        return None
    dev = n.kwargs.get("device")
    if dev is not None and torch.device(dev) != src.meta["val"].device:
        return None
    return src


def _permute_identity(ed: GraphEditor, n: fx.Node) -> fx.Node | None:
    dims = [d % max(n.meta["val"].dim(), 1) for d in n.args[1]]
    return _first(ed, n) if dims == list(range(len(dims))) else None


def _cat_single(ed: GraphEditor, n: fx.Node) -> fx.Node | None:
    parts = n.args[0]
    return parts[0] if len(parts) == 1 and isinstance(parts[0], fx.Node) else None


def _dropout_eval(ed: GraphEditor, n: fx.Node) -> fx.Node | None:
    parent = n.args[0]
    if (n.args[1] == 0 and isinstance(parent, fx.Node) and parent.op == "call_function"
            and parent.target is aten.native_dropout.default):
        train = parent.args[2] if len(parent.args) > 2 else parent.kwargs.get("train")
        p = parent.args[1] if len(parent.args) > 1 else parent.kwargs.get("p")
        if train is False or p == 0:
            return parent.args[0]
    return None


def _is_const(ed: GraphEditor, a: object, value: float) -> bool:
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return a == value
    t = ed.const(a)
    return t is not None and t.numel() > 0 and bool(torch.all(t == value))


def _identity_element(value: float, commutative: bool) -> NoopRule:
    """``op(x, e)`` (and ``op(e, x)`` when commutative) with ``e`` equal to ``value`` everywhere."""

    def rule(ed: GraphEditor, n: fx.Node) -> fx.Node | None:
        if len(n.args) < 2:
            return None
        a, b = n.args[0], n.args[1]
        if isinstance(a, fx.Node) and _is_const(ed, b, value):
            return a  # x + alpha * 0 == x for any alpha
        if commutative and n.kwargs.get("alpha", 1) == 1 and isinstance(b, fx.Node) and _is_const(ed, a, value):
            return b
        return None

    rule.__name__ = f"identity_element_{value:g}{'_commutative' if commutative else ''}"
    return rule


def _build_rules() -> dict[object, NoopRule]:
    rules: dict[object, NoopRule] = {}

    def add(op: object, rule: NoopRule) -> None:
        if op in rules:
            raise KeyError(f"noops: duplicate rule for {op}")
        rules[op] = rule

    for op in (aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default, aten.view.default,
               aten._unsafe_view.default, aten.expand.default, aten.squeeze.default, aten.squeeze.dim,
               aten.squeeze.dims, aten.slice.Tensor):
        add(op, _first)
    add(aten._to_copy.default, _to_copy_same)
    add(aten.permute.default, _permute_identity)
    add(aten.cat.default, _cat_single)
    add(operator.getitem, _dropout_eval)
    for op in (aten.add.Tensor, aten.add.Scalar):
        add(op, _identity_element(0.0, commutative=True))
    for op in (aten.sub.Tensor, aten.sub.Scalar):
        add(op, _identity_element(0.0, commutative=False))
    for op in (aten.mul.Tensor, aten.mul.Scalar):
        add(op, _identity_element(1.0, commutative=True))
    for op in (aten.div.Tensor, aten.div.Scalar, aten.pow.Tensor_Scalar):
        add(op, _identity_element(1.0, commutative=False))
    return rules


#: op -> rule returning the input that the op passes through unchanged (or None).
NOOP_RULES: dict[object, NoopRule] = _build_rules()


def remove_noops(gm: fx.GraphModule) -> PassResult:
    """Bypass every node that returns its input unchanged (see the module docstring).

    Example:
        >>> remove_noops(gm).modified        # clone / same-shape view / x * 1 removed   # doctest: +SKIP
        True
    """
    ed = GraphEditor(gm)
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or getattr(n, "_erased", False):
            continue
        rule = NOOP_RULES.get(n.target)
        if rule is None:
            continue
        src = rule(ed, n)
        if src is not None and same_layout(src.meta.get("val"), n.meta.get("val")):
            bypass(ed, n, src)
    return ed.finish()

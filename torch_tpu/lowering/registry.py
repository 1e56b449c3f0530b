"""The lowering rule table: (TOP op, precision) -> rule, plus per-target override tables.

A rule is a function ``lower_xxx(ctx: LowerCtx) -> fx.Node | tuple`` that emits TPU nodes for one TOP node
(see :mod:`torch_tpu.lowering.context`). An optional ``extra_check(node) -> bool`` refuses variants a
rule cannot lower (transposed conv, a non-constant weight, ...): such a node is unsupported, i.e. a
partition boundary for the torch.compile backend or an :class:`UnsupportedOpError` for :func:`lower`.

Example:
    >>> table = RuleTable()
    >>> table.register(torch.ops.aten.relu.default, lower_relu)                 # doctest: +SKIP
    >>> table.register(torch.ops.aten.relu.default, lower_relu_x, target="cv183x")  # override  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any, Callable, Iterable

import torch
import torch.fx as fx

from torch_tpu.errors import TorchTpuError, UnsupportedOpError
from torch_tpu.graph.names import source_location, stable_name
from torch_tpu.graph.printer import op_str
from torch_tpu.targets import FLOAT_PRECISIONS, Target

ExtraCheck = Callable[[fx.Node], bool]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One table entry.

    Attributes:
        op: the TOP op (an ``OpOverload`` such as ``torch.ops.aten.convolution.default``).
        precision: the precision it lowers for.
        fn: the rule function (receives a :class:`~torch_tpu.lowering.context.LowerCtx`).
        extra_check: ``node -> bool``; False means "this variant is not supported".
        reason: why ``extra_check`` refuses (used in error messages).
    """

    op: Any
    precision: str
    fn: Callable[..., Any]
    extra_check: ExtraCheck | None = None
    reason: str = ""

    def accepts(self, node: fx.Node) -> bool:
        """True if the rule can lower this node (``extra_check`` passes)."""
        return self.extra_check is None or bool(self.extra_check(node))


def rule_name(fn: Callable[..., Any]) -> str:
    """``module.function`` of a rule, with the bound arguments of a ``functools.partial``."""
    if isinstance(fn, functools.partial):
        bound = ", ".join(f"{k}={v!r}" for k, v in fn.keywords.items())
        return f"{rule_name(fn.func)}({bound})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__name__', repr(fn))}"


def _where(target: Target | str, precision: str) -> str:
    return f"lowering[{target if isinstance(target, str) else target.name}/{precision}]"


class RuleTable:
    """Default rules keyed by ``(op, precision)`` and per-target overrides keyed by ``target.name``.

    Registering the same key twice raises :class:`TorchTpuError`; a lookup miss is an
    :class:`UnsupportedOpError` naming the op, the node's stable name and its source location.
    """

    def __init__(self) -> None:
        self._default: dict[tuple[Any, str], Rule] = {}
        self._override: dict[str, dict[tuple[Any, str], Rule]] = {}

    def register(self, op: Any, fn: Callable[..., Any], *, precisions: Iterable[str] = FLOAT_PRECISIONS,
                 extra_check: ExtraCheck | None = None, reason: str = "", target: str | None = None) -> None:
        """Add ``fn`` for ``op`` in each of ``precisions`` (to the override table of ``target`` if given)."""
        table = self._default if target is None else self._override.setdefault(target, {})
        for p in precisions:
            key = (op, p)
            if key in table:
                where = "default table" if target is None else f"override table of {target}"
                raise TorchTpuError(f"lowering/registry.py: a rule for {op_str(op)} [{p}] is already in the {where} "
                                    f"({rule_name(table[key].fn)})")
            table[key] = Rule(op, p, fn, extra_check, reason)

    def lookup(self, op: Any, target: Target | str, precision: str) -> Rule | None:
        """The rule for ``op`` (target override first), or None."""
        name = target if isinstance(target, str) else target.name
        rule = self._override.get(name, {}).get((op, precision))
        return rule if rule is not None else self._default.get((op, precision))

    def supports(self, node: fx.Node, target: Target | str, precision: str) -> bool:
        """True if a rule exists for the node's op and its ``extra_check`` accepts the node."""
        if node.op != "call_function":
            return False
        rule = self.lookup(node.target, target, precision)
        return rule is not None and rule.accepts(node)

    def rule_for(self, node: fx.Node, target: Target | str, precision: str) -> Rule:
        """The rule that lowers ``node``; raise :class:`UnsupportedOpError` if there is none."""
        rule = self.lookup(node.target, target, precision)
        reason = ""
        if rule is None:
            known = sorted({p for (op, p) in self._default if op == node.target})
            reason = (f"no rule for precision {precision} (rules exist for: {', '.join(known)})" if known
                      else "no lowering rule for this op")
        elif not rule.accepts(node):
            reason = rule.reason or "this variant is not supported by the rule"
        else:
            return rule
        raise UnsupportedOpError(op_str(node.target), name=stable_name(node), where=_where(target, precision),
                                 location=source_location(node), reason=reason)

    def ops(self, precision: str | None = None) -> list[Any]:
        """The TOP ops with a default rule (for ``precision`` if given)."""
        return sorted({op for (op, p) in self._default if precision in (None, p)}, key=op_str)

    def __len__(self) -> int:
        return len(self._default) + sum(len(t) for t in self._override.values())


def is_getitem(node: fx.Node) -> bool:
    """A ``getitem`` of a tuple-valued node."""
    return node.op == "call_function" and node.target is operator.getitem


def only_first_output_used(node: fx.Node) -> bool:
    """extra_check for tuple-valued ops (batch norm, max pool with indices): only element 0 is read."""
    return all(is_getitem(u) and (u.args[1] == 0 or not u.users) for u in node.users)


def is_constant(node: Any) -> bool:
    """A ``get_attr`` node (after lowering's constant folding every constant value is one)."""
    return isinstance(node, fx.Node) and node.op == "get_attr"


def val(node: Any) -> torch.Tensor | None:
    """``meta['val']`` of a node (None for non-nodes)."""
    return node.meta.get("val") if isinstance(node, fx.Node) else None

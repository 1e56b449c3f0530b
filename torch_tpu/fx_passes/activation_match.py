"""Activation recognition by polynomial matching (shared by the SiLU, GELU and hardswish passes).

An activation's decomposition is a non-linear *core* node ``t`` (``sigmoid``, ``erf``, ``tanh``, a
clamp to ``[0, 6]``) whose argument is a polynomial in one input ``x``, and an output node that is a
polynomial in ``x`` and ``t``. Instead of listing every operand order (``0.5 * x * (1 + erf(x / sqrt 2))``,
``x * (erf(x * 0.7071) + 1) * 0.5``, ``(x + 0.044715 * x ** 3)`` or ``x * (1 + 0.044715 * x * x)`` ...),
the matcher evaluates the arithmetic sub-graph (``add``, ``sub``, ``mul``, ``div`` by a constant, ``pow``
by a small integer, ``neg``) symbolically to a polynomial ``{(deg_x, deg_t): coeff}`` and compares the
coefficients with the pattern's (relative tolerance :data:`COEFF_RTOL`). A pattern is data:
:class:`ActivationPattern`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.fx as fx

from torch_tpu.fx_passes.graph_edit import GraphEditor
from torch_tpu.fx_passes.manager import PassResult

aten = torch.ops.aten

Poly = dict[tuple[int, int], float]

#: Relative tolerance on polynomial coefficients (0.7071 for 1/sqrt(2) is accepted).
COEFF_RTOL = 1e-4
_MAX_DEPTH = 10
_MAX_DEGREE = 6
_FORWARD_STEPS = 5

_ARITH = frozenset({aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar, aten.mul.Tensor,
                    aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar, aten.pow.Tensor_Scalar, aten.neg.default})


@dataclasses.dataclass(frozen=True)
class ActivationPattern:
    """One activation as data.

    Attributes:
        name: what it is (``gelu-erf``).
        core: ``core(editor, node)`` -> the argument node of ``node`` if ``node`` is this pattern's
            non-linear core, else None.
        arg_poly: the core's argument as a polynomial in ``x`` (keys ``(deg_x, 0)``).
        out_poly: the output as a polynomial in ``x`` and the core ``t``.
        op: the ATen op that replaces the output; ``kwargs`` its keyword arguments.
    """

    name: str
    core: Callable[[GraphEditor, fx.Node], "fx.Node | None"]
    arg_poly: Poly
    out_poly: Poly
    op: Any
    kwargs: dict = dataclasses.field(default_factory=dict)


def _add(a: Poly, b: Poly, k: float = 1.0) -> Poly:
    out = dict(a)
    for key, v in b.items():
        out[key] = out.get(key, 0.0) + k * v
    return out


def _mul(a: Poly, b: Poly) -> Poly | None:
    out: Poly = {}
    for (i, j), u in a.items():
        for (k, m), v in b.items():
            if i + k > _MAX_DEGREE or j + m > _MAX_DEGREE:
                return None
            out[(i + k, j + m)] = out.get((i + k, j + m), 0.0) + u * v
    return out


def poly(ed: GraphEditor, a: Any, x: fx.Node, t: fx.Node | None, depth: int = _MAX_DEPTH) -> Poly | None:
    """``a`` as a polynomial in ``x`` and ``t`` (None if it reads anything else or is not polynomial)."""
    if a is x:
        return {(1, 0): 1.0}
    if t is not None and a is t:
        return {(0, 1): 1.0}
    s = ed.scalar(a)
    if s is not None:
        return {(0, 0): s}
    if not (isinstance(a, fx.Node) and a.op == "call_function" and a.target in _ARITH) or depth == 0:
        return None
    tgt, args = a.target, a.args
    p = poly(ed, args[0], x, t, depth - 1)
    if p is None:
        return None
    if tgt is aten.neg.default:
        return {k: -v for k, v in p.items()}
    if tgt is aten.pow.Tensor_Scalar:
        e = args[1]
        if isinstance(e, float) and e.is_integer():
            e = int(e)
        if not isinstance(e, int) or not 0 <= e <= 4:
            return None
        out: Poly | None = {(0, 0): 1.0}
        for _ in range(e):
            out = _mul(out, p) if out is not None else None
        return out
    q = poly(ed, args[1], x, t, depth - 1)
    if q is None:
        return None
    alpha = float(a.kwargs.get("alpha", 1))
    if tgt in (aten.add.Tensor, aten.add.Scalar):
        return _add(p, q, alpha)
    if tgt in (aten.sub.Tensor, aten.sub.Scalar):
        return _add(p, q, -alpha)
    if tgt in (aten.mul.Tensor, aten.mul.Scalar):
        return _mul(p, q)
    if set(q) != {(0, 0)} or q[(0, 0)] == 0.0:  # div: only by a non-zero constant
        return None
    return {k: v / q[(0, 0)] for k, v in p.items()}


def poly_equal(a: Poly, b: Poly, rtol: float = COEFF_RTOL) -> bool:
    """Same polynomial up to ``rtol`` per coefficient (terms with a zero coefficient ignored)."""
    scale = max([abs(v) for v in b.values()] + [1e-30])
    keys = {k for k, v in a.items() if abs(v) > 1e-9 * scale} | {k for k, v in b.items() if v != 0.0}
    return all(abs(a.get(k, 0.0) - b.get(k, 0.0)) <= rtol * abs(b.get(k, 0.0)) + 1e-12 for k in keys) and all(
        k in b for k in keys)


def single_leaf(ed: GraphEditor, a: Any, depth: int = _MAX_DEPTH) -> fx.Node | None:
    """The one non-constant input of the arithmetic expression ``a`` (None if there are several)."""
    leaves: set[fx.Node] = set()
    stack: list[tuple[Any, int]] = [(a, depth)]
    while stack:
        n, d = stack.pop()
        if not isinstance(n, fx.Node) or ed.scalar(n) is not None:
            continue
        if n.op == "call_function" and n.target in _ARITH and d > 0:
            stack.extend((c, d - 1) for c in n.args if isinstance(c, fx.Node))
        else:
            leaves.add(n)
        if len(leaves) > 1:
            return None
    return next(iter(leaves)) if leaves else None


def _candidates(t: fx.Node) -> list[fx.Node]:
    """``t`` and the arithmetic nodes downstream of it (breadth first, a few steps): the output candidates."""
    seen: list[fx.Node] = [t]
    frontier = [t]
    for _ in range(_FORWARD_STEPS):
        nxt = []
        for n in frontier:
            for u in n.users:
                if u.op == "call_function" and u.target in _ARITH and u not in seen:
                    seen.append(u)
                    nxt.append(u)
        frontier = nxt
    return seen


def _match_at(ed: GraphEditor, t: fx.Node, pat: ActivationPattern) -> tuple[fx.Node, fx.Node] | None:
    arg = pat.core(ed, t)
    if arg is None:
        return None
    # x is the core's argument itself (silu(u) for u = x + 1) or the one input of its arithmetic (gelu's x / sqrt 2)
    for x in dict.fromkeys([arg, single_leaf(ed, arg)]):
        if x is None or not isinstance(x.meta.get("val"), torch.Tensor) or not x.meta["val"].dtype.is_floating_point:
            continue
        p = poly(ed, arg, x, None)
        if p is None or not poly_equal(p, pat.arg_poly):
            continue
        for m in _candidates(t):
            q = poly(ed, m, x, t)
            if q is not None and poly_equal(q, pat.out_poly):
                mv, xv = m.meta["val"], x.meta["val"]
                if mv.shape == xv.shape and mv.dtype == xv.dtype:
                    return x, m
    return None


def rewrite_activations(gm: fx.GraphModule, patterns: tuple[ActivationPattern, ...]) -> PassResult:
    """Replace every output that matches one of ``patterns`` by the pattern's op on ``x``.

    The new node takes the stable name of the output node it replaces; the decomposition dies.
    """
    ed = GraphEditor(gm)
    for t in list(gm.graph.nodes):
        if t.op != "call_function" or getattr(t, "_erased", False):
            continue
        for pat in patterns:  # a core may feed several outputs (hardsigmoid h and hardswish x * h)
            if getattr(t, "_erased", False):
                break
            found = _match_at(ed, t, pat)
            while found is not None:
                x, out = found
                ed.replace(out, ed.call(pat.op, (x,), dict(pat.kwargs), before=out))
                found = None if getattr(t, "_erased", False) else _match_at(ed, t, pat)
    return ed.finish()


def first_arg(*targets: Any) -> Callable[[GraphEditor, fx.Node], "fx.Node | None"]:
    """A ``core`` function: the node's first argument if the node calls one of ``targets``."""
    allowed = frozenset(targets)

    def core(ed: GraphEditor, n: fx.Node) -> fx.Node | None:
        a = n.args[0] if n.args else None
        return a if n.target in allowed and isinstance(a, fx.Node) else None

    core.__name__ = "core_" + "_".join(str(t).split(".")[-2] for t in targets)
    return core

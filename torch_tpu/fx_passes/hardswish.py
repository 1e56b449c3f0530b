"""Hardswish / hardsigmoid recognition.

Matches: ``r = clamp(x + 3, 0, 6)`` in any clamp form (``clamp(min=0)`` then ``clamp(max=6)``,
    ``hardtanh(0, 6)``, ``relu`` then ``clamp(max=6)`` ...), then
    hardsigmoid: ``r / 6``  (or ``r * (1/6)``);    hardswish: ``x * r / 6`` in any order;
    ONNX's form ``h = clamp(x / 6 + 0.5, 0, 1)`` (HardSigmoid with alpha = 1/6): hardsigmoid ``h``,
    hardswish ``x * h``; and ``x * hardsigmoid(x)`` (which the rules before may have made).
Rewrites to: ``aten.hardsigmoid(x)`` / ``aten.hardswish(x)``, with the stable name of the output node.
Why valid: ``hardsigmoid(x) = clamp(x + 3, 0, 6) / 6`` and ``hardswish(x) = x * hardsigmoid(x)`` by
    definition (torchvision's MobileNetV3 decomposes to exactly these ops).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.fx as fx

from torch_tpu.fx_passes.activation_match import ActivationPattern, first_arg, rewrite_activations
from torch_tpu.fx_passes.graph_edit import GraphEditor
from torch_tpu.fx_passes.manager import PassResult

aten = torch.ops.aten


def _arg(n: fx.Node, i: int, name: str, default: object) -> object:
    return n.args[i] if len(n.args) > i else n.kwargs.get(name, default)


def _bounds(n: fx.Node) -> tuple[float, float] | None:
    """(low, high) that a clamp-like node applies, or None if it is not clamp-like."""
    if n.op != "call_function":
        return None
    t = n.target
    if t is aten.relu.default:
        return 0.0, math.inf
    if t is aten.clamp.default:
        lo, hi = _arg(n, 1, "min", None), _arg(n, 2, "max", None)
        if isinstance(lo, fx.Node) or isinstance(hi, fx.Node):
            return None
        return (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))
    if t is aten.hardtanh.default:
        return float(_arg(n, 1, "min_val", -1.0)), float(_arg(n, 2, "max_val", 1.0))
    return None


def clamp_input(low: float, high: float) -> Callable[[GraphEditor, fx.Node], "fx.Node | None"]:
    """A ``core`` function: ``y`` if the node tops a chain of clamps that clamps ``y`` to exactly [low, high]."""

    def core(ed: GraphEditor, n: fx.Node) -> fx.Node | None:
        lo, hi = -math.inf, math.inf
        cur = n
        b = _bounds(cur)
        if b is None:
            return None
        while b is not None:
            lo, hi = max(lo, b[0]), min(hi, b[1])
            cur = cur.args[0]
            b = _bounds(cur) if isinstance(cur, fx.Node) else None
        return cur if (lo, hi) == (low, high) and isinstance(cur, fx.Node) else None

    core.__name__ = f"clamp_{low:g}_{high:g}_input"
    return core


_X_PLUS_3 = {(1, 0): 1.0, (0, 0): 3.0}
_X_SIXTH_PLUS_HALF = {(1, 0): 1.0 / 6.0, (0, 0): 0.5}

PATTERNS = (
    ActivationPattern("hardswish-relu6", clamp_input(0.0, 6.0), _X_PLUS_3, {(1, 1): 1.0 / 6.0},
                      aten.hardswish.default),
    ActivationPattern("hardsigmoid-relu6", clamp_input(0.0, 6.0), _X_PLUS_3, {(0, 1): 1.0 / 6.0},
                      aten.hardsigmoid.default),
    ActivationPattern("hardswish-clamp01", clamp_input(0.0, 1.0), _X_SIXTH_PLUS_HALF, {(1, 1): 1.0},
                      aten.hardswish.default),
    ActivationPattern("hardsigmoid-clamp01", clamp_input(0.0, 1.0), _X_SIXTH_PLUS_HALF, {(0, 1): 1.0},
                      aten.hardsigmoid.default),
    ActivationPattern("hardswish-hardsigmoid", first_arg(aten.hardsigmoid.default), {(1, 0): 1.0}, {(1, 1): 1.0},
                      aten.hardswish.default),
)


def recognize_hardswish(gm: fx.GraphModule) -> PassResult:
    """Turn decomposed hardswish / hardsigmoid into ``aten.hardswish`` / ``aten.hardsigmoid``.

    Example:
        >>> recognize_hardswish(gm).modified     # MobileNetV3's activations   # doctest: +SKIP
        True
    """
    return rewrite_activations(gm, PATTERNS)

"""Scale / offset folding: multiply, divide, add or subtract by a constant merged into conv / linear.

Matches: ``mul(y, c)``, ``mul(c, y)``, ``div(y, c)``, ``add(y, c, alpha)``, ``add(c, y)``,
    ``sub(y, c, alpha)`` where ``y`` is a ``convolution`` (not transposed), ``addmm`` or ``mm`` with
    constant weight and bias used only here, and ``c`` is a Python scalar or a constant tensor that is
    per output channel (after broadcasting against ``y`` every dim but the channel dim is 1, and the
    result has ``y``'s shape and dtype).
Rewrites to: the layer with, per output channel ``k`` (see :mod:`.affine`)::

        mul: W'[k] = W[k] * c[k],      b'[k] = b[k] * c[k]
        div: W'[k] = W[k] / c[k],      b'[k] = b[k] / c[k]
        add: b'[k] = b[k] + alpha * c[k]          sub: b'[k] = b[k] - alpha * c[k]

    taking the stable name of the mul/add node. Chains (conv * a + b) fold one step at a time.
Why valid: a convolution / matrix product is linear in its weight per output channel, so scaling the
    output channel ``k`` equals scaling ``W[k]`` and ``b[k]``, and an added per-channel constant is a
    bias. Division is applied to the weights in float64 (one rounding instead of one per element).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.fx_passes.affine import fold_affine, foldable_layer
from torch_tpu.fx_passes.graph_edit import GraphEditor
from torch_tpu.fx_passes.manager import PassResult

aten = torch.ops.aten

_MUL = {aten.mul.Tensor, aten.mul.Scalar}
_DIV = {aten.div.Tensor, aten.div.Scalar}
_ADD = {aten.add.Tensor, aten.add.Scalar}
_SUB = {aten.sub.Tensor, aten.sub.Scalar}


def _per_channel(ed: GraphEditor, c: object, y: fx.Node) -> torch.Tensor | None:
    """``c`` as a float64 vector over y's channels (dim 1), or None if it is not per channel."""
    if isinstance(c, (int, float)) and not isinstance(c, bool):
        return torch.tensor([float(c)], dtype=torch.float64)
    t = ed.const(c)
    yv = y.meta["val"]
    if t is None or not t.dtype.is_floating_point or t.dim() > yv.dim():
        return None
    shape = [1] * (yv.dim() - t.dim()) + list(t.shape)
    if any(s != 1 for i, s in enumerate(shape) if i != 1) or shape[1] not in (1, yv.shape[1]):
        return None
    return t.double().reshape(-1)


def _fold(ed: GraphEditor, n: fx.Node) -> bool:
    if n.target not in _MUL | _DIV | _ADD | _SUB or len(n.args) != 2:
        return False
    a, b = n.args
    alpha = n.kwargs.get("alpha", 1)
    commutative = n.target in _MUL or (n.target in _ADD and alpha == 1)
    for y, c in ((a, b), (b, a)) if commutative else ((a, b),):
        layer = foldable_layer(ed, y)
        if layer is None:
            continue
        vec = _per_channel(ed, c, layer)
        out, yv = n.meta["val"], layer.meta["val"]
        if vec is None or out.shape != yv.shape or out.dtype != yv.dtype or (
                n.target in _DIV and bool((vec == 0).any())):
            continue
        zero = torch.zeros_like(vec)
        if n.target in _MUL:
            fold_affine(ed, n, layer, vec, zero)
        elif n.target in _DIV:
            fold_affine(ed, n, layer, 1.0 / vec, zero)
        elif n.target in _ADD:
            fold_affine(ed, n, layer, torch.ones_like(vec), vec * alpha)
        else:
            fold_affine(ed, n, layer, torch.ones_like(vec), -vec * alpha)
        return True
    return False


def fold_scale(gm: fx.GraphModule) -> PassResult:
    """Merge per-channel (or scalar) constant mul / div / add / sub into the conv or linear before it.

    Example:
        >>> fold_scale(gm).modified          # conv(x) * 2 + 1 is now one convolution   # doctest: +SKIP
        True
    """
    ed = GraphEditor(gm)
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and not getattr(n, "_erased", False):
            _fold(ed, n)
    return ed.finish()

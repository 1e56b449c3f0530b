"""BatchNorm folding into the convolution or linear layer before it.

Matches: ``getitem(_native_batch_norm_legit_no_training(y, gamma, beta, mean, var, momentum, eps), 0)``
    where the statistics are constants and ``y`` is used only by that BatchNorm and is
    ``convolution(x, W, b, ...)`` (not transposed) or ``addmm(b, x, Wt)`` / ``mm(x, Wt)`` with constant
    weight and bias (``Wt`` may still be ``permute(W, [1, 0])`` of a constant).
Rewrites to: ``convolution(x, W', b', ...)`` or ``addmm(b', x, Wt')`` (see :mod:`.affine`) with, per
    output channel ``c``::

        s[c]     = gamma[c] / sqrt(var[c] + eps)        (gamma = 1, beta = 0 when absent)
        shift[c] = beta[c] - mean[c] * s[c]
        W'[c] = W[c] * s[c],   b'[c] = b[c] * s[c] + shift[c]

    The new node takes the BatchNorm's stable name (``layer1.0.bn1``); the folded weight keeps the
    layer's weight name, the bias the layer's bias name or ``<bn>.bias``.
Why valid: inference BatchNorm is the affine map ``y * s + shift`` per channel and ``y`` is linear in
    ``W`` and ``b`` per output channel, so the two compose into one layer. A BatchNorm without such a
    layer before it (or whose layer output is used elsewhere too) is left as it is.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from torch_tpu.fx_passes.affine import fold_affine, foldable_layer
from torch_tpu.fx_passes.graph_edit import GraphEditor
from torch_tpu.fx_passes.manager import PassResult
from torch_tpu.graph.names import stable_name

aten = torch.ops.aten


def _bn_affine(ed: GraphEditor, bn: fx.Node, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(s, shift) in float64 with ``bn(y) = y * s + shift`` per channel, or None if not constant."""
    _, gamma, beta, mean, var = bn.args[:5]
    eps = bn.args[6] if len(bn.args) > 6 else bn.kwargs.get("eps", 1e-5)
    nodes = (gamma, beta, mean, var)
    tensors = [ed.const(a) if a is not None else None for a in nodes]
    if any(a is not None and t is None for a, t in zip(nodes, tensors)):
        return None
    g, b, m, v = tensors
    if m is None or v is None or m.numel() != channels or v.numel() != channels:
        return None
    s = torch.rsqrt(v.double() + eps)
    if g is not None:
        s = s * g.double()
    shift = -m.double() * s
    if b is not None:
        shift = shift + b.double()
    return s, shift


def _fold(ed: GraphEditor, item: fx.Node) -> bool:
    bn = item.args[0]
    if item.args[1] != 0 or not (isinstance(bn, fx.Node) and bn.op == "call_function"
                                 and bn.target is aten._native_batch_norm_legit_no_training.default):
        return False
    if any(u.target is not operator.getitem or (u.args[1] != 0 and u.users) for u in bn.users):
        return False  # the saved mean / invstd outputs are used
    layer = foldable_layer(ed, bn.args[0])
    if layer is None:
        return False
    affine = _bn_affine(ed, bn, layer.meta["val"].shape[1])
    if affine is None:
        return False
    ed.erase_dead([u for u in bn.users if u is not item and not u.users])
    fold_affine(ed, item, layer, *affine, bias_name=stable_name(item) + ".bias")
    return True


def fold_batchnorm(gm: fx.GraphModule) -> PassResult:
    """Fold inference BatchNorms into the conv / linear layer before them (see the module docstring).

    Example:
        >>> fold_batchnorm(gm).modified      # layer1.0.bn1 is now a convolution with folded weights  # doctest: +SKIP
        True
    """
    ed = GraphEditor(gm)
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and n.target is operator.getitem and not getattr(n, "_erased", False):
            _fold(ed, n)
    return ed.finish()

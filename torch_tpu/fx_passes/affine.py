"""Per-channel affine folding into a convolution or linear layer (shared by BatchNorm and scale folding).

A layer ``y = conv(x, W, b)`` or ``y = x @ Wt + b`` followed by ``y * s + shift`` per output channel
``c`` becomes one layer with

    W'[c] = W[c] * s[c]      (Wt'[:, c] = Wt[:, c] * s[c])
    b'[c] = b[c] * s[c] + shift[c]          (b = 0 when the layer has no bias)

with ``s`` and ``shift`` computed in float64; ``s`` is rounded once to the weight's dtype and the weight
product is taken in that dtype (for float32 that is the same single rounding as a float64 product, as
the exact product of two float32 numbers fits in a float64), the bias in float64.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.fx_passes.graph_edit import GraphEditor
from torch_tpu.graph.names import stable_name

aten = torch.ops.aten


def linear_weight(ed: GraphEditor, a: object) -> tuple[torch.Tensor, fx.Node] | None:
    """``(Wt, source node)`` of ``addmm``/``mm``: a 2-D ``get_attr``, or ``permute(get_attr, [1, 0])``."""
    t = ed.const(a)
    if t is not None and t.dim() == 2:
        return t, a  # type: ignore[return-value]
    if (isinstance(a, fx.Node) and a.op == "call_function" and a.target is aten.permute.default
            and list(a.args[1]) in ([1, 0], [-1, -2])):
        w = ed.const(a.args[0])
        if w is not None and w.dim() == 2:
            return w.t(), a.args[0]
    return None


def foldable_layer(ed: GraphEditor, y: object) -> fx.Node | None:
    """``y`` if it is a conv / addmm / mm with constant weight and bias and a single user, else None."""
    if not (isinstance(y, fx.Node) and y.op == "call_function" and len(y.users) == 1):
        return None
    if y.target is aten.convolution.default:
        if y.args[6] or ed.const(y.args[1]) is None or (y.args[2] is not None and ed.const(y.args[2]) is None):
            return None
        return y
    if y.target in (aten.addmm.default, aten.mm.default) and y.meta["val"].dim() == 2:
        if y.kwargs.get("beta", 1) != 1 or y.kwargs.get("alpha", 1) != 1:
            return None
        if y.target is aten.addmm.default:
            b = ed.const(y.args[0])
            if b is None or b.shape[-1:] != y.meta["val"].shape[-1:] or b.dim() > 1:
                return None
        return y if linear_weight(ed, y.args[-1]) is not None else None
    return None


def fold_affine(ed: GraphEditor, end: fx.Node, layer: fx.Node, s: torch.Tensor, shift: torch.Tensor,
                bias_name: str | None = None) -> fx.Node:
    """Replace ``end`` (which computes ``layer * s + shift`` per channel) by one rescaled layer.

    The new layer takes ``end``'s stable name; the new weight keeps the layer's weight name and the
    bias keeps the layer's bias name (``bias_name`` when the layer had none).
    """
    channels = layer.meta["val"].shape[1]
    s = s.double().reshape(-1).expand(channels)
    shift = shift.double().reshape(-1).expand(channels)
    if layer.target is aten.convolution.default:
        w_src, b_node = layer.args[1], layer.args[2]
        w = ed.const(w_src)
        new_w = w * s.to(w.dtype).view(-1, *[1] * (w.dim() - 1))
    else:
        w, w_src = linear_weight(ed, layer.args[-1])  # type: ignore[misc]
        b_node = layer.args[0] if layer.target is aten.addmm.default else None
        new_w = w * s.to(w.dtype).view(1, -1)
    b = ed.const(b_node) if b_node is not None else torch.zeros(channels, dtype=w.dtype)
    new_b = (b.double() * s + shift).to(b.dtype)
    w_name = stable_name(w_src)
    b_name = stable_name(b_node) if b_node is not None else (bias_name or stable_name(end) + ".bias")
    w_const = ed.add_constant(new_w, w_name + "__scaled", before=end)
    b_const = ed.add_constant(new_b, b_name + "__scaled", before=end)
    if layer.target is aten.convolution.default:
        new = ed.call(aten.convolution.default, (layer.args[0], w_const, b_const, *layer.args[3:]), before=end,
                      val=end.meta.get("val"))
    else:
        new = ed.call(aten.addmm.default, (b_const, layer.args[-2], w_const), before=end, val=end.meta.get("val"))
    ed.replace(end, new)
    ed.set_name(w_const, w_name)
    ed.set_name(b_const, b_name)
    return new

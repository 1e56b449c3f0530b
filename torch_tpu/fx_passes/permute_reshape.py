"""Permute / reshape cancellation.

Matches:
    * ``permute(permute(x, p1), p2)`` — including NHWC <-> NCHW round trips (``[0, 2, 3, 1]`` then
      ``[0, 3, 1, 2]``, as TFLite graphs have around every op);
    * a reshape-like op (``view``, ``_unsafe_view``, ``squeeze``, ``unsqueeze``) of a reshape-like op;
Rewrites to: one ``permute(x, p)`` with ``p[i] = p1[p2[i]]``, or ``x`` itself when ``p`` is the identity;
    one ``view(x, final_shape)``, or ``x`` itself when the final shape is x's shape. The new node takes
    the stable name of the last node of the chain; the first node stays if something else reads it.
Why valid: permutations compose (``out[i] = y[.. p2[i] ..] = x[.. p1[p2[i]] ..]``), and reshapes of a
    row-major tensor only look at the flat element order, which a reshape never changes. A merged
    ``view`` that PyTorch could not take on x's strides is not made (checked on the fake tensor).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.fx_passes.graph_edit import GraphEditor, bypass
from torch_tpu.fx_passes.manager import PassResult

aten = torch.ops.aten

_RESHAPES = frozenset({aten.view.default, aten._unsafe_view.default, aten.squeeze.default, aten.squeeze.dim,
                       aten.squeeze.dims, aten.unsqueeze.default})


def _is(n: object, targets: frozenset | set) -> bool:
    return isinstance(n, fx.Node) and n.op == "call_function" and n.target in targets


def _same_value_type(a: fx.Node, b: fx.Node) -> bool:
    va, vb = a.meta.get("val"), b.meta.get("val")
    return (isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and va.shape == vb.shape
            and va.dtype == vb.dtype)


def _merge_permutes(ed: GraphEditor, n: fx.Node) -> bool:
    inner = n.args[0]
    if not _is(inner, {aten.permute.default}):
        return False
    x = inner.args[0]
    rank = n.meta["val"].dim()
    p1 = [d % rank for d in inner.args[1]]
    p2 = [d % rank for d in n.args[1]]
    p = [p1[j] for j in p2]
    if p == list(range(rank)) and _same_value_type(x, n):
        bypass(ed, n, x)
        return True
    ed.replace(n, ed.call(aten.permute.default, (x, p), before=n))
    return True


def _merge_reshapes(ed: GraphEditor, n: fx.Node) -> bool:
    inner = n.args[0]
    if not _is(inner, _RESHAPES):
        return False
    x = inner.args[0]
    if _same_value_type(x, n):
        bypass(ed, n, x)
        return True
    new = ed.try_call(aten.view.default, (x, list(n.meta["val"].shape)), before=n)
    if new is None:
        return False
    ed.replace(n, new)
    return True


def cancel_permute_reshape(gm: fx.GraphModule) -> PassResult:
    """Merge chains of permutes and of reshapes; drop chains that cancel (see the module docstring).

    Example:
        >>> cancel_permute_reshape(gm).modified   # NHWC -> NCHW -> NHWC round trip removed  # doctest: +SKIP
        True
    """
    ed = GraphEditor(gm)
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or getattr(n, "_erased", False):
            continue
        if n.target is aten.permute.default:
            _merge_permutes(ed, n)
        elif n.target in _RESHAPES:
            _merge_reshapes(ed, n)
    return ed.finish()

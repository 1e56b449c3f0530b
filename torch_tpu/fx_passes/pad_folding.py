"""Pad folding into convolution and pooling.

Matches: ``constant_pad_nd(x, pad, value)`` (non-negative, the same on both sides of every spatial dim,
    zero on batch and channel dims) whose user is
    * ``convolution`` (not transposed) and ``value == 0``;
    * ``avg_pool2d`` with ``count_include_pad=True``, ``ceil_mode=False``, no ``divisor_override`` and
      ``value == 0``;
    * ``max_pool2d_with_indices`` with ``ceil_mode=False``, ``value == -inf`` and the indices unused;
    and the total padding stays within the pool's limit (``pad <= kernel // 2``).
Rewrites to: the same op reading ``x`` with ``padding[i] += pad_i`` (the op keeps its stable name;
    the pad stays only if something else reads it).
Why valid: a convolution pads with zeros, a max pool with -inf (the identity of max) and an average pool
    with ``count_include_pad=True`` with zeros that count in the divisor — the same values the explicit
    pad inserts; with ``ceil_mode=False`` the output size ``floor((H + 2p - d(k-1) - 1) / s) + 1`` is the
    same either way. Max-pool indices would count positions in the padded tensor, so they must be unused.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx

from torch_tpu.fx_passes.graph_edit import GraphEditor
from torch_tpu.fx_passes.manager import PassResult
from torch_tpu.graph.names import stable_name

aten = torch.ops.aten


def _symmetric_spatial(pad: list[int], rank: int, spatial: int) -> list[int] | None:
    """Per spatial dim padding (first spatial dim first) if ``pad`` is symmetric and spatial-only."""
    pad = list(pad) + [0] * (2 * rank - len(pad))
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(rank)]  # pairs[0] is the LAST dim
    if any(lo != hi or lo < 0 for lo, hi in pairs):
        return None
    if any(lo != 0 for lo, _ in pairs[spatial:]):
        return None
    return [lo for lo, _ in reversed(pairs[:spatial])]


def _pad_info(n: fx.Node) -> tuple[fx.Node, list[int], float] | None:
    if not (isinstance(n, fx.Node) and n.op == "call_function" and n.target is aten.constant_pad_nd.default):
        return None
    value = n.args[2] if len(n.args) > 2 else n.kwargs.get("value", 0)
    return n.args[0], list(n.args[1]), float(value)


def _arg(n: fx.Node, i: int, name: str, default: object) -> object:
    return n.args[i] if len(n.args) > i else n.kwargs.get(name, default)


def _fold_conv(ed: GraphEditor, conv: fx.Node) -> bool:
    info = _pad_info(conv.args[0])
    if info is None or conv.args[6] or info[2] != 0.0:
        return False
    x, pad, _ = info
    padding = list(conv.args[4])
    add = _symmetric_spatial(pad, x.meta["val"].dim(), len(padding))
    if add is None:
        return False
    new_padding = [p + q for p, q in zip(padding, add)]
    args = (x, conv.args[1], conv.args[2], conv.args[3], new_padding, *conv.args[5:])
    ed.replace(conv, ed.call(aten.convolution.default, args, before=conv))
    return True


def _pool_padding(pool: fx.Node, x: fx.Node, pad: list[int]) -> list[int] | None:
    kernel = list(pool.args[1])
    kernel = kernel * 2 if len(kernel) == 1 else kernel
    stride = list(_arg(pool, 2, "stride", []) or kernel)
    padding = list(_arg(pool, 3, "padding", [0, 0]))
    padding = padding * 2 if len(padding) == 1 else padding
    add = _symmetric_spatial(pad, x.meta["val"].dim(), 2)
    if add is None or len(stride) not in (1, 2):
        return None
    new = [p + q for p, q in zip(padding, add)]
    if any(p > k // 2 for p, k in zip(new, kernel)):
        return None
    return new


def _fold_avg_pool(ed: GraphEditor, pool: fx.Node) -> bool:
    info = _pad_info(pool.args[0])
    if info is None or info[2] != 0.0:
        return False
    if _arg(pool, 4, "ceil_mode", False) or not _arg(pool, 5, "count_include_pad", True) or _arg(
            pool, 6, "divisor_override", None) is not None:
        return False
    x, pad, _ = info
    new = _pool_padding(pool, x, pad)
    if new is None:
        return False
    args = (x, pool.args[1], _arg(pool, 2, "stride", []), new, False, True, None)
    ed.replace(pool, ed.call(aten.avg_pool2d.default, args, before=pool))
    return True


def _fold_max_pool(ed: GraphEditor, pool: fx.Node) -> bool:
    info = _pad_info(pool.args[0])
    if info is None or info[2] != -math.inf or _arg(pool, 5, "ceil_mode", False):
        return False
    if any(u.target is not operator.getitem or (u.args[1] != 0 and u.users) for u in pool.users):
        return False
    x, pad, _ = info
    new = _pool_padding(pool, x, pad)
    if new is None:
        return False
    args = (x, pool.args[1], _arg(pool, 2, "stride", []), new, _arg(pool, 4, "dilation", [1, 1]), False)
    tuple_name = stable_name(pool)
    ed.erase_dead([u for u in pool.users if u.args[1] != 0])
    new_pool = ed.call(aten.max_pool2d_with_indices.default, args, before=pool)
    for u in list(pool.users):
        ed.replace(u, ed.call(operator.getitem, (new_pool, 0), before=u))
    ed.set_name(new_pool, tuple_name)
    return True


_FOLDERS = {
    aten.convolution.default: _fold_conv,
    aten.avg_pool2d.default: _fold_avg_pool,
    aten.max_pool2d_with_indices.default: _fold_max_pool,
}


def fold_pad(gm: fx.GraphModule) -> PassResult:
    """Fold explicit ``constant_pad_nd`` into the padding of the conv / pool that reads it.

    Example:
        >>> fold_pad(gm).modified     # F.pad(x, [1] * 4) + conv(padding=0) -> conv(padding=1)  # doctest: +SKIP
        True
    """
    ed = GraphEditor(gm)
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and not getattr(n, "_erased", False) and n.target in _FOLDERS:
            _FOLDERS[n.target](ed, n)
    return ed.finish()

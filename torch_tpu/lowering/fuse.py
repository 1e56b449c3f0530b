"""Float conv / linear + activation fusion on a TPU graph.

Matches: ``tpu.conv2d`` or ``tpu.linear`` without a fused activation (``act`` ``none``) whose only user is
    ``tpu.relu(y)`` or ``tpu.clip(y, lo, hi)`` with finite constant bounds (or ``lo = 0, hi = +inf``).
Rewrites to: the producer with ``act = relu`` (``clip(0, inf)`` too), ``relu6`` (``clip(0, 6)``) or
    ``clip(lo, hi)``; it takes the activation's stable name (the last node it replaces, the convention of
    the INT8 driver), so TPU-vs-TOP comparisons by name still meet the activation's value.
Why valid: the fused op computes ``round(act(acc))`` and the pair ``round(act(round(acc)))``; rounding to
    the storage dtype is monotone and leaves 0, 6 and representable bounds unchanged, so both are equal for
    a clamp (bit-exact in f32, where the first rounding is the identity; bf16/f16 too, as argued in
    ``tests/lowering/test_fuse.py``). NaN passes through both the same way (``torch.relu``/``clamp``).

The cmodel's conv2d / matmul instructions carry the activation (``act``, ``act_lo``, ``act_hi``), so a fused
layer runs one instruction instead of two and never stores the pre-activation tensor.
"""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from torch_tpu.fx_passes.manager import PassResult
from torch_tpu.graph.names import set_stable_name, stable_name

tpu = torch.ops.tpu

#: producer -> index of its ``act`` argument (``act, act_min, act_max`` follow in this order).
PRODUCERS = {tpu.conv2d.default: 7, tpu.linear.default: 3}


def _current_act(node: fx.Node) -> str:
    idx = PRODUCERS[node.target]
    if len(node.args) > idx:
        return node.args[idx]
    return node.kwargs.get("act", "none")


def _activation(user: fx.Node) -> tuple[str, float, float] | None:
    """``(act, lo, hi)`` for a fusible activation node, else None."""
    if user.target == tpu.relu.default:
        return "relu", 0.0, 0.0
    if user.target != tpu.clip.default:
        return None
    lo, hi = user.args[1], user.args[2]
    if isinstance(lo, fx.Node) or isinstance(hi, fx.Node):
        return None
    lo, hi = float(lo), float(hi)
    if lo == 0.0 and hi == math.inf:
        return "relu", 0.0, 0.0
    if lo == 0.0 and hi == 6.0:
        return "relu6", 0.0, 0.0
    if math.isfinite(lo) and math.isfinite(hi) and lo <= hi:
        return "clip", lo, hi
    return None


def fuse_conv_activations(gm: fx.GraphModule) -> PassResult:
    """Fold relu / relu6 / clip into the conv or linear that is their only input (module docstring).

    Example:
        >>> fuse_conv_activations(tpu_gm).modified     # resnet: every conv + relu pair   # doctest: +SKIP
        True
    """
    modified = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in PRODUCERS or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op != "call_function" or user.args[0] is not node or _current_act(node) != "none":
            continue
        fused = _activation(user)
        if fused is None:
            continue
        act, lo, hi = fused
        idx = PRODUCERS[node.target]
        node.args = node.args[:idx]
        node.kwargs = {**node.kwargs, "act": act, "act_min": lo, "act_max": hi}
        user.replace_all_uses_with(node)
        set_stable_name(node, stable_name(user))
        gm.graph.erase_node(user)
        modified = True
    if modified:
        gm.graph.lint()
        gm.recompile()
    return PassResult(gm, modified)

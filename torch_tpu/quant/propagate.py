"""Threshold propagation: tensors that must share one int8 scale, and the threshold each group gets.

An op whose output range is a sub-range of its input's (relu, max pool, reshape/view, permute,
slice/select, squeeze ...) can run in int8 with no requantization if its output uses the input's scale;
concat can copy its inputs if all of them share the output's scale. As in TPU-MLIR, calibration ties
such tensors into **scale groups** (union-find over the TOP graph):

* range-preserving op ``y = op(x)`` (table :data:`RANGE_PRESERVING_OPS`; tuple-producing ones through
  ``getitem``): ``y`` joins ``x``'s group — the threshold flows **forward**, from producer to consumer;
* ``y = cat([x1, x2, ...])``: ``y`` and every ``xi`` join one group — the concat's threshold flows
  **backward** into its inputs.

A group's **sources** are its members that are not produced by one of those ops from another member
(a conv feeding relu → maxpool: the conv output). The group threshold is the largest source
threshold (for a concat: the widest input, so no input is clipped more than its own method chose);
every member gets it. Each member keeps its own observed min/max in the table.

Example:
    >>> groups = scale_groups(top.gm)                        # doctest: +SKIP
    >>> propagate_thresholds(groups, {"conv1": 3.0, "relu": 2.0})["relu"]   # doctest: +SKIP
    3.0
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Mapping

import torch
import torch.fx as fx

from torch_tpu.graph.names import stable_name

aten = torch.ops.aten

RANGE_PRESERVING_OPS = frozenset({
    aten.relu, aten.max_pool1d, aten.max_pool2d, aten.max_pool3d, aten.max_pool2d_with_indices,
    aten.max_pool3d_with_indices, aten.adaptive_max_pool2d, aten.view, aten._unsafe_view, aten.reshape,
    aten.permute, aten.transpose, aten.t, aten.slice, aten.select, aten.squeeze, aten.unsqueeze, aten.expand,
    aten.clone, aten.alias, aten.flatten, aten.unflatten, aten.contiguous, aten.split, aten.split_with_sizes,
    aten.unbind, aten.chunk, aten.pixel_shuffle, aten.pixel_unshuffle, aten.channel_shuffle,
})
CONCAT_OPS = frozenset({aten.cat, aten.concat})


def is_activation(node: fx.Node) -> bool:
    """A graph input or computed value that is one float tensor (what calibration observes).

    Weights (``get_attr``) are not activations: they are quantized per channel from their own values.
    """
    val = node.meta.get("val")
    return (node.op in ("placeholder", "call_function") and isinstance(val, torch.Tensor)
            and val.dtype.is_floating_point)


def _packet(target):
    return getattr(target, "overloadpacket", target)


def preserving_input(node: fx.Node) -> fx.Node | None:
    """The input whose range ``node``'s output stays within, if ``node`` is range-preserving."""
    if node.op != "call_function":
        return None
    if node.target is operator.getitem:
        src = node.args[0]
        if isinstance(src, fx.Node) and src.op == "call_function" and _packet(src.target) in RANGE_PRESERVING_OPS:
            return preserving_input(src) if src.args and isinstance(src.args[0], fx.Node) else None
        return None
    if _packet(node.target) in RANGE_PRESERVING_OPS and node.args and isinstance(node.args[0], fx.Node):
        return node.args[0]
    return None


@dataclasses.dataclass
class ScaleGroup:
    """Tensors sharing one scale.

    Attributes:
        members: stable names, in graph order.
        sources: the members whose thresholds decide the group's (module doc).
    """

    members: list[str]
    sources: list[str]


def scale_groups(gm: fx.GraphModule) -> list[ScaleGroup]:
    """Partition the activations of ``gm`` into scale groups (ordered by their first member)."""
    acts = [n for n in gm.graph.nodes if is_activation(n)]
    act_set = set(acts)
    parent: dict[fx.Node, fx.Node] = {n: n for n in acts}

    def find(n: fx.Node) -> fx.Node:
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def union(a: fx.Node, b: fx.Node) -> None:
        ra, rb = find(a), find(b)
        if ra is not rb:
            parent[rb] = ra

    derived: set[fx.Node] = set()
    for n in acts:
        src = preserving_input(n)
        if src is not None and src in act_set:
            union(src, n)
            derived.add(n)
        elif n.op == "call_function" and _packet(n.target) in CONCAT_OPS:
            ins = [a for a in n.args[0] if isinstance(a, fx.Node) and a in act_set] if n.args else []
            if ins:
                for a in ins:
                    union(a, n)
                derived.add(n)
    by_root: dict[fx.Node, ScaleGroup] = {}
    for n in acts:
        g = by_root.setdefault(find(n), ScaleGroup([], []))
        g.members.append(stable_name(n))
        if n not in derived:
            g.sources.append(stable_name(n))
    for g in by_root.values():
        if not g.sources:   # cannot happen in a DAG; keep the first member as a source to stay total
            g.sources.append(g.members[0])
    return list(by_root.values())


def propagate_thresholds(groups: list[ScaleGroup], thresholds: Mapping[str, float]) -> dict[str, float]:
    """Give every member of each group the largest threshold among the group's sources."""
    out: dict[str, float] = {}
    for g in groups:
        t = max(thresholds[s] for s in g.sources)
        for m in g.members:
            out[m] = t
    return out

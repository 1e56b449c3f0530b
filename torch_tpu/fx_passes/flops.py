"""Shape and FLOP annotation.

Matches: every ``call_function`` node.
Rewrites to: the same node with ``meta["flops"]`` (an int) set by the rule for its op in
    :data:`FLOP_RULES`, and ``meta["shape"]`` (the output shape, a tuple; a tuple of shapes for
    multi-output ops). Formulas (``numel`` = elements of the output ``y`` unless said otherwise)::

        convolution        2 * N * C_out * prod(out spatial) * (C_in / groups) * prod(kernel)
                           (transposed: 2 * N * C_in * prod(in spatial) * (C_out / groups) * prod(kernel))
        mm / addmm / bmm   2 * M * K * N (per batch for bmm)          (MACs * 2; bias adds not counted)
        max/avg pool       numel * prod(kernel)       adaptive avg pool: numel(x)
        mean/sum/amax/any  numel(x)                    softmax / log_softmax: 5 * numel(x)
        layer / batch norm 5 * numel(x) / 2 * numel(x) (inference BatchNorm: one multiply-add)
        data movement      0  (view, permute, expand, cat, slice, getitem, clone, constants ...)
        anything else      numel (one element operation per output element)

Why valid: annotation only; the graph's values are unchanged. :func:`graph_flops` sums the annotations.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import torch
import torch.fx as fx

from torch_tpu.fx_passes.manager import PassResult

aten = torch.ops.aten

FlopRule = Callable[[fx.Node], int]


def _numel(v: Any) -> int:
    return v.numel() if isinstance(v, torch.Tensor) else 0


def _out(n: fx.Node) -> torch.Tensor:
    v = n.meta["val"]
    return v[0] if isinstance(v, (tuple, list)) else v


def _in(n: fx.Node, i: int = 0) -> torch.Tensor:
    a = n.args[i]
    v = a.meta["val"] if isinstance(a, fx.Node) else a
    return v[0] if isinstance(v, (tuple, list)) else v


def _conv(n: fx.Node) -> int:
    x, w, y = _in(n, 0), _in(n, 1), _out(n)
    groups, transposed = n.args[8], n.args[6]
    kernel = math.prod(w.shape[2:])
    if transposed:
        return 2 * x.shape[0] * x.shape[1] * math.prod(x.shape[2:]) * (y.shape[1] // groups) * kernel
    return 2 * y.shape[0] * y.shape[1] * math.prod(y.shape[2:]) * (x.shape[1] // groups) * kernel


def _matmul(n: fx.Node) -> int:
    a = _in(n, len(n.args) - 2)
    y = _out(n)
    return 2 * y.numel() * a.shape[-1]


def _pool(n: fx.Node) -> int:
    return _numel(_out(n)) * math.prod(n.args[1])


def _input_elems(k: int) -> FlopRule:
    def rule(n: fx.Node) -> int:
        return k * _numel(_in(n))
    rule.__name__ = f"input_elems_x{k}"
    return rule


def _zero(n: fx.Node) -> int:
    return 0


def _elementwise(n: fx.Node) -> int:
    return _numel(_out(n))


_DATA_MOVEMENT = (
    operator.getitem, aten.view.default, aten._unsafe_view.default, aten.permute.default, aten.expand.default,
    aten.cat.default, aten.slice.Tensor, aten.select.int, aten.squeeze.default, aten.squeeze.dim,
    aten.squeeze.dims, aten.unsqueeze.default, aten.clone.default, aten.alias.default, aten._to_copy.default,
    aten.constant_pad_nd.default, aten.full.default, aten.full_like.default, aten.arange.start_step,
    aten.arange.default, aten.scalar_tensor.default, aten.embedding.default, aten.gather.default,
    aten.index.Tensor, aten.split_with_sizes.default, aten.split.Tensor, aten.repeat.default,
    aten.lift_fresh_copy.default, aten.zeros.default, aten.ones.default, aten.empty.memory_format,
)


def _build_rules() -> dict[Any, FlopRule]:
    rules: dict[Any, FlopRule] = {}

    def add(op: Any, rule: FlopRule) -> None:
        if op in rules:
            raise KeyError(f"flops: duplicate rule for {op}")
        rules[op] = rule

    add(aten.convolution.default, _conv)
    for op in (aten.mm.default, aten.addmm.default, aten.bmm.default):
        add(op, _matmul)
    for op in (aten.max_pool2d_with_indices.default, aten.avg_pool2d.default):
        add(op, _pool)
    add(aten._adaptive_avg_pool2d.default, _input_elems(1))
    for op in (aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.amin.default, aten.any.dim,
               aten.argmax.default):
        add(op, _input_elems(1))
    for op in (aten._softmax.default, aten._log_softmax.default, aten.native_layer_norm.default):
        add(op, _input_elems(5))
    add(aten._native_batch_norm_legit_no_training.default, _input_elems(2))
    for op in _DATA_MOVEMENT:
        add(op, _zero)
    return rules


#: op -> FLOP formula; ops not listed count one operation per output element.
FLOP_RULES: dict[Any, FlopRule] = _build_rules()


def node_flops(n: fx.Node) -> int:
    """FLOPs of one ``call_function`` node by :data:`FLOP_RULES` (see the module docstring)."""
    return int(FLOP_RULES.get(n.target, _elementwise)(n))


def annotate_flops(gm: fx.GraphModule) -> PassResult:
    """Set ``meta["flops"]`` and ``meta["shape"]`` on every op node (see the module docstring).

    Example:
        >>> annotate_flops(gm); graph_flops(gm)      # resnet18 at 224x224: ~3.6e9   # doctest: +SKIP
    """
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        v = n.meta.get("val")
        n.meta["shape"] = tuple(tuple(t.shape) for t in v) if isinstance(v, (tuple, list)) else tuple(v.shape)
        n.meta["flops"] = node_flops(n)
    return PassResult(gm, False)


def graph_flops(gm: fx.GraphModule) -> int:
    """Total FLOPs of the graph (annotating nodes that have no ``meta["flops"]`` yet)."""
    total = 0
    for n in gm.graph.nodes:
        if n.op == "call_function":
            if "flops" not in n.meta:
                n.meta["flops"] = node_flops(n)
            total += n.meta["flops"]
    return total

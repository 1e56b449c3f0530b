"""Constant subgraphs of a TOP graph become constants before lowering.

Matches: a ``call_function`` node whose tensor inputs are all constants (``get_attr`` or already folded),
including nodes with no inputs (``arange``, ``scalar_tensor``, ``full``); e.g. ``permute(weight)`` of a
linear layer, BERT's position ids and attention-mask arithmetic, ViT's ``expand(cls_token)``.

Rewrites to: one ``get_attr`` buffer holding the value computed eagerly, named after the last folded node
(``inherit_name``). Values over ``max_numel`` elements are left as ops (a broadcast would otherwise be
materialised). Valid because TOP graphs are functional and inference-only: the value is the same on every
call.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from torch_tpu.graph.names import inherit_name
from torch_tpu.lowering.builder import fetch_attr

#: Folded values larger than this (elements) stay in the graph.
MAX_FOLD_NUMEL = 1 << 22

_NONDETERMINISTIC = ("rand", "randn", "randint", "bernoulli", "normal", "uniform", "dropout", "empty")


def copy_graph_module(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule with a copied graph (meta copied per node) sharing ``gm``'s tensors."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        env[n] = g.node_copy(n, lambda x: env[x])
    out = fx.GraphModule(gm, g)
    out.meta.update(gm.meta)
    return out


def _foldable(n: fx.Node) -> bool:
    if n.op != "call_function" or n.target is operator.getitem:
        return False
    name = getattr(n.target, "__name__", str(n.target))
    return not any(name.startswith(p) for p in _NONDETERMINISTIC) and isinstance(n.meta.get("val"), torch.Tensor)


def fold_constants(gm: fx.GraphModule, max_numel: int = MAX_FOLD_NUMEL) -> fx.GraphModule:
    """Fold constant subgraphs of ``gm`` in place (see the module docstring); return ``gm``."""
    values: dict[fx.Node, torch.Tensor] = {}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            values[n] = fetch_attr(gm, n.target)
    folded = 0
    for n in list(gm.graph.nodes):
        if not _foldable(n):
            continue
        inputs = n.all_input_nodes
        if not all(i in values for i in inputs):
            continue
        args = fx.node.map_arg(n.args, lambda x: values[x])
        kwargs = fx.node.map_arg(n.kwargs, lambda x: values[x])
        with torch.no_grad():
            result = n.target(*args, **kwargs)
        if not isinstance(result, torch.Tensor) or result.numel() > max_numel:
            continue
        values[n] = result
        attr = f"_folded_{folded}"
        while hasattr(gm, attr):
            folded += 1
            attr = f"_folded_{folded}"
        folded += 1
        gm.register_buffer(attr, result.detach().clone().contiguous())
        with gm.graph.inserting_before(n):
            new = gm.graph.get_attr(attr)
        new.meta["val"] = n.meta["val"]
        inherit_name(new, n)
        n.replace_all_uses_with(new)
        gm.graph.erase_node(n)
        values[new] = getattr(gm, attr)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm

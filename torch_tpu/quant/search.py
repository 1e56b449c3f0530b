"""``method="search"``: per scale group, the threshold method that gives the best network output.

Greedy in graph order (groups ordered by their first member): for group ``g``, each method's
(propagated) threshold is tried with the groups before ``g`` fake-quantized at the thresholds already
chosen for them and the groups after ``g`` left in float; the score is the cosine similarity of the
network outputs to the float outputs, averaged over the search samples. The best method wins (ties go
to the earlier method in :data:`SEARCH_METHODS`; identical thresholds are evaluated once).

**What is simulated** is what the INT8 lowering will run, as far as activations go: with ``ranges``
(each tensor's observed ``(min, max)``, as calibration passes) every tensor is fake-quantized on the
grid of its table entry ``(T, min, max)`` (:func:`torch_tpu.quant.qscheme.activation_qparams`:
unsigned for relu outputs, one-sided for silu/hardswish, signed otherwise), and the output of a
conv / linear that the lowering fuses with its only user, a relu / relu6 / clamp
(:func:`torch_tpu.quant.simulate.fused_producers`), is not quantized at all — it never exists in int8 —
nor is a conv / linear / matmul read only by the graph output, or its fused activation
(:func:`torch_tpu.quant.simulate.float_outputs`: the lowering dequantizes its accumulator to f32).
Without ``ranges``: every tensor on the signed grid ``T / 127``. Weights stay float.

Only the part of the graph from ``g``'s first member on is re-run for each candidate: the values before
it are kept per sample (memory: one set of activations per search sample). Cost: about
``groups × methods × samples / 2`` fake-quantized forward passes — meant for a few samples.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.fx as fx
from tqdm.auto import tqdm

from torch_tpu.graph.names import stable_name
from torch_tpu.quant.propagate import ScaleGroup
from torch_tpu.quant.qscheme import ActivationSpec
from torch_tpu.quant.simulate import (fake_quant_activation, float_outputs, fused_producers, output_similarity,
                                      run_env)
from torch_tpu.quant.tables import CalibrationEntry

SEARCH_METHODS = ("kl", "max", "percentile", "mse")


def _run_from(gm: fx.GraphModule, nodes: Sequence[fx.Node], start: int, prefix: Mapping[fx.Node, Any],
              inputs: Mapping[fx.Node, torch.Tensor], quant: Mapping[fx.Node, ActivationSpec]
              ) -> tuple[dict[fx.Node, Any], tuple[Any, ...]]:
    """Run ``nodes[start:]`` reading earlier values from ``prefix``; fake-quantize the nodes in ``quant``."""
    env: dict[fx.Node, Any] = {}

    def value(n: fx.Node) -> Any:
        return env[n] if n in env else prefix[n]

    outputs: tuple[Any, ...] = ()
    with torch.no_grad():
        for n in nodes[start:]:
            if n.op == "output":
                out = fx.node.map_arg(n.args[0], value)
                outputs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
                break
            if n.op == "placeholder":
                v = inputs[n]
            elif n.op == "get_attr":
                v = prefix[n]
            elif n.op == "call_function":
                v = n.target(*fx.node.map_arg(n.args, value), **fx.node.map_arg(n.kwargs, value))
            else:   # call_module / call_method do not occur in a TOP graph; run them faithfully anyway
                fn = gm.get_submodule(n.target) if n.op == "call_module" else getattr(value(n.args[0]), n.target)
                args = fx.node.map_arg(n.args if n.op == "call_module" else n.args[1:], value)
                v = fn(*args, **fx.node.map_arg(n.kwargs, value))
            t = quant.get(n)
            if t is not None and isinstance(v, torch.Tensor) and v.is_floating_point():
                v = fake_quant_activation(v, t)
            env[n] = v
    return env, outputs


def search_thresholds(gm: fx.GraphModule, samples: Sequence[Sequence[torch.Tensor]], groups: Sequence[ScaleGroup],
                      per_method: Mapping[str, Mapping[str, float]], *,
                      ranges: Mapping[str, tuple[float, float]] | None = None, progress: bool = False
                      ) -> tuple[dict[str, float], dict[str, str]]:
    """Pick a method per group (module doc).

    Args:
        gm: the TOP graph module.
        samples: search samples, each a tuple of input tensors.
        groups: scale groups of ``gm``.
        per_method: ``{method: {member: propagated threshold}}``; methods of :data:`SEARCH_METHODS` are
            tried in that order, any others after them.
        ranges: observed ``(min, max)`` per tensor: simulate the INT8 lowering's grids and fusions
            (module doc); ``None``: every tensor on the signed grid.

    Returns:
        ``(threshold per member, {first member of each group: chosen method})``.
    """
    methods = [m for m in SEARCH_METHODS if m in per_method] + [m for m in per_method if m not in SEARCH_METHODS]
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    by_name = {stable_name(n): n for n in nodes}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    inputs = [dict(zip(placeholders, s)) for s in samples]
    current = [run_env(gm, s) for s in samples]             # chosen groups quantized, later ones float
    out_node = nodes[-1] if nodes[-1].op == "output" else next(n for n in nodes if n.op == "output")
    refs = [_run_from(gm, nodes, index[out_node], env, inp, {})[1] for env, inp in zip(current, inputs)]
    skip = fused_producers(gm) | float_outputs(gm) if ranges is not None else set()

    def spec(m: fx.Node, t: float) -> ActivationSpec:
        return t if ranges is None else CalibrationEntry(t, *ranges[stable_name(m)])

    quant: dict[fx.Node, ActivationSpec] = {}
    chosen: dict[str, float] = {}
    picked: dict[str, str] = {}
    ordered = sorted(groups, key=lambda g: min(index[by_name[m]] for m in g.members))
    for g in tqdm(ordered, desc="search", disable=not progress, leave=False):
        members = [by_name[m] for m in g.members]
        start = min(index[m] for m in members)
        key = g.members[0]
        tried: dict[float, tuple[float, list[dict[fx.Node, Any]]]] = {}
        best_method, best_score = methods[0], -float("inf")
        for method in methods:
            t = per_method[method][key]
            if t not in tried:
                trial = {**quant, **{m: spec(m, t) for m in members if m not in skip}}
                runs = [_run_from(gm, nodes, start, env, inp, trial) for env, inp in zip(current, inputs)]
                score = sum(output_similarity(r, out) for r, (_, out) in zip(refs, runs)) / max(len(runs), 1)
                tried[t] = (score, [env for env, _ in runs])
            if tried[t][0] > best_score:
                best_method, best_score = method, tried[t][0]
        t = per_method[best_method][key]
        for env, suffix in zip(current, tried[t][1]):
            env.update(suffix)
        for m in members:
            if m not in skip:
                quant[m] = spec(m, t)
            chosen[stable_name(m)] = t
        picked[key] = best_method
    return chosen, picked

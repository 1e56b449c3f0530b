"""The tune step: per scale group, sweep thresholds toward the max and keep the best layer similarity.

For each scale group (see :mod:`torch_tpu.quant.propagate`) with starting threshold ``T0`` (from the
method, after propagation) and observed ``A = max|x|`` over its members, the candidates are

    ``T_k = T0 + (A - T0) · k / steps``,  ``k = 0 .. steps``   (just ``T0`` when ``A <= T0``).

For each of the ``tune_num`` samples the graph runs once in float, keeping that sample's values. Then,
for every candidate, the group's members are fake-quantized at ``T_k`` (``scale = T_k / 127``) and each
**consuming layer** — a node outside the group that reads a member — is re-run on those inputs (its
other inputs stay float). The score of ``T_k`` is the cosine similarity between that output and the
float output, averaged over the consumers and the samples (a group read only by the graph output is
scored on its own values). The best-scoring candidate wins; ties keep the smaller ``k``, so tuning never
lowers the score of ``T0`` on the tune samples.

Memory: one sample's activations at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx
from tqdm.auto import tqdm

from torch_tpu.fixed_point import fake_quantize, scale_from_threshold
from torch_tpu.graph.names import stable_name
from torch_tpu.quant.propagate import ScaleGroup
from torch_tpu.quant.simulate import cosine, eval_node, first_float, run_env

DEFAULT_TUNE_STEPS = 10


@dataclasses.dataclass
class TuneResult:
    """What tuning did to one scale group (similarities are means over consumers and samples)."""

    members: list[str]
    start_threshold: float
    threshold: float
    start_similarity: float
    similarity: float


def candidates(start: float, abs_max: float, steps: int = DEFAULT_TUNE_STEPS) -> list[float]:
    """``[T0 + (A - T0)·k/steps for k in 0..steps]`` (``[T0]`` when ``A <= T0``)."""
    if abs_max <= start or steps <= 0:
        return [start]
    return [start + (abs_max - start) * k / steps for k in range(steps + 1)]


def group_consumers(group_nodes: Sequence[fx.Node]) -> list[fx.Node]:
    """Nodes outside the group that read a member (graph order), excluding the output node."""
    inside = set(group_nodes)
    seen: dict[fx.Node, None] = {}
    for m in group_nodes:
        for u in m.users:
            if u not in inside and u.op == "call_function":
                seen[u] = None
    order = {n: i for i, n in enumerate(next(iter(group_nodes)).graph.nodes)}
    return sorted(seen, key=order.__getitem__)


def _layer_similarity(nodes: Sequence[fx.Node], consumers: Sequence[fx.Node], env: Mapping[fx.Node, Any],
                      threshold: float) -> float:
    scale = scale_from_threshold(threshold)
    subst = {m: fake_quantize(env[m], scale) for m in nodes}
    sims = []
    for c in consumers:
        ref = first_float(env[c])
        if ref is None:
            continue
        sims.append(cosine(ref, first_float(eval_node(c, env, subst))))
    if not sims:    # read only by the output (or by integer-valued ops): score the tensors themselves
        sims = [cosine(env[m], subst[m]) for m in nodes]
    return float(np.mean(sims))


def tune_thresholds(gm: fx.GraphModule, samples: Sequence[Sequence[torch.Tensor]], groups: Sequence[ScaleGroup],
                    thresholds: Mapping[str, float], abs_max: Mapping[str, float], *,
                    steps: int = DEFAULT_TUNE_STEPS, progress: bool = False
                    ) -> tuple[dict[str, float], list[TuneResult]]:
    """Tune every group's threshold on ``samples`` (module doc).

    Args:
        gm: the TOP graph module.
        samples: the tune samples, each a tuple of input tensors.
        groups: scale groups of ``gm``.
        thresholds: starting threshold per member (already propagated: equal within a group).
        abs_max: observed ``max|x|`` per member.
        steps: candidates per group beyond ``T0``.

    Returns:
        ``(thresholds per member, one TuneResult per group)``.
    """
    by_name = {stable_name(n): n for n in gm.graph.nodes}
    plans = []
    for g in groups:
        nodes = [by_name[m] for m in g.members]
        t0 = thresholds[g.members[0]]
        a = max(abs_max[m] for m in g.members)
        plans.append((g, nodes, group_consumers(nodes), candidates(t0, a, steps)))
    scores = [np.zeros(len(c)) for *_, c in plans]
    for sample in tqdm(samples, desc="tune", disable=not progress, leave=False):
        env = run_env(gm, sample)
        for (g, nodes, consumers, cands), score in zip(plans, scores):
            for k, t in enumerate(cands):
                score[k] += _layer_similarity(nodes, consumers, env, t)
        del env
    out: dict[str, float] = dict(thresholds)
    results = []
    n = max(len(samples), 1)
    for (g, nodes, consumers, cands), score in zip(plans, scores):
        best = int(np.argmax(score))         # first maximum: ties keep the smaller threshold
        for m in g.members:
            out[m] = cands[best]
        results.append(TuneResult(list(g.members), cands[0], cands[best], float(score[0] / n),
                                  float(score[best] / n)))
    return out, results

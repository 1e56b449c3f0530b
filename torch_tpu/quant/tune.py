"""The tune step: per scale group, sweep thresholds toward the max and keep the best layer similarity.

For each scale group (see :mod:`torch_tpu.quant.propagate`) with starting threshold ``T0`` (from the
method, after propagation) and observed ``A = max|x|`` over its members, the candidates are

    ``T_k = T0 + (A - T0) · k / steps``,  ``k = 0 .. steps``   (just ``T0`` when ``A <= T0``).

For each of the ``tune_num`` samples the graph runs once in float, keeping that sample's values. Then,
for every candidate, the group's members that a node outside the group reads are fake-quantized at
``T_k`` and each such **consuming layer** is re-run on those inputs (its other inputs stay float): only
the consumers run per candidate, never the network. The score of ``T_k`` is the cosine similarity
between that output and the float output, averaged over the consumers and the samples (a group read
only by the graph output is scored on its own values). The best-scoring candidate wins; ties keep the
smaller ``k``, so tuning never lowers the score of ``T0`` on the tune samples.

**Grid.** With ``ranges`` (each member's observed ``(min, max)``, as calibration passes), a candidate
quantizes each member on the grid the INT8 lowering will use for the table entry
``(T_k, min, max)`` — :func:`torch_tpu.quant.qscheme.activation_qparams`: unsigned ``[0, T_k]`` with 255
steps for a relu output, one-sided for silu/hardswish, signed ``T_k / 127`` otherwise. Scoring a relu
output on the signed grid (half the resolution it really gets) would favour thresholds the lowering
does not need. Without ``ranges``: the signed grid ``s = T_k / 127``.

**Cost.** Per sample, group and candidate: one in-place fake quantization of the read members
(:func:`fake_quant_candidate`) and one run of each consumer; the cosine comes from ``d = out - ref`` as
``(|r|² + <r,d>) / (|r| · sqrt(|r|² + 2<r,d> + |d|²))`` — float32 sums of small quantities, combined in
float64, so no float64 copy of each output, and ``d`` lives in one reused buffer. On resnet50 this is
about ``tune_num · (steps + 1)`` forward passes' worth of consumer work. Candidates are processed one
at a time on purpose: stacking them (one ``[K, ...]`` tensor) made allocations above glibc's 32 MB mmap
threshold, whose page faults cost more than the arithmetic.

Memory: one sample's activations at a time, plus one candidate's quantized group.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx
from tqdm.auto import tqdm

from torch_tpu.graph.names import stable_name
from torch_tpu.quant.propagate import ScaleGroup
from torch_tpu.quant.qscheme import activation_qparams
from torch_tpu.quant.simulate import eval_node, first_float, run_env
from torch_tpu.quant.tables import CalibrationEntry

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


def candidate_grids(thresholds: Sequence[float], value_range: tuple[float, float] | None
                    ) -> tuple[list[float], list[int]]:
    """Per candidate threshold, the ``(scale, zero_point)`` of the grid a member is quantized on (module doc):
    the scales (f32 values) and the zero points."""
    specs = [t if value_range is None else CalibrationEntry(t, *value_range) for t in thresholds]
    qps = [activation_qparams(s) for s in specs]
    return [q[0] for q in qps], [q[1] for q in qps]


def fake_quant_candidate(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``x`` fake-quantized on one candidate grid: ``(clamp(round(x / s) + zp, -128, 127) - zp) · s``.

    A scoring shortcut of five in-place passes: ``round`` here is torch's half-to-even, where the lowering's
    :func:`torch_tpu.fixed_point.fake_quantize` rounds half away from zero (with a dozen passes, 50x
    slower on resnet50's activations, and this is the tune step's hottest loop). The two differ only for
    values exactly on a tie, each then one step off — nothing a similarity score over a tensor can see.
    """
    return torch.div(x.float(), scale).round_().add_(zero_point).clamp_(-128, 127).sub_(zero_point).mul_(scale)


class _Cosine:
    """Cosine of outputs to one reference ``r`` (module doc: from ``d = out - r``, float32 sums of small
    quantities combined in float64), reusing one buffer for ``d``: no allocation per candidate."""

    def __init__(self, ref: torch.Tensor):
        self.r = ref.detach().reshape(-1).float()
        self.rr = float(torch.linalg.vector_norm(self.r, dtype=torch.float64) ** 2)
        self.d = torch.empty_like(self.r)

    def __call__(self, out: torch.Tensor) -> float:
        torch.sub(out.detach().reshape(-1).float(), self.r, out=self.d)
        rd, dd = float(torch.dot(self.r, self.d)), float(torch.dot(self.d, self.d))
        oo = self.rr + 2.0 * rd + dd
        if self.rr == 0.0 or oo <= 0.0:
            return 1.0 if self.rr == 0.0 and dd == 0.0 else 0.0
        return min(1.0, (self.rr + rd) / math.sqrt(self.rr * oo))


def _group_scores(nodes: Sequence[fx.Node], read: Sequence[fx.Node], consumers: Sequence[fx.Node],
                  env: Mapping[fx.Node, Any], grids: Mapping[fx.Node, tuple[list[float], list[int]]],
                  n_cands: int) -> np.ndarray:
    """Mean similarity per candidate for one sample (module doc); one candidate in memory at a time."""
    refs = [(c, _Cosine(first_float(env[c]))) for c in consumers if first_float(env[c]) is not None]
    if refs:
        scored = read

        def value(c: fx.Node, subst: Mapping[fx.Node, torch.Tensor]) -> torch.Tensor:
            return first_float(eval_node(c, env, subst))
    else:                # read only by the output (or by integer-valued ops): score the tensors themselves
        scored = nodes
        refs = [(m, _Cosine(env[m])) for m in nodes]

        def value(m: fx.Node, subst: Mapping[fx.Node, torch.Tensor]) -> torch.Tensor:
            return subst[m]
    out = np.empty(n_cands)
    for k in range(n_cands):
        subst = {m: fake_quant_candidate(env[m], grids[m][0][k], grids[m][1][k]) for m in scored}
        out[k] = float(np.mean([cos(value(c, subst)) for c, cos in refs]))
    return out


def tune_thresholds(gm: fx.GraphModule, samples: Sequence[Sequence[torch.Tensor]], groups: Sequence[ScaleGroup],
                    thresholds: Mapping[str, float], abs_max: Mapping[str, float], *,
                    ranges: Mapping[str, tuple[float, float]] | None = None,
                    steps: int = DEFAULT_TUNE_STEPS, progress: bool = False
                    ) -> tuple[dict[str, float], list[TuneResult]]:
    """Tune every group's threshold on ``samples`` (module doc).

    Args:
        gm: the TOP graph module.
        samples: the tune samples, each a tuple of input tensors.
        groups: scale groups of ``gm``.
        thresholds: starting threshold per member (already propagated: equal within a group).
        abs_max: observed ``max|x|`` per member.
        ranges: observed ``(min, max)`` per member: candidates are scored on the INT8 lowering's grid
            (module doc); ``None``: on the signed grid.
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
        consumers = group_consumers(nodes)
        inside = set(nodes)
        read = [m for m in nodes if any(u not in inside and u.op == "call_function" for u in m.users)]
        cands = candidates(t0, a, steps)
        grids = {m: candidate_grids(cands, None if ranges is None else ranges[stable_name(m)]) for m in nodes}
        plans.append((g, nodes, read, consumers, cands, grids))
    scores = [np.zeros(len(p[4])) for p in plans]
    for sample in tqdm(samples, desc="tune", disable=not progress, leave=False):
        env = run_env(gm, sample)
        with torch.no_grad():
            for (g, nodes, read, consumers, cands, grids), score in zip(plans, scores):
                score += _group_scores(nodes, read, consumers, env, grids, len(cands))
        del env
    out: dict[str, float] = dict(thresholds)
    results = []
    n = max(len(samples), 1)
    for (g, nodes, read, consumers, cands, grids), score in zip(plans, scores):
        best = int(np.argmax(score))         # first maximum: ties keep the smaller threshold
        for m in g.members:
            out[m] = cands[best]
        results.append(TuneResult(list(g.members), cands[0], cands[best], float(score[0] / n),
                                  float(score[best] / n)))
    return out, results

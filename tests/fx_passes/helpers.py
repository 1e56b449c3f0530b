"""Shared helpers for the fx_passes tests: capture a small module, apply a pass, compare numerically."""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Sequence

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from torch_tpu.frontends import capture_module
from torch_tpu.fx_passes import PassResult, check_top
from torch_tpu.graph.names import stable_name
from torch_tpu.graph.top import TopGraph


def op_counts(gm: fx.GraphModule) -> collections.Counter:
    return collections.Counter(n.target for n in gm.graph.nodes if n.op == "call_function")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are all zero)."""
    a, b = a.double(), b.double()
    denom = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / denom if denom > 0 else diff


def assert_rel(outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor], rtol: float) -> None:
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert o.shape == r.shape and o.dtype == r.dtype
        if o.dtype.is_floating_point:
            assert rel_err(o, r) <= rtol, f"relative error {rel_err(o, r):.3g} > {rtol}"
        else:
            assert torch.equal(o, r)


@dataclasses.dataclass
class PassRun:
    top: TopGraph
    result: PassResult
    before: collections.Counter
    after: collections.Counter
    names: dict[str, fx.Node]


def _random_like(inputs: Sequence[torch.Tensor], seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(t.shape, generator=g, dtype=t.dtype) if t.dtype.is_floating_point else t
                 for t in inputs)


def run_pass(model: torch.nn.Module, inputs: Sequence[torch.Tensor], pass_fn: Callable[[fx.GraphModule], PassResult],
             *, pre: Sequence[Callable] = (), rtol: float = 1e-5, samples: int = 2) -> PassRun:
    """Capture ``model``, run ``pre`` passes, then ``pass_fn``; check it against the graph before and eager."""
    model = model.eval()
    top = capture_module(model, tuple(inputs))
    for p in pre:
        p(top.gm)
    feeds = [tuple(inputs)] + [_random_like(inputs, s) for s in range(1, samples)]
    refs = [top.run_flat(*f) for f in feeds]
    with torch.no_grad():
        eager = [tuple(pytree.tree_leaves(model(*f))) for f in feeds]
    before = op_counts(top.gm)
    result = pass_fn(top.gm)
    assert isinstance(result, PassResult) and result.graph_module is top.gm
    check_top(top.gm)
    for f, ref, e in zip(feeds, refs, eager):
        out = top.run_flat(*f)
        assert_rel(out, ref, rtol)
        assert_rel(out, e, rtol)
    names = {stable_name(n): n for n in top.gm.graph.nodes if n.op != "output"}
    return PassRun(top, result, before, op_counts(top.gm), names)

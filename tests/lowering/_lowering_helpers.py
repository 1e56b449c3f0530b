"""Shared helpers of the lowering tests: capture, lower at each precision, compare with the TOP graph."""

from __future__ import annotations

from typing import Sequence

import torch

from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.top import TopGraph
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.driver import lower

#: precision -> minimum cosine similarity against the f32 TOP graph for small rule-family modules.
FAMILY_COSINE = {"bf16": 0.999, "f16": 0.999}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    denom = a.norm() * b.norm()
    if denom == 0:
        return 1.0 if torch.equal(a, b) else 0.0
    return float(a @ b / denom)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref| (0 for an all-zero reference that is matched exactly)."""
    scale = ref.double().abs().max()
    diff = (out.double() - ref.double()).abs().max()
    return float(diff / scale) if scale > 0 else float(diff)


def flat(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def check_module(model: torch.nn.Module, inputs: Sequence[torch.Tensor], *, target: str = "bm1684x",
                 precisions: Sequence[str] = ("f32", "bf16", "f16"), f32_rel: float = 1e-6,
                 min_cos: dict[str, float] | None = None) -> TopGraph:
    """Capture ``model``, lower it at each precision, check the TPU graph and compare with the TOP graph."""
    min_cos = {**FAMILY_COSINE, **(min_cos or {})}
    top = capture_module(model, tuple(inputs))
    ref = top.run_flat(*inputs)
    for p in precisions:
        tpu = lower(top.gm, target, p)
        check_tpu(tpu, target, p)
        with torch.no_grad():
            out = flat(tpu(*inputs))
        assert len(out) == len(ref)
        for o, r in zip(out, ref):
            assert o.shape == r.shape and o.dtype == r.dtype, (p, o.shape, r.shape, o.dtype, r.dtype)
            if not r.dtype.is_floating_point:
                assert torch.equal(o, r), p
            elif p == "f32":
                assert rel_err(o, r) <= f32_rel, (p, rel_err(o, r))
            else:
                assert cosine(o, r) >= min_cos[p], (p, cosine(o, r))
    return top

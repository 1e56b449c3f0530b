"""Shared helpers of the codegen tests: transform -> lower -> codegen -> run_program vs the TPU graph."""

from __future__ import annotations

from typing import Sequence

import torch

import torch_tpu
from torch_tpu.cmodel import run_program
from torch_tpu.lowering.codegen import codegen
from torch_tpu.lowering.driver import lower

#: relative error bound of f32 results (sums may differ by f32 rounding, cmodel README)
F32_REL = 1e-6


def one_step(ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One rounding step (ulp) of ``dtype`` at the magnitude of each element of ``ref`` (f32 math)."""
    mant = {torch.bfloat16: 7, torch.float16: 10}[dtype]
    tiny = torch.finfo(dtype).tiny
    r = ref.float().abs().clamp_min(tiny)
    return torch.exp2(torch.floor(torch.log2(r)) - mant)


def assert_close(out: torch.Tensor, ref: torch.Tensor, precision: str) -> None:
    """f32: relative to max |ref| within F32_REL; bf16/f16: within one rounding step of the storage dtype."""
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, ref.shape, out.dtype, ref.dtype)
    if precision == "f32":
        scale = ref.double().abs().max().clamp_min(1e-30)
        err = float((out.double() - ref.double()).abs().max() / scale)
        assert err <= F32_REL, err
    else:
        dt = {"bf16": torch.bfloat16, "f16": torch.float16}[precision]
        diff = (out.float() - ref.float()).abs()
        bound = one_step(ref, dt)
        assert bool((diff <= bound).all()), float((diff - bound).max())


def compile_module(model: torch.nn.Module, inputs: Sequence[torch.Tensor], precision: str,
                   target: str = "bm1684x"):
    """(tpu graph, Program, DdrPlan) of ``model`` at ``precision``."""
    top = torch_tpu.transform(model.eval(), tuple(inputs))
    tpu = lower(top.gm, target, precision)
    prog, plan = codegen(tpu, target, return_plan=True)
    return tpu, prog, plan


def check_codegen(model: torch.nn.Module, inputs: Sequence[torch.Tensor],
                  precisions: Sequence[str] = ("f32", "bf16"), kernels: Sequence[str] = ("c", "reference"),
                  target: str = "bm1684x"):
    """Compile at each precision and compare the cmodel (each kernel set) with the TPU graph's outputs."""
    progs = {}
    for p in precisions:
        tpu, prog, plan = compile_module(model, inputs, p, target)
        with torch.no_grad():
            ref = tpu(*inputs)
        ref = tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)
        feed = {io.name: x for io, x in zip(prog.inputs, inputs)}
        for k in kernels:
            out = run_program(prog, feed, kernels=k)
            for i, r in enumerate(ref):
                assert_close(out[f"output{i}"], r, p)
        progs[p] = (tpu, prog, plan)
    return progs

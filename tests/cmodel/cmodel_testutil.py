"""Shared helpers of the cmodel tests: random operands, tolerance checks, a sample of each instruction."""

from __future__ import annotations

import numpy as np
import torch

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.kernels_ref import from_torch, to_torch
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor


def rand(shape, dtype: DType, gen: torch.Generator, lo: int = -128, hi: int = 128, scale: float = 1.0) -> np.ndarray:
    """Random storage array: floats ~ N(0, scale) rounded to the dtype, integers uniform in [lo, hi)."""
    if dtype.is_float:
        return from_torch(torch.randn(shape, generator=gen) * scale, dtype)
    info = torch.iinfo(dtype.torch)
    return from_torch(torch.randint(max(lo, info.min), min(hi, info.max + 1), shape, generator=gen), dtype)


def as_f64(a: np.ndarray, dtype: DType) -> torch.Tensor:
    return to_torch(a, dtype).to(torch.float64)


def ulp(dtype: DType, mag: torch.Tensor) -> torch.Tensor:
    """Spacing of the dtype's values at magnitude ``mag`` (normal range; subnormal floor)."""
    mant = {DType.F32: 23, DType.F16: 10, DType.BF16: 7}[dtype]
    tiny = {DType.F32: 2.0 ** -126, DType.F16: 2.0 ** -14, DType.BF16: 2.0 ** -126}[dtype]
    e = torch.floor(torch.log2(torch.clamp(mag, min=tiny)))
    return torch.pow(2.0, e - mant)


def assert_float_close(got: np.ndarray, want: np.ndarray, dtype: DType, f32_rtol: float, atol: float = 0.0) -> None:
    """Equal up to f32 computation differences of relative size ``f32_rtol`` plus one rounding step of
    the output dtype (two results of different f32 summation orders can land on the two sides of a tie)."""
    g, w = as_f64(got, dtype), as_f64(want, dtype)
    assert torch.equal(torch.isnan(g), torch.isnan(w)), "NaN positions differ"
    g, w = torch.nan_to_num(g), torch.nan_to_num(w)
    mag = torch.maximum(g.abs(), w.abs())
    tol = mag * f32_rtol + atol + (ulp(dtype, mag) if dtype != DType.F32 else 0.0)
    bad = (g - w).abs() > tol
    assert not bad.any(), (f"{int(bad.sum())} of {bad.numel()} differ; worst {float((g - w).abs().max())} "
                           f"at got {g[bad][:3].tolist()} want {w[bad][:3].tolist()}")


def L(lane, addr, shape, dt="f32") -> LocalTensor:
    return LocalTensor(lane, addr, tuple(shape), DType.parse(dt))


def sample_instructions() -> list[isa.Instruction]:
    """One instruction of every opcode, valid on bm1684x."""
    f = lambda addr, shape, dt="f32": L(0, addr, shape, dt)  # noqa: E731
    x = f(0, (1, 4, 8, 8))
    return [
        isa.DmaLoad(id=0, layer="in", src=DdrTensor.contiguous(0, (1, 4, 8, 8), DType.F32), dst=x),
        isa.Conv2d(id=1, deps=(0,), layer="conv", x=x, w=f(1024, (1, 8, 1, 36)), bias=f(2048, (1, 8, 1, 1)),
                   out=f(4096, (1, 8, 8, 8)), kernel=(3, 3), pad=(1, 1, 1, 1), act="clip", act_lo=-1.0, act_hi=2.5),
        isa.MatMul(id=2, a=f(0, (2, 4, 1, 8)), b=f(1024, (1, 8, 1, 16)), out=f(2048, (2, 4, 1, 16))),
        isa.Eltwise(id=3, op="add", a=x, b=f(1024, (1, 4, 1, 8)), out=f(2048, (1, 4, 8, 8))),
        isa.Eltwise(id=4, op="mul", a=x, scalar=0.5, out=f(2048, (1, 4, 8, 8))),
        isa.Activation(id=5, op="leaky_relu", x=x, out=f(2048, (1, 4, 8, 8)), alpha=0.1),
        isa.Pool2d(id=6, mode="avg", x=x, out=f(2048, (1, 4, 4, 4)), kernel=(2, 2), stride=(2, 2),
                   count_include_pad=False),
        isa.Lut(id=7, x=f(0, (1, 4, 8, 8), "int8"), table=f(1024, (1, 1, 1, 256), "int8"),
                out=f(2048, (1, 4, 8, 8), "int8")),
        isa.Requant(id=8, x=f(0, (1, 4, 8, 8), "int32"), out=f(1024, (1, 4, 8, 8), "int8"),
                    multiplier=(1 << 30, 1 << 29, 3, 5), shift=(31, 30, 1, 0), zero_point=-3),
        isa.Cast(id=9, x=x, out=f(2048, (1, 4, 8, 8), "int8"), scale=0.05, zero_point=2, round_mode="half_even"),
        isa.Reduce(id=10, op="max", x=x, out=f(2048, (1, 4, 1, 1)), axes=(2, 3)),
        isa.Softmax(id=11, x=x, out=f(2048, (1, 4, 8, 8)), axis=3, log=True),
        isa.LayerNorm(id=12, x=x, weight=f(1024, (1, 1, 1, 8)), bias=None, out=f(2048, (1, 4, 8, 8)), axis=3,
                      eps=1e-6),
        isa.DmaStore(id=13, deps=(12,), src=x, dst=DdrTensor(256, (1, 4, 8, 8), (256, 64, 8, 1), DType.F32)),
        isa.DmaCopy(id=14, src=DdrTensor(0, (1, 4, 8, 8), (256, 1, 32, 4), DType.F32),
                    dst=DdrTensor.contiguous(1024, (1, 4, 8, 8), DType.F32)),
        isa.Compare(id=15, op="ge", a=x, scalar=float("-inf"), out=f(2048, (1, 4, 8, 8), "uint8")),
        isa.Select(id=16, cond=f(2048, (1, 4, 8, 1), "uint8"), a=x, b=f(1024, (1, 1, 8, 8)), out=f(4096, (1, 4, 8, 8))),
        isa.Gather(id=17, table=f(0, (1, 70, 1, 8)), index=f(1024, (1, 5, 1, 1), "int32"), prev=f(2048, (1, 5, 1, 8)),
                   out=f(2048, (1, 5, 1, 8)), base=64),
        isa.QAdd(id=18, a=f(0, (1, 4, 8, 8), "int8"), b=f(1024, (1, 4, 8, 8), "uint8"), out=f(2048, (1, 4, 8, 8), "int8"),
                 op="sub", a_zp=3, a_multiplier=1 << 20, a_shift=12, b_zp=-128, b_multiplier=3 << 19, b_shift=12,
                 multiplier=1 << 30, shift=38, zero_point=-2, qmin=0, qmax=127),
    ]


def assert_allclose(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> None:
    """|got - want| <= atol + rtol |want| elementwise, same shape and dtype (torch.testing's first call
    imports torch.distributed, seconds on a small machine)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    diff = (got.double() - want.double()).abs()
    bad = diff > atol + rtol * want.double().abs()
    assert not bad.any(), f"{int(bad.sum())} of {bad.numel()} differ, worst {float(diff.max())}"

"""Helpers for the op tests: an f64 formula is the independent reference; the op must equal it rounded
once to the op's dtype (f32: within f32 accumulation error)."""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

LOW = (torch.bfloat16, torch.float16)


def assert_rounded_once(out: torch.Tensor, ref64: torch.Tensor, dtype: torch.dtype, *, f32_rtol: float = 1e-5,
                        ulps: int = 1, atol: float = 0.0) -> None:
    """``out`` (dtype) is ``ref64`` rounded to dtype, up to ``ulps`` units in the last place (f32 accumulation
    order can move a value across a rounding boundary); f32 within ``f32_rtol`` of the f64 value. ``atol``
    admits the absolute error of an f32 formula with cancellation (gelu's ``1 + erf(x)`` for x << 0)."""
    assert out.dtype == dtype and out.shape == ref64.shape, (out.dtype, out.shape, ref64.shape)
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), ref64, rtol=f32_rtol, atol=max(f32_rtol, atol))
        return
    expect = ref64.to(dtype)
    # one ulp of dtype at the magnitude of the value
    eps = torch.finfo(dtype).eps
    tiny = torch.finfo(dtype).tiny
    ulp = (expect.double().abs() * eps).clamp_min(tiny)
    err = (out.double() - expect.double()).abs()
    assert bool((err <= ulps * ulp + atol + 1e-30).all()), float((err / ulp).max())
    # and most values are exactly the once-rounded value
    assert float((out == expect).double().mean()) >= (0.97 if atol == 0 else 0.9)


def assert_fake_matches(op, *args, **kwargs) -> torch.Tensor:
    """Run ``op`` for real and on fake tensors; shapes and dtypes must agree. Returns the real output."""
    real = op(*args, **kwargs)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else
             [mode.from_tensor(t) for t in a] if isinstance(a, list) and a and isinstance(a[0], torch.Tensor) else a
             for a in args]
    with mode:
        fake = op(*fargs, **kwargs)
    assert fake.shape == real.shape and fake.dtype == real.dtype, (op, fake.shape, real.shape)
    return real

"""Element-wise, comparison, logic and activation ops against f64 formulas written out here."""

import math

import pytest
import torch

import torch_tpu.tpu_ops  # noqa: F401
from _ops_helpers import assert_fake_matches, assert_rounded_once

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
tpu = torch.ops.tpu

BINARY64 = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
    "maximum": lambda a, b: torch.where(a > b, a, b), "minimum": lambda a, b: torch.where(a < b, a, b),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(BINARY64))
def test_binary_broadcast_and_const(dtype, name):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 3, 4, generator=g).to(dtype)
    b = (torch.rand(3, 1, generator=g) + 0.5).to(dtype)
    out = assert_fake_matches(getattr(tpu, name), a, b)
    assert_rounded_once(out, BINARY64[name](a.double(), b.double()), dtype)
    c = 0.7
    c32 = float(torch.tensor(c, dtype=torch.float32))
    out = assert_fake_matches(getattr(tpu, f"{name}_const"), a, c)
    assert_rounded_once(out, BINARY64[name](a.double(), torch.full_like(a.double(), c32)), dtype)
    out = getattr(tpu, f"{name}_const")(b, c, True)
    assert_rounded_once(out, BINARY64[name](torch.full_like(b.double(), c32), b.double()), dtype)


def test_compare_logic_where():
    a = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, -0.0]], dtype=torch.bfloat16)
    b = torch.tensor([0.5, -2.0, 4.0], dtype=torch.bfloat16)
    expect = {"eq": [[0, 1, 0], [1, 0, 0]], "ne": [[1, 0, 1], [0, 1, 1]], "lt": [[0, 0, 1], [0, 0, 1]],
              "le": [[0, 1, 1], [1, 0, 1]], "gt": [[1, 0, 0], [0, 1, 0]], "ge": [[1, 1, 0], [1, 1, 0]]}
    for name, e in expect.items():
        out = assert_fake_matches(getattr(tpu, name), a, b)
        assert out.dtype == torch.bool and out.tolist() == [[bool(v) for v in row] for row in e], name
    assert tpu.gt_const(a, 0.75).tolist() == [[True, False, True], [False, False, False]]
    m = tpu.gt_const(a, 0.0)
    assert tpu.logical_not(m).tolist() == [[False, True, False], [False, False, True]]
    assert tpu.logical_and(m, tpu.lt_const(a, 2.0)).tolist() == [[True, False, False], [True, True, False]]
    assert tpu.logical_or(m, tpu.eq_const(a, -2.0)).tolist() == [[True, True, True], [True, True, False]]
    w = assert_fake_matches(tpu.where, m, a, b)
    assert w.tolist() == [[1.0, -2.0, 3.0], [0.5, 0.5, 4.0]] and w.dtype == torch.bfloat16


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


UNARY64 = {
    "relu": lambda x: x.clamp_min(0), "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "silu": lambda x: x / (1 + torch.exp(-x)), "tanh": torch.tanh,
    "hardswish": lambda x: x * (x + 3).clamp(0, 6) / 6, "hardsigmoid": lambda x: (x + 3).clamp(0, 6) / 6,
    "exp": torch.exp, "erf": torch.erf, "log": lambda x: torch.log(x.abs() + 0.1),
    "sqrt": lambda x: torch.sqrt(x.abs()), "rsqrt": lambda x: 1 / torch.sqrt(x.abs() + 0.1),
    "neg": lambda x: -x, "abs": torch.abs,
}
POSITIVE = {"log": 0.1, "sqrt": 0.0, "rsqrt": 0.1}


@pytest.mark.parametrize("dtype", DTYPES)
def test_unary(dtype):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 64, generator=g) * 3).to(dtype)
    for name, f in UNARY64.items():
        inp = (x.abs() + POSITIVE[name]).to(dtype) if name in POSITIVE else x
        ref = f(x.double()) if name not in POSITIVE else {
            "log": torch.log, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt}[name](inp.double())
        out = assert_fake_matches(getattr(tpu, name), inp)
        assert_rounded_once(out, ref, dtype, ulps=2)
    xd = x.double()
    cases = [
        (tpu.leaky_relu(x, 0.1), torch.where(xd >= 0, xd, 0.1 * xd)),
        (tpu.clip(x, -1.0, 2.0), xd.clamp(-1, 2)),
        (tpu.gelu(x, "none"), 0.5 * xd * (1 + torch.erf(xd / math.sqrt(2)))),
        (tpu.gelu(x, "tanh"), _gelu_tanh(xd)),
        (tpu.pow(x.abs().to(dtype), 1.5), x.abs().double() ** 1.5),
    ]
    for k, (out, ref) in enumerate(cases):
        # f32 gelu loses absolute accuracy ~1e-7 to cancellation in 1 + erf(x) / 1 + tanh(x) for x << 0
        assert_rounded_once(out, ref, dtype, ulps=2, atol=1e-6 if k in (2, 3) else 0.0)

"""Requantization in C and in the reference against a pure-Python integer model (and fixed_point.py)."""

import numpy as np
import pytest
import torch
from cmodel_testutil import L

from torch_tpu.cmodel import isa, kernels_c, kernels_ref


def py_requant(x: int, m: int, s: int, zp: int, lo: int, hi: int) -> int:
    """sat(round_half_away_from_zero(x * m / 2^s) + zp), in Python's exact integers."""
    v = x * m
    if s > 0:
        q, r = divmod(abs(v), 1 << s)
        q += 1 if 2 * r >= (1 << s) else 0
        v = q if v >= 0 else -q
    return min(max(v + zp, lo), hi)


@pytest.mark.parametrize("out_dt, lo, hi", [("int8", -128, 127), ("uint8", 0, 255), ("int32", -2**31, 2**31 - 1)])
def test_requant_matches_python_integer_model(out_dt, lo, hi):
    gen = torch.Generator().manual_seed(5)
    c = 6
    x = torch.randint(-2**31, 2**31 - 1, (1, c, 7, 11), generator=gen, dtype=torch.int64)
    x.view(-1)[:8] = torch.tensor([0, 1, -1, 2**31 - 1, -2**31, 3, -3, 1 << 20])
    mult = (0, 1, 1 << 30, (1 << 31) - 1, 1518500250, 12345)
    shift = (0, 1, 31, 63, 37, 5)
    # exact ties: x * m / 2^s = k + 1/2 for channel 1 (m = 1, s = 1, odd x)
    inst = isa.Requant(id=0, x=L(0, 0, x.shape, "int32"), out=L(0, 0, x.shape, out_dt), multiplier=mult,
                       shift=shift, zero_point=-7 if out_dt != "uint8" else 100)
    xs = x.to(torch.int32).numpy()
    want = np.array([[[[py_requant(int(xs[0, ci, h, w]), mult[ci], shift[ci], inst.zero_point, lo, hi)
                        for w in range(11)] for h in range(7)] for ci in range(c)]])
    for kernels in (kernels_c, kernels_ref):
        got = kernels.requant(inst, [xs])
        assert np.array_equal(got.astype(np.int64), want), kernels.__name__


def test_requant_agrees_with_fixed_point_module():
    fixed_point = pytest.importorskip("torch_tpu.fixed_point")
    gen = torch.Generator().manual_seed(9)
    acc = torch.randint(-2**24, 2**24, (2, 4, 3, 3), generator=gen, dtype=torch.int32)
    m, s = fixed_point.quantize_multiplier(torch.tensor([0.0123, 0.5, 1.7e-4, 0.03], dtype=torch.float64))
    inst = isa.Requant(id=0, x=L(0, 0, acc.shape, "int32"), out=L(0, 0, acc.shape, "int8"),
                       multiplier=tuple(int(v) for v in m), shift=tuple(int(v) for v in s), zero_point=5)
    want = fixed_point.requantize(acc, m, s, 5, axis=1)
    got = kernels_c.requant(inst, [acc.numpy()])
    assert np.array_equal(got.astype(np.int64), want.to(torch.int64).numpy())

"""fixed_point against a pure-Python integer model (Python ints and Fractions, no torch)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from torch_tpu import fixed_point as fp
from torch_tpu.fixed_point import FixedPointError

INT32 = st.integers(-(2 ** 31) + 1, 2 ** 31 - 1)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Scalar-sized ops: one intra-op thread avoids OpenMP waits on a loaded machine (restored after)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def py_round(fr: Fraction, mode: str) -> int:
    """Round a rational to an integer: the definition every mode is checked against."""
    fl = math.floor(fr)
    rem = fr - fl                       # in [0, 1)
    if mode == "floor":
        return fl
    if mode == "up":
        return fl + (rem > 0)
    if mode == "toward_zero":
        return fl + (rem > 0 and fr < 0)
    if rem != Fraction(1, 2):
        return fl + (rem > Fraction(1, 2))
    # ties
    return {"half_up": fl + 1, "half_down": fl, "half_even": fl + (fl % 2),
            "half_away_from_zero": fl + 1 if fr > 0 else fl}[mode]


def py_requant(acc: int, m: int, s: int, zp: int, mode: str, qmin: int, qmax: int) -> int:
    return max(qmin, min(qmax, py_round(Fraction(acc * m, 2 ** s), mode) + zp))


@settings(max_examples=300, deadline=None)
@given(x=st.integers(-(2 ** 62), 2 ** 62), s=st.integers(0, 63), mode=st.sampled_from(fp.ROUNDING_MODES))
def test_rounding_right_shift_matches_python(x, s, mode):
    got = int(fp.rounding_right_shift(torch.tensor(x), s, mode))
    assert got == py_round(Fraction(x, 2 ** s), mode)


@pytest.mark.parametrize("mode", fp.ROUNDING_MODES)
def test_rounding_ties_and_negatives(mode):
    xs = [5, -5, 6, -6, 7, -7, 2, -2, 3, -3, 1, -1, 0, 2 ** 62, -(2 ** 62)]
    for s in (0, 1, 2, 62, 63):
        got = fp.rounding_right_shift(torch.tensor(xs), s, mode).tolist()
        assert got == [py_round(Fraction(x, 2 ** s), mode) for x in xs], (s, mode)
    # per-element shifts broadcast
    got = fp.rounding_right_shift(torch.tensor(xs[:4]), torch.tensor([1, 1, 2, 2]), mode).tolist()
    assert got == [py_round(Fraction(x, 2 ** s), mode) for x, s in zip(xs[:4], [1, 1, 2, 2])]


def test_known_tie_values():
    x = torch.tensor([5, -5, 3, -3])         # /2: 2.5 -2.5 1.5 -1.5
    assert fp.rounding_right_shift(x, 1, "half_away_from_zero").tolist() == [3, -3, 2, -2]
    assert fp.rounding_right_shift(x, 1, "half_even").tolist() == [2, -2, 2, -2]
    assert fp.rounding_right_shift(x, 1, "half_up").tolist() == [3, -2, 2, -1]
    assert fp.rounding_right_shift(x, 1, "floor").tolist() == [2, -3, 1, -2]


@settings(max_examples=300, deadline=None)
@given(acc=INT32, real=st.floats(1e-12, 2.0 ** 31 - 1, allow_nan=False), zp=st.integers(-128, 127),
       mode=st.sampled_from(fp.ROUNDING_MODES), signed=st.booleans())
def test_requantize_matches_python(acc, real, zp, mode, signed):
    m, s = fp.quantize_multiplier(real)
    qmin, qmax = fp.qrange(8, signed)
    got = int(fp.requantize(torch.tensor(acc), m, s, zp, rounding=mode, qmin=qmin, qmax=qmax))
    assert got == py_requant(acc, int(m), int(s), zp, mode, qmin, qmax)


@settings(max_examples=300, deadline=None)
@given(real=st.floats(0.0, 2.0 ** 31 - 1, allow_nan=False))
def test_quantize_multiplier_range_and_error(real):
    m, s = fp.quantize_multiplier(real)
    m, s = int(m), int(s)
    assert 0 <= s <= fp.MAX_SHIFT
    if real == 0:
        assert (m, s) == (0, 0)
        return
    if s < fp.MAX_SHIFT:
        assert 2 ** 30 <= m < 2 ** 31
    assert abs(Fraction(real) - Fraction(m, 2 ** s)) <= Fraction(1, 2 ** (s + 1))


def test_quantize_multiplier_vectorized_per_channel():
    reals = np.array([0.5, 0.25, 1.0, 0.001, 3.75, 1e-20])
    m, s = fp.quantize_multiplier(reals)
    assert m.dtype == torch.int32 and m.shape == (6,)
    for r, mi, si in zip(reals, m.tolist(), s.tolist()):
        m1, s1 = fp.quantize_multiplier(float(r))
        assert (mi, si) == (int(m1), int(s1))
        assert abs(mi * 2.0 ** -si - r) <= 2.0 ** -(si + 1)
    assert m[0].item() == 2 ** 30 and s[0].item() == 31
    with pytest.raises(FixedPointError, match="quantize_multiplier"):
        fp.quantize_multiplier([-1.0])
    with pytest.raises(FixedPointError):
        fp.quantize_multiplier(float("inf"))


def test_requantize_per_channel_and_saturation():
    acc = torch.tensor([[[1000, -1000]], [[100000, -100000]]]).permute(1, 0, 2)   # shape (1, 2, 2), channel axis 1
    m, s = fp.quantize_multiplier([0.01, 0.5])
    out = fp.requantize(acc, m, s, axis=1)
    ref = [[py_requant(a, int(m[c]), int(s[c]), 0, "half_away_from_zero", -128, 127) for a in acc[0, c].tolist()]
           for c in range(2)]
    assert out[0].tolist() == ref
    assert out[0, 1].tolist() == [127, -128]          # saturated
    with pytest.raises(FixedPointError, match="rounding mode"):
        fp.requantize(acc, m, s, rounding="nearest")


def test_scales_and_quantize_dequantize():
    assert fp.scale_from_threshold(12.7) == pytest.approx(0.1)
    assert fp.scale_from_threshold(25.5, symmetric=False) == pytest.approx(0.1)
    scale, zp = fp.asymmetric_qparams(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255) and -128 <= zp <= 127
    # 0.0 is exactly representable and min/max map near the ends
    assert fp.dequantize(fp.quantize(torch.tensor([0.0]), scale, zp), scale, zp).item() == 0.0
    q = fp.quantize(torch.tensor([-1.0, 3.0]), scale, zp)
    assert q.tolist() == [-128, 127]
    x = torch.linspace(-2, 2, 101)
    s = fp.scale_from_threshold(1.0)
    y = fp.fake_quantize(x, s)
    inside = x.abs() <= 1.0
    assert (y[inside] - x[inside]).abs().max() <= s / 2 + 1e-7
    assert y.max() == pytest.approx(1.0) and y.min() == pytest.approx(-128 / 127)   # int8 keeps -128
    # per-channel along axis 0 (weights)
    w = torch.tensor([[1.0, -0.5], [10.0, 5.0]])
    ws = fp.scale_from_threshold(w.abs().amax(1))
    qw = fp.quantize(w, ws, axis=0)
    assert qw.tolist() == [[127, -64], [127, 64]]


@settings(max_examples=200, deadline=None)
@given(v=st.floats(-1e4, 1e4, allow_nan=False, width=32), mode=st.sampled_from(fp.ROUNDING_MODES))
def test_round_float_matches_integer_definition(v, mode):
    got = fp.round_float(torch.tensor(v, dtype=torch.float64), mode).item()
    assert got == py_round(Fraction(v), mode)

"""The float-output INT8 MACs (``tpu.conv2d_int8_f32`` / ``linear_int8_f32`` / ``matmul_int8_f32``) against a
pure-Python model: the accumulator in Python ints (loops), then numpy float32 arithmetic for
``clamp(f32(acc) * f32(scale), lo, hi)``, compared bit for bit. Biases near 2^28 make the int -> f32
conversion round, so the order of the two roundings is tested too."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from torch_tpu.tpu_ops import define_all

define_all()
tpu = torch.ops.tpu
FAST = settings(max_examples=10, deadline=None)

zp = st.integers(-20, 20)
scale = st.floats(min_value=1e-6, max_value=0.5).map(lambda v: float(np.float32(v)))
big_bias = st.integers(2 ** 25, 2 ** 28).flatmap(lambda v: st.sampled_from([v, -v]))
bound = st.one_of(st.none(), st.floats(min_value=-50.0, max_value=50.0).map(lambda v: float(np.float32(v))))


def int8_tensor(shape):
    n = int(np.prod(shape))
    return st.lists(st.integers(-128, 127), min_size=n, max_size=n).map(
        lambda v: torch.tensor(v, dtype=torch.int8).reshape(shape))


def py_f32(acc: int, s: float, lo: float | None, hi: float | None) -> np.float32:
    """``clamp(f32(acc) * f32(s), lo, hi)`` in numpy float32 (each operation rounded to single precision)."""
    y = np.float32(acc) * np.float32(s)
    if lo is not None:
        y = max(y, np.float32(lo))
    if hi is not None:
        y = min(y, np.float32(hi))
    return np.float32(y)


def same_bits(got: torch.Tensor, index: tuple, expect: np.float32) -> bool:
    return got[index].numpy().view(np.int32) == np.array(expect, dtype=np.float32).view(np.int32)


@FAST
@given(x=int8_tensor((1, 2, 4, 5)), w=int8_tensor((4, 1, 2, 3)), data=st.data(), x_zp=zp)
def test_conv2d_int8_f32(x, w, data, x_zp):
    groups, stride, dil, pad = 2, [1, 2], [1, 1], [1, 0, 2, 1]
    bias = [data.draw(big_bias) for _ in range(4)]
    scales = [data.draw(scale) for _ in range(4)]
    lo, hi = data.draw(bound), data.draw(bound)
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    y = tpu.conv2d_int8_f32(x, w, torch.tensor(bias, dtype=torch.int32), stride, pad, dil, groups,
                            torch.tensor(scales, dtype=torch.float32), x_zp, lo, hi)
    X, W = x.tolist()[0], w.tolist()
    ho, wo = (4 + 1 - 2) // 1 + 1, (5 + 3 - 3) // 2 + 1
    assert tuple(y.shape) == (1, 4, ho, wo) and y.dtype == torch.float32
    for o, i, j in itertools.product(range(4), range(ho), range(wo)):
        acc = bias[o]
        for u, v in itertools.product(range(2), range(3)):
            r, q = i * stride[0] + u - pad[0], j * stride[1] + v - pad[2]
            xv = X[o // 2][r][q] if 0 <= r < 4 and 0 <= q < 5 else x_zp
            acc += (xv - x_zp) * W[o][0][u][v]
        assert same_bits(y, (0, o, i, j), py_f32(acc, scales[o], lo, hi)), (o, i, j)


@FAST
@given(x=int8_tensor((3, 5)), w=int8_tensor((4, 5)), data=st.data(), x_zp=zp)
def test_linear_int8_f32(x, w, data, x_zp):
    bias = [data.draw(big_bias) for _ in range(4)]
    scales = [data.draw(scale) for _ in range(4)]
    y = tpu.linear_int8_f32(x, w, torch.tensor(bias, dtype=torch.int32), torch.tensor(scales), x_zp, 0.0, None)
    X, W = x.tolist(), w.tolist()
    assert y.dtype == torch.float32
    for r, o in itertools.product(range(3), range(4)):
        acc = bias[o] + sum((X[r][k] - x_zp) * W[o][k] for k in range(5))
        assert same_bits(y, (r, o), py_f32(acc, scales[o], 0.0, None)), (r, o)


@FAST
@given(a=int8_tensor((2, 3, 4)), b=int8_tensor((1, 4, 2)), s=scale, a_zp=zp, b_zp=zp)
def test_matmul_int8_f32(a, b, s, a_zp, b_zp):
    s = float(np.float32(s))
    y = tpu.matmul_int8_f32(a, b, s, a_zp, b_zp)
    A, B = a.tolist(), b.tolist()[0]
    for bb, i, j in itertools.product(range(2), range(3), range(2)):
        acc = sum((A[bb][i][k] - a_zp) * (B[k][j] - b_zp) for k in range(4))
        assert same_bits(y, (bb, i, j), py_f32(acc, s, None, None))


def test_f32_form_shares_the_int8_form_accumulator():
    """Same operands: the int8 form is the f32 form's accumulator requantized; with a scale of 1 the f32 form
    IS the accumulator (exact below 2^24)."""
    torch.manual_seed(0)
    x = torch.randint(-128, 128, (2, 3, 6, 6), dtype=torch.int8)
    w = torch.randint(-127, 128, (5, 3, 3, 3), dtype=torch.int8)
    b = torch.randint(-1000, 1000, (5,), dtype=torch.int32)
    acc = tpu.conv2d_int8_f32(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 1, torch.ones(5), 7)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x.double() - 7, [1, 1, 1, 1]), w.double()) + \
        b.double().reshape(1, -1, 1, 1)
    assert torch.equal(acc.double(), ref)
    relu = tpu.conv2d_int8_f32(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 1, torch.full((5,), 0.5), 7, 0.0, None)
    assert torch.equal(relu, torch.relu(acc * 0.5))


def test_rounding_order_is_int_to_f32_then_the_product():
    """Accumulators above 2^24 round when converted to f32; the product then rounds again. A single rounding of
    the exact product differs for some of these, and the op must give the two-step result."""
    accs = torch.tensor([2 ** 25 + 1, 2 ** 25 + 3, -(2 ** 26) - 5, 2 ** 27 + 7, 123456789, -98765433])
    n = len(accs)
    x, w = torch.zeros(1, 4, dtype=torch.int8), torch.zeros(n, 4, dtype=torch.int8)     # acc = bias
    s = float(np.float32(0.1))
    y = tpu.linear_int8_f32(x, w, accs.to(torch.int32), torch.full((n,), s), 0)
    two_step = [py_f32(int(a), s, None, None) for a in accs]
    one_step = [np.float32(float(a) * s) for a in accs]
    assert any(t != o for t, o in zip(two_step, one_step))
    assert all(same_bits(y, (0, i), t) for i, t in enumerate(two_step))

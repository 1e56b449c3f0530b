"""INT8 TPU ops against a pure-Python integer model (Python ints, loops), bit-exact, with hypothesis."""

from __future__ import annotations

import itertools

import torch
from hypothesis import given, settings, strategies as st

from torch_tpu.fixed_point import quantize_multiplier
from torch_tpu.tpu_ops import define_all

define_all()
tpu = torch.ops.tpu
FAST = settings(max_examples=12, deadline=None)


# -- the pure-Python integer model ------------------------------------------------------------------
def py_shift(v: int, s: int) -> int:
    """round(v / 2^s), half away from zero."""
    if s == 0:
        return v
    q = (abs(v) + (1 << (s - 1))) >> s
    return q if v >= 0 else -q


def py_requant(acc: int, m: int, s: int, zp: int = 0, qmin: int = -128, qmax: int = 127) -> int:
    return max(qmin, min(qmax, py_shift(acc * m, s) + zp))


def py_round_half_away(x: float) -> int:
    import math
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def ints(t: torch.Tensor) -> list:
    return t.tolist()


def int8_tensor(shape):
    n = 1
    for d in shape:
        n *= d
    return st.lists(st.integers(-128, 127), min_size=n, max_size=n).map(
        lambda v: torch.tensor(v, dtype=torch.int8).reshape(shape))


factor = st.floats(min_value=1e-4, max_value=4.0, allow_nan=False)
zp = st.integers(-20, 20)


def mult(r: float) -> tuple[int, int]:
    m, s = quantize_multiplier(r)
    return int(m), int(s)


# -- conv / linear / matmul ------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(x=int8_tensor((1, 2, 4, 5)), w=int8_tensor((4, 1, 2, 3)), data=st.data(), x_zp=zp, out_zp=zp)
def test_conv2d_int8(x, w, data, x_zp, out_zp):
    groups, stride, dil, pad = 2, [1, 2], [1, 1], [1, 0, 2, 1]
    bias = [data.draw(st.integers(-5000, 5000)) for _ in range(4)]
    mults = [mult(data.draw(factor) / 64) for _ in range(4)]
    qmin = data.draw(st.sampled_from([-128, out_zp]))
    y = tpu.conv2d_int8(x, w, torch.tensor(bias, dtype=torch.int32), stride, pad, dil, groups,
                        torch.tensor([m for m, _ in mults], dtype=torch.int32),
                        torch.tensor([s for _, s in mults]), x_zp, out_zp, qmin, 127)
    X, W = ints(x)[0], ints(w)
    H, Wd = 4, 5
    ho = (H + 1 - 2) // 1 + 1
    wo = (Wd + 3 - 3) // 2 + 1
    assert tuple(y.shape) == (1, 4, ho, wo) and y.dtype == torch.int8
    for o, i, j in itertools.product(range(4), range(ho), range(wo)):
        g = o // 2
        acc = bias[o]
        for c, u, v in itertools.product(range(1), range(2), range(3)):
            r, q = i * stride[0] + u - pad[0], j * stride[1] + v - pad[2]
            xv = X[g + c][r][q] if 0 <= r < H and 0 <= q < Wd else x_zp
            acc += (xv - x_zp) * W[o][c][u][v]
        assert int(y[0, o, i, j]) == py_requant(acc, *mults[o], out_zp, qmin, 127)


@FAST
@given(x=int8_tensor((3, 5)), w=int8_tensor((4, 5)), data=st.data(), x_zp=zp, out_zp=zp)
def test_linear_int8(x, w, data, x_zp, out_zp):
    bias = [data.draw(st.integers(-3000, 3000)) for _ in range(4)]
    mults = [mult(data.draw(factor) / 32) for _ in range(4)]
    y = tpu.linear_int8(x, w, torch.tensor(bias, dtype=torch.int32),
                        torch.tensor([m for m, _ in mults], dtype=torch.int32), torch.tensor([s for _, s in mults]),
                        x_zp, out_zp)
    X, W = ints(x), ints(w)
    for r, o in itertools.product(range(3), range(4)):
        acc = bias[o] + sum((X[r][k] - x_zp) * W[o][k] for k in range(5))
        assert int(y[r, o]) == py_requant(acc, *mults[o], out_zp)


@FAST
@given(a=int8_tensor((2, 3, 4)), b=int8_tensor((1, 4, 2)), f=factor, a_zp=zp, b_zp=zp, out_zp=zp)
def test_matmul_int8(a, b, f, a_zp, b_zp, out_zp):
    m, s = mult(f / 256)
    y = tpu.matmul_int8(a, b, m, s, a_zp, b_zp, out_zp)
    A, B = ints(a), ints(b)[0]
    for bb, i, j in itertools.product(range(2), range(3), range(2)):
        acc = sum((A[bb][i][k] - a_zp) * (B[k][j] - b_zp) for k in range(4))
        assert int(y[bb, i, j]) == py_requant(acc, m, s, out_zp)


# -- element-wise ---------------------------------------------------------------------------------
@FAST
@given(a=int8_tensor((2, 3)), b=int8_tensor((1, 3)), fa=factor, fb=factor, a_zp=zp, b_zp=zp, out_zp=zp,
       sub=st.booleans())
def test_add_sub_int8(a, b, fa, fb, a_zp, b_zp, out_zp, sub):
    (ma, sa), (mb, sb), (mo, so) = mult(fa * 256), mult(fb * 256), mult(1 / 256)
    op = tpu.sub_int8 if sub else tpu.add_int8
    y = op(a, b, ma, sa, mb, sb, mo, so, a_zp, b_zp, out_zp)
    A, B = ints(a), ints(b)[0]
    for i, j in itertools.product(range(2), range(3)):
        ta, tb = py_shift((A[i][j] - a_zp) * ma, sa), py_shift((B[j] - b_zp) * mb, sb)
        assert int(y[i, j]) == py_requant(ta - tb if sub else ta + tb, mo, so, out_zp)


@FAST
@given(a=int8_tensor((2, 3)), b=int8_tensor((2, 3)), f=factor, a_zp=zp, b_zp=zp, out_zp=zp)
def test_mul_int8(a, b, f, a_zp, b_zp, out_zp):
    m, s = mult(f / 128)
    y = tpu.mul_int8(a, b, m, s, a_zp, b_zp, out_zp)
    for (i, j), av in zip(itertools.product(range(2), range(3)), a.flatten().tolist()):
        assert int(y[i, j]) == py_requant((av - a_zp) * (int(b[i, j]) - b_zp), m, s, out_zp)


@FAST
@given(x0=int8_tensor((1, 2, 2)), x1=int8_tensor((1, 1, 2)), f0=factor, f1=factor, z0=zp, z1=zp, out_zp=zp)
def test_concat_int8(x0, x1, f0, f1, z0, z1, out_zp):
    (m0, s0), (m1, s1) = mult(f0), mult(f1)
    y = tpu.concat_int8([x0, x1], 1, [m0, m1], [s0, s1], [z0, z1], out_zp)
    expect = [[py_requant(v - z0, m0, s0, out_zp) for v in row] for row in ints(x0)[0]] + \
             [[py_requant(v - z1, m1, s1, out_zp) for v in row] for row in ints(x1)[0]]
    assert ints(y)[0] == expect


@FAST
@given(x=int8_tensor((7,)), f=factor, x_zp=zp, out_zp=zp)
def test_requant_int8(x, f, x_zp, out_zp):
    m, s = mult(f)
    assert ints(tpu.requant_int8(x, m, s, x_zp, out_zp)) == [py_requant(v - x_zp, m, s, out_zp) for v in ints(x)]


@FAST
@given(x=int8_tensor((9,)), table=int8_tensor((256,)))
def test_lut_int8(x, table):
    T = ints(table)
    assert ints(tpu.lut_int8(x, table)) == [T[v] if v >= 0 else T[256 + v] for v in ints(x)]


@FAST
@given(x=st.lists(st.floats(-50, 50, width=32), min_size=6, max_size=6), scale=st.floats(0.01, 2.0), z=zp)
def test_quantize_dequantize_int8(x, scale, z):
    xt = torch.tensor(x, dtype=torch.float32)
    s32 = float(torch.tensor(scale, dtype=torch.float32))
    q = tpu.quantize_int8(xt, scale, z)
    expect = []
    for v in xt.tolist():   # the division happens in f32
        r = float(torch.tensor(v, dtype=torch.float32) / torch.tensor(s32, dtype=torch.float32))
        expect.append(max(-128, min(127, py_round_half_away(r) + z)))
    assert q.dtype == torch.int8 and ints(q) == expect
    d = tpu.dequantize_int8(q, scale, z, torch.float32)
    assert d.tolist() == [float(torch.tensor(float(v - z), dtype=torch.float32) * torch.tensor(s32)) for v in expect]


# -- pooling / reductions -------------------------------------------------------------------------
@FAST
@given(x=int8_tensor((1, 2, 4, 4)))
def test_max_pool2d_int8(x):
    y = tpu.max_pool2d_int8(x, [2, 2], [2, 2], [1, 1, 1, 1], [1, 1])
    X = ints(x)[0]
    for c, i, j in itertools.product(range(2), range(3), range(3)):
        window = [X[c][r][q] for r in range(2 * i - 1, 2 * i + 1) for q in range(2 * j - 1, 2 * j + 1)
                  if 0 <= r < 4 and 0 <= q < 4]
        assert int(y[0, c, i, j]) == max(window)


@FAST
@given(x=int8_tensor((1, 2, 4, 4)), f=factor, x_zp=zp, out_zp=zp)
def test_avg_pool2d_int8(x, f, x_zp, out_zp):
    m, s = mult(f / 9)
    y = tpu.avg_pool2d_int8(x, [3, 3], [2, 2], [1, 1, 1, 1], m, s, x_zp, out_zp)
    X = ints(x)[0]
    for c, i, j in itertools.product(range(2), range(2), range(2)):
        acc = sum(X[c][r][q] - x_zp for r in range(2 * i - 1, 2 * i + 2) for q in range(2 * j - 1, 2 * j + 2)
                  if 0 <= r < 4 and 0 <= q < 4)
        assert int(y[0, c, i, j]) == py_requant(acc, m, s, out_zp)


@FAST
@given(x=int8_tensor((2, 3, 4)), f=factor, x_zp=zp, out_zp=zp)
def test_reduce_sum_int8(x, f, x_zp, out_zp):
    m, s = mult(f / 12)
    y = tpu.reduce_sum_int8(x, [1, 2], True, m, s, x_zp, out_zp)
    assert tuple(y.shape) == (2, 1, 1)
    for b, plane in enumerate(ints(x)):
        acc = sum(v - x_zp for row in plane for v in row)
        assert int(y[b, 0, 0]) == py_requant(acc, m, s, out_zp)


def test_fake_shapes_match_reference():
    """Every int8 op's fake implementation gives the reference's shape and dtype."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch_tpu.tpu_ops import op_defs
    x = torch.randint(-128, 128, (1, 4, 6, 6), dtype=torch.int8)
    w = torch.randint(-128, 128, (8, 2, 3, 3), dtype=torch.int8)
    m, s = torch.full((8,), 1 << 30, dtype=torch.int32), torch.full((8,), 40)
    cases = {
        "conv2d_int8": (x, w, None, [2, 1], [1, 0, 1, 1], [1, 2], 2, m, s),
        "avg_pool2d_int8": (x, [3, 2], [2, 2], [1, 1, 0, 0], 1 << 30, 33),
        "max_pool2d_int8": (x, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], True),
        "reduce_sum_int8": (x, [-1, 2], False, 1 << 30, 35),
    }
    defs = op_defs()
    for name, args in cases.items():
        ref = defs[name].impl(*args)
        with FakeTensorMode(allow_non_fake_inputs=True):
            fake = defs[name].fake(*args)
        assert (tuple(fake.shape), fake.dtype) == (tuple(ref.shape), ref.dtype), name

"""Pooling, reduction and normalisation ops against explicit f64 window / formula computations."""

import math

import pytest
import torch

import torch_tpu.tpu_ops  # noqa: F401
from _ops_helpers import assert_fake_matches, assert_rounded_once

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
tpu = torch.ops.tpu


def _out_size(size, k, s, lo, hi, d, ceil):
    span = size + lo + hi - d * (k - 1) - 1
    n = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (n - 1) * s >= size + lo:
        n -= 1
    return n


def pool_ref64(x, k, s, pad, d, ceil, mode, include_pad=True, divisor=0):
    """Explicit loops over output positions (independent of torch pooling)."""
    pt, pb, pl, pr = pad
    n, c, h, w = x.shape
    oh = _out_size(h, k[0], s[0], pt, pb, d[0], ceil)
    ow = _out_size(w, k[1], s[1], pl, pr, d[1], ceil)
    xd = x.double()
    out = torch.empty(n, c, oh, ow, dtype=torch.float64)
    for i in range(oh):
        for j in range(ow):
            rows = [i * s[0] - pt + u * d[0] for u in range(k[0])]
            cols = [j * s[1] - pl + v * d[1] for v in range(k[1])]
            vals, padded = [], 0
            for r in rows:
                for q in cols:
                    if 0 <= r < h and 0 <= q < w:
                        vals.append(xd[:, :, r, q])
                    elif -pt <= r < h + pb and -pl <= q < w + pr:
                        padded += 1
            stack = torch.stack(vals, -1)
            if mode == "max":
                out[:, :, i, j] = stack.amax(-1)
            else:
                cnt = divisor or (len(vals) + (padded if include_pad else 0))
                out[:, :, i, j] = stack.sum(-1) / cnt
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_pools(dtype):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 7, 9, generator=g).to(dtype)
    for pad, ceil in (([1, 1, 1, 1], True), ([0, 1, 1, 0], False), ([1, 0, 0, 1], True)):
        out = assert_fake_matches(tpu.max_pool2d, x, [3, 2], [2, 2], pad, [1, 1], ceil)
        assert torch.equal(out.double(), pool_ref64(x, [3, 2], [2, 2], pad, [1, 1], ceil, "max"))
        for inc in (True, False):
            out = assert_fake_matches(tpu.avg_pool2d, x, [3, 3], [2, 2], pad, ceil, inc, 0)
            assert_rounded_once(out, pool_ref64(x, [3, 3], [2, 2], pad, [1, 1], ceil, "avg", inc), dtype)
    # ceil_mode: a last window that would start in the bottom/right padding is dropped (not pooled over pads)
    x2 = torch.randn(1, 2, 8, 9, generator=g).to(dtype)
    for pad in ([1, 1, 1, 1], [0, 1, 0, 1], [1, 0, 1, 0]):
        out = assert_fake_matches(tpu.max_pool2d, x2, [2, 2], [2, 2], pad, [1, 1], True)
        assert torch.equal(out.double(), pool_ref64(x2, [2, 2], [2, 2], pad, [1, 1], True, "max"))
        out = assert_fake_matches(tpu.avg_pool2d, x2, [2, 2], [2, 2], pad, True, False, 0)
        assert_rounded_once(out, pool_ref64(x2, [2, 2], [2, 2], pad, [1, 1], True, "avg", False), dtype)
        q = (x2.float() * 40).round().clamp(-128, 127).to(torch.int8)
        out = tpu.max_pool2d_int8(q, [2, 2], [2, 2], pad, [1, 1], True)
        assert torch.equal(out, pool_ref64(q.float(), [2, 2], [2, 2], pad, [1, 1], True, "max").to(torch.int8))
    out = tpu.avg_pool2d(x, [2, 2], [1, 1], [0, 0, 0, 0], False, True, 3)
    assert_rounded_once(out, pool_ref64(x, [2, 2], [1, 1], [0] * 4, [1, 1], False, "avg", divisor=3), dtype)
    out = tpu.max_pool2d(x, [2, 2], [1, 1], [0, 0, 0, 0], [2, 2], False)
    assert torch.equal(out.double(), pool_ref64(x, [2, 2], [1, 1], [0] * 4, [2, 2], False, "max"))
    out = assert_fake_matches(tpu.adaptive_avg_pool2d, x, [3, 4])
    ref = torch.empty(1, 2, 3, 4, dtype=torch.float64)
    for i in range(3):
        for j in range(4):
            r0, r1 = (i * 7) // 3, -((-(i + 1) * 7) // 3)
            c0, c1 = (j * 9) // 4, -((-(j + 1) * 9) // 4)
            ref[:, :, i, j] = x.double()[:, :, r0:r1, c0:c1].mean((-1, -2))
    assert_rounded_once(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions(dtype):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 5, generator=g).to(dtype)
    xd = x.double()
    for name, ref in (("reduce_sum", xd.sum((0, 2), keepdim=True)), ("reduce_mean", xd.mean((0, 2), keepdim=True)),
                      ("reduce_max", xd.amax((0, 2), keepdim=True)), ("reduce_min", xd.amin((0, 2), keepdim=True))):
        out = assert_fake_matches(getattr(tpu, name), x, [0, -1], True)
        assert_rounded_once(out, ref, dtype)
    assert tpu.reduce_mean(x, [1], False).shape == (2, 5)
    m = x > 0
    assert torch.equal(assert_fake_matches(tpu.reduce_any, m, [2, 0], False), m.any(2).any(0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_norms(dtype):
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(2, 3, 8, generator=g) * 2).to(dtype)
    xd = x.double()
    e = torch.exp(xd - xd.amax(1, keepdim=True))
    assert_rounded_once(assert_fake_matches(tpu.softmax, x, 1), e / e.sum(1, keepdim=True), dtype, ulps=2)
    assert_rounded_once(tpu.log_softmax(x, 1), (xd - xd.amax(1, keepdim=True)) - torch.log(e.sum(1, keepdim=True)),
                        dtype, ulps=2)
    w = torch.randn(3, 8, generator=g).to(dtype)
    b = torch.randn(3, 8, generator=g).to(dtype)
    mu = xd.mean((1, 2), keepdim=True)
    var = ((xd - mu) ** 2).mean((1, 2), keepdim=True)
    ref = (xd - mu) / torch.sqrt(var + 1e-5) * w.double() + b.double()
    assert_rounded_once(assert_fake_matches(tpu.layer_norm, x, w, b, 2, 1e-5), ref, dtype, ulps=2)
    ref = (xd - xd.mean(-1, keepdim=True)) / torch.sqrt(xd.var(-1, unbiased=False, keepdim=True) + 1e-6)
    assert_rounded_once(tpu.layer_norm(x, None, None, 1, 1e-6), ref, dtype, ulps=2)
    s = torch.randn(3, generator=g).to(dtype)
    t = torch.randn(3, generator=g).to(dtype)
    ref = xd * s.double().view(1, 3, 1) + t.double().view(1, 3, 1)
    assert_rounded_once(assert_fake_matches(tpu.scale_shift, x, s, t, 1), ref, dtype, ulps=2)

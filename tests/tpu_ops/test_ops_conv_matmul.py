"""tpu.conv2d, tpu.linear, tpu.matmul against f64 formulas (unfold / einsum), one rounding per output."""

import pytest
import torch
import torch.nn.functional as F

import torch_tpu.tpu_ops  # noqa: F401  (registers torch.ops.tpu)
from _ops_helpers import assert_fake_matches, assert_rounded_once

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def conv_ref64(x, w, b, stride, pad4, dilation, groups, act):
    """Direct sum over unfolded patches in f64 (independent of F.conv2d)."""
    pt, pb, pl, pr = pad4
    x = F.pad(x.double(), [pl, pr, pt, pb])
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, stride=stride)          # [n, c*kh*kw, L]
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cols = cols.view(n, groups, cg * kh * kw, oh * ow)
    wg = w.double().view(groups, o // groups, cg * kh * kw)
    y = torch.einsum("ngkl,gok->ngol", cols, wg).reshape(n, o, oh, ow)
    if b is not None:
        y = y + b.double().view(1, -1, 1, 1)
    return {"none": y, "relu": y.clamp_min(0), "relu6": y.clamp(0, 6), "clip": y.clamp(-0.5, 0.5)}[act]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    dict(stride=[1, 1], pad=[1, 1, 1, 1], dil=[1, 1], groups=1, act="none", bias=True),
    dict(stride=[2, 1], pad=[0, 2, 1, 0], dil=[1, 2], groups=2, act="relu", bias=False),
    dict(stride=[1, 2], pad=[1, 1, 1, 1], dil=[1, 1], groups=4, act="relu6", bias=True),   # depthwise
    dict(stride=[1, 1], pad=[2, 0, 0, 2], dil=[2, 2], groups=1, act="clip", bias=True),
])
def test_conv2d(dtype, case):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 8, generator=g).to(dtype)
    w = torch.randn(4, 4 // case["groups"], 3, 3, generator=g).to(dtype)
    b = torch.randn(4, generator=g).to(dtype) if case["bias"] else None
    args = (x, w, b, case["stride"], case["pad"], case["dil"], case["groups"], case["act"], -0.5, 0.5)
    out = assert_fake_matches(torch.ops.tpu.conv2d, *args)
    ref = conv_ref64(x, w, b, case["stride"], case["pad"], case["dil"], case["groups"], case["act"])
    assert_rounded_once(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_and_matmul(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, generator=g).to(dtype)
    w = torch.randn(5, 16, generator=g).to(dtype)
    b = torch.randn(5, generator=g).to(dtype)
    out = assert_fake_matches(torch.ops.tpu.linear, x, w, b, "relu")
    ref = (torch.einsum("bmk,nk->bmn", x.double(), w.double()) + b.double()).clamp_min(0)
    assert_rounded_once(out, ref, dtype)
    a = torch.randn(2, 1, 3, 16, generator=g).to(dtype)
    c = torch.randn(4, 16, 6, generator=g).to(dtype)
    out = assert_fake_matches(torch.ops.tpu.matmul, a, c)
    ref = torch.einsum("xymk,ykn->xymn", a.double().expand(2, 4, 3, 16), c.double())
    assert_rounded_once(out, ref, dtype)

"""Data-movement ops and tpu.cast: exact results, no aliasing of inputs, fake shapes."""

import pytest
import torch

import torch_tpu.tpu_ops  # noqa: F401
from _ops_helpers import assert_fake_matches, assert_rounded_once

tpu = torch.ops.tpu


def _shares(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_movement_ops_are_exact_copies():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4).to(torch.bfloat16)
    cases = [
        (tpu.reshape, (x, [6, -1]), x.reshape(6, 4)),
        (tpu.permute, (x, [2, 0, 1]), x.permute(2, 0, 1)),
        (tpu.expand, (x[:, :1], [2, 3, 4]), x[:, :1].expand(2, 3, 4)),
        (tpu.slice, (x, 2, 1, 4, 2), x[:, :, 1:4:2]),
        (tpu.slice, (x, 1, -2, 100, 1), x[:, -2:]),
        (tpu.copy, (x,), x),
    ]
    for op, args, expect in cases:
        out = assert_fake_matches(op, *args)
        assert torch.equal(out, expect) and out.is_contiguous() and not _shares(out, x), op
    out = assert_fake_matches(tpu.concat, [x, x[:, :1]], 1)
    assert torch.equal(out, torch.cat([x, x[:, :1]], 1))
    out = assert_fake_matches(tpu.pad, x, [1, 0, 2, 1], 7.0)
    assert out.shape == (2, 6, 5) and float(out[0, 0, 0]) == 7.0 and torch.equal(out[:, 2:5, 1:], x)


def test_gather_embedding_full():
    table = torch.randn(10, 4).to(torch.float16)
    idx = torch.tensor([[3, 0], [9, 3]])
    out = assert_fake_matches(tpu.embedding, table, idx)
    assert torch.equal(out, table[idx])
    x = torch.randn(3, 5)
    gi = torch.tensor([[0, 4], [1, 1], [3, 2]])
    out = assert_fake_matches(tpu.gather, x, 1, gi)
    assert torch.equal(out, torch.stack([x[i, gi[i]] for i in range(3)]))
    out = assert_fake_matches(tpu.full, [2, 3], 0.1, torch.bfloat16)
    assert out.dtype == torch.bfloat16 and torch.equal(out, torch.full((2, 3), 0.1).to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_upsample(dtype):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, 3, 4, generator=g).to(dtype)
    out = assert_fake_matches(tpu.upsample_nearest2d, x, [6, 10])
    rows = [int(i * 3 / 6) for i in range(6)]
    cols = [int(j * 4 / 10) for j in range(10)]
    assert torch.equal(out, x[:, :, rows][:, :, :, cols])
    for align in (False, True):
        out = assert_fake_matches(tpu.upsample_bilinear2d, x, [5, 7], align)
        assert_rounded_once(out, _bilinear64(x.double(), 5, 7, align), dtype, ulps=2)


def _bilinear64(x, oh, ow, align):
    """Separable linear interpolation, PyTorch's half-pixel / corner-aligned source coordinates."""
    def coords(n_out, n_in):
        if align:
            src = [i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0 for i in range(n_out)]
        else:
            src = [max((i + 0.5) * n_in / n_out - 0.5, 0.0) for i in range(n_out)]
        lo = [min(int(s), n_in - 1) for s in src]
        hi = [min(i + 1, n_in - 1) for i in lo]
        return lo, hi, torch.tensor([s - i for s, i in zip(src, lo)], dtype=torch.float64)
    r0, r1, fr = coords(oh, x.shape[2])
    c0, c1, fc = coords(ow, x.shape[3])
    rows = x[:, :, r0] * (1 - fr)[:, None] + x[:, :, r1] * fr[:, None]
    return rows[..., c0] * (1 - fc) + rows[..., c1] * fc


def test_cast_rounds_to_nearest_even():
    # 1 + 2^-8 is halfway between two bf16 values: ties go to the even mantissa (1.0)
    x = torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 70000.0], dtype=torch.float32)
    out = assert_fake_matches(tpu.cast, x, torch.bfloat16)
    assert out.tolist() == [1.0, 1 + 4 * 2 ** -8, -2.5, 70144.0]
    assert torch.isinf(tpu.cast(x, torch.float16)[3])
    assert tpu.cast(x, torch.int32).tolist() == [1, 1, -2, 70000]
    y = tpu.cast(x, torch.float32)
    assert torch.equal(y, x) and not _shares(y, x)

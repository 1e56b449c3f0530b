"""Pooling: ``tpu.max_pool2d``, ``tpu.avg_pool2d``, ``tpu.adaptive_avg_pool2d`` (NCHW).

Padding is explicit and 4-sided ``[top, bottom, left, right]``. Window positions follow PyTorch:
``out = floor_or_ceil((in + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1``; with ``ceil_mode`` a
last window that would start in the bottom/right padding is dropped. Every window must overlap the input
(padding at most half the kernel, as PyTorch requires).

Semantics (f32, one rounding)::

    max_pool2d:  y = max over the window of x (padding counts as -inf; exact, no rounding needed)
    avg_pool2d:  s = sum over the window of f32(x) (padding counts as 0)
                 d = divisor_override                      if divisor_override > 0
                   = #window cells inside the padded input  if count_include_pad
                   = #window cells inside the input         otherwise
                 y = round(s / d)
    adaptive_avg_pool2d: window i covers [floor(i*H/OH), ceil((i+1)*H/OH)); y = round(mean(f32(x)))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_tpu.tpu_ops._common import OpDef, fake_by_reference, finish, up


def _out_len(n: int, k: int, s: int, lo: int, hi: int, d: int, ceil: bool) -> int:
    """Output length along one axis (module doc): with ceil_mode a last window starting in the padding is dropped."""
    span = n + lo + hi - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + lo:
        out -= 1
    return out


def crop_pooled(y: torch.Tensor, x: torch.Tensor, kernel_size: list[int], stride: list[int],
                padding: list[int], dilation: list[int], ceil_mode: bool) -> torch.Tensor:
    """``y`` (pooled over an explicitly padded ``x``, where torch cannot see which cells are padding) cut to
    the output size of the module doc."""
    pt, pb, pl, pr = padding
    ho = _out_len(x.shape[-2], kernel_size[0], stride[0], pt, pb, dilation[0], ceil_mode)
    wo = _out_len(x.shape[-1], kernel_size[1], stride[1], pl, pr, dilation[1], ceil_mode)
    return y[..., :ho, :wo]


def max_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               dilation: list[int], ceil_mode: bool = False) -> torch.Tensor:
    """Max pooling with 4-sided ``padding`` ``[top, bottom, left, right]`` (formula in the module doc)."""
    pt, pb, pl, pr = padding
    xf = up(x)
    if pt == pb and pl == pr:
        y = F.max_pool2d(xf, kernel_size, stride, [pt, pl], dilation, ceil_mode)
    else:
        xp = F.pad(xf, [pl, pr, pt, pb], value=float("-inf"))
        y = crop_pooled(F.max_pool2d(xp, kernel_size, stride, 0, dilation, ceil_mode), xf, kernel_size, stride,
                        padding, dilation, ceil_mode)
    return finish(y, x.dtype, x)


def avg_pool2d(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int = 0) -> torch.Tensor:
    """Average pooling with 4-sided ``padding``; ``divisor_override`` 0 means none (module doc)."""
    pt, pb, pl, pr = padding
    xf = up(x)
    padded = F.pad(xf, [pl, pr, pt, pb])
    # Window sums over the explicitly padded input (windows that overhang it with ceil_mode are clipped).
    s = F.avg_pool2d(padded, kernel_size, stride, 0, ceil_mode, True, divisor_override=1)
    if divisor_override > 0:
        y = s / float(divisor_override)
    else:
        ones = torch.ones_like(xf[:1, :1])
        cells = F.pad(ones, [pl, pr, pt, pb], value=1.0 if count_include_pad else 0.0)
        d = F.avg_pool2d(cells, kernel_size, stride, 0, ceil_mode, True, divisor_override=1)
        y = s / d
    return finish(crop_pooled(y, xf, kernel_size, stride, padding, [1, 1], ceil_mode), x.dtype, x)


def adaptive_avg_pool2d(x: torch.Tensor, output_size: list[int]) -> torch.Tensor:
    """Adaptive average pooling to ``output_size`` ``[OH, OW]`` (windows in the module doc)."""
    return finish(F.adaptive_avg_pool2d(up(x), output_size), x.dtype, x)


OPS = (
    OpDef("max_pool2d", max_pool2d, fake_by_reference(max_pool2d)),
    OpDef("avg_pool2d", avg_pool2d, fake_by_reference(avg_pool2d)),
    OpDef("adaptive_avg_pool2d", adaptive_avg_pool2d, fake_by_reference(adaptive_avg_pool2d)),
)

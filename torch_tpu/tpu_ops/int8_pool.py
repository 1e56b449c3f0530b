"""INT8 pooling and reductions: ``tpu.max_pool2d_int8``, ``tpu.avg_pool2d_int8``, ``tpu.reduce_sum_int8``.

Integer semantics (exact; ``requant`` is :func:`torch_tpu.fixed_point.requantize`, half away from zero)::

    max_pool2d_int8:  y = max over the window of x   (padding never wins; scale and zero point unchanged)
    avg_pool2d_int8:  acc = sum over the k_h x k_w window of (xp - x_zp)   (xp padded with x_zp: pads add 0)
                      y = requant(acc, multiplier, shift, out_zp)
                      with multiplier · 2^-shift ≈ s_x / (k_h · k_w · s_y)   (count_include_pad semantics)
    reduce_sum_int8:  acc = sum over dims of (x - x_zp);  y = requant(acc, multiplier, shift, out_zp)
                      sum: multiplier · 2^-shift ≈ s_x / s_y;  mean over n elements: ≈ s_x / (n · s_y)

Windows follow PyTorch's output-size formula (``ceil_mode`` is not supported for the average, whose
divisor would then vary per window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_tpu.fixed_point import requantize
from torch_tpu.tpu_ops._common import OpDef, fake_by_reference
from torch_tpu.tpu_ops.pool import crop_pooled


def max_pool2d_int8(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                    dilation: list[int], ceil_mode: bool = False) -> torch.Tensor:
    """Max pooling of int8 values (exact; ``padding`` is ``[top, bottom, left, right]``)."""
    pt, pb, pl, pr = padding
    xf = F.pad(x.to(torch.float32), [pl, pr, pt, pb], value=float("-inf"))
    y = F.max_pool2d(xf, kernel_size, stride, 0, dilation, ceil_mode)
    return crop_pooled(y, x, kernel_size, stride, padding, dilation, ceil_mode).to(torch.int8)


def avg_pool2d_int8(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                    multiplier: int, shift: int, x_zp: int = 0, out_zp: int = 0) -> torch.Tensor:
    """Average pooling: exact window sums, then one requantization (formula in the module doc)."""
    pt, pb, pl, pr = padding
    xf = F.pad(x.to(torch.float64) - float(x_zp), [pl, pr, pt, pb])
    acc = torch.round(F.avg_pool2d(xf, kernel_size, stride, 0, False, True, divisor_override=1)).to(torch.int64)
    return requantize(acc, multiplier, shift, out_zp, axis=None).to(torch.int8)


def _avg_pool2d_int8_fake(x, kernel_size, stride, padding, multiplier, shift, x_zp=0, out_zp=0):
    n, c, h, w = x.shape
    pt, pb, pl, pr = padding
    ho = (h + pt + pb - kernel_size[0]) // stride[0] + 1
    wo = (w + pl + pr - kernel_size[1]) // stride[1] + 1
    return x.new_empty((n, c, ho, wo), dtype=torch.int8)


def reduce_sum_int8(x: torch.Tensor, dims: list[int], keepdim: bool, multiplier: int, shift: int, x_zp: int = 0,
                    out_zp: int = 0) -> torch.Tensor:
    """Sum over ``dims`` in exact integers, then one requantization (mean: ``1/n`` in the multiplier)."""
    acc = torch.sum(x.to(torch.int64) - int(x_zp), dims, keepdim)
    return requantize(acc, multiplier, shift, out_zp, axis=None).to(torch.int8)


def _reduce_sum_int8_fake(x, dims, keepdim, multiplier, shift, x_zp=0, out_zp=0):
    nd = x.dim()
    dd = {d % nd for d in dims}
    return x.new_empty([1 if i in dd else s for i, s in enumerate(x.shape) if keepdim or i not in dd])


OPS = (
    OpDef("max_pool2d_int8", max_pool2d_int8, fake_by_reference(max_pool2d_int8)),
    OpDef("avg_pool2d_int8", avg_pool2d_int8, _avg_pool2d_int8_fake),
    OpDef("reduce_sum_int8", reduce_sum_int8, _reduce_sum_int8_fake),
)

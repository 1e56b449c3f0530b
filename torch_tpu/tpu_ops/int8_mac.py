"""INT8 multiply-accumulate ops: ``tpu.conv2d_int8``, ``tpu.linear_int8``, ``tpu.matmul_int8``.

Integer semantics (exact; accumulators in int64 tensors, required to fit int32; one rounding in
:func:`torch_tpu.fixed_point.requantize`)::

    conv2d_int8:  acc[n, o, i, j] = bias[o] + sum_{c in group(o), u, v} (xp[n, c, i*sh + u*dh, j*sw + v*dw] - x_zp)
                                                                        * w[o, c, u, v]
                  (xp = x padded with x_zp, so padding contributes 0)
                  y = clamp(round_shift(acc * multiplier[o], shift[o]) + out_zp, qmin, qmax)
    linear_int8:  acc[..., o] = bias[o] + sum_k (x[..., k] - x_zp) * w[o, k]         (w: [N, K])
                  y = clamp(round_shift(acc * multiplier[o], shift[o]) + out_zp, qmin, qmax)
    matmul_int8:  acc[b.., m, n] = sum_k (a[b.., m, k] - a_zp) * (b[b.., k, n] - b_zp)
                  y = clamp(round_shift(acc * multiplier, shift) + out_zp, qmin, qmax)

``x``, ``w``, ``a``, ``b`` and ``y`` are int8; ``bias`` int32; ``multiplier`` int32 and ``shift`` int64
per output channel (1-D, or one element for per tensor); ``round_shift`` rounds half away from zero. A fused
activation is expressed by the saturation bounds: relu ``qmin = out_zp``, relu6 ``qmax = out_zp + round(6 /
scale_out)``, clip likewise. The products are computed on integer values held exactly in float64 (every
partial sum stays far below 2^53), then converted to int64.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from torch_tpu.errors import TorchTpuError
from torch_tpu.fixed_point import requantize
from torch_tpu.tpu_ops._common import OpDef, broadcast_shape


def _exact(x: torch.Tensor, zp: int = 0) -> torch.Tensor:
    """Integer tensor minus its zero point, as exact float64 values."""
    return x.to(torch.float64) - float(zp)


def _to_int(acc: torch.Tensor) -> torch.Tensor:
    return torch.round(acc).to(torch.int64)


def _check_int8(op: str, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t is not None and t.dtype != torch.int8:
            raise TorchTpuError(f"tpu_ops/int8_mac.py: tpu.{op} operand {name} is {t.dtype}, expected int8")


def conv2d_int8(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
                padding: list[int], dilation: list[int], groups: int, multiplier: torch.Tensor,
                shift: torch.Tensor, x_zp: int = 0, out_zp: int = 0, qmin: int = -128,
                qmax: int = 127) -> torch.Tensor:
    """INT8 2-D convolution (NCHW, OIHW), requantized per output channel (formula in the module doc).

    Args:
        padding: ``[top, bottom, left, right]``, filled with ``x_zp`` (the real value 0).
        multiplier, shift: per output channel (from ``fixed_point.quantize_multiplier(s_x * s_w[o] / s_y)``).
    """
    _check_int8("conv2d_int8", x=x, weight=weight)
    pt, pb, pl, pr = padding
    xf = F.pad(_exact(x, x_zp), [pl, pr, pt, pb])
    acc = F.conv2d(xf, weight.to(torch.float64), None, stride, 0, dilation, groups)
    acc = _to_int(acc)
    if bias is not None:
        acc = acc + bias.to(torch.int64).reshape(1, -1, 1, 1)
    return requantize(acc, multiplier, shift, out_zp, qmin=qmin, qmax=qmax, axis=1).to(torch.int8)


def _conv2d_int8_fake(x, weight, bias, stride, padding, dilation, groups, multiplier, shift, x_zp=0, out_zp=0,
                      qmin=-128, qmax=127):
    n, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    pt, pb, pl, pr = padding
    ho = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return x.new_empty((n, o, ho, wo), dtype=torch.int8)


def linear_int8(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], multiplier: torch.Tensor,
                shift: torch.Tensor, x_zp: int = 0, out_zp: int = 0, qmin: int = -128,
                qmax: int = 127) -> torch.Tensor:
    """INT8 fully connected layer ``x [..., K] @ w[N, K].T + bias``, requantized per output feature."""
    _check_int8("linear_int8", x=x, weight=weight)
    acc = _to_int(torch.matmul(_exact(x, x_zp), weight.to(torch.float64).t()))
    if bias is not None:
        acc = acc + bias.to(torch.int64)
    return requantize(acc, multiplier, shift, out_zp, qmin=qmin, qmax=qmax, axis=-1).to(torch.int8)


def _linear_int8_fake(x, weight, bias, multiplier, shift, x_zp=0, out_zp=0, qmin=-128, qmax=127):
    return x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=torch.int8)


def matmul_int8(a: torch.Tensor, b: torch.Tensor, multiplier: int, shift: int, a_zp: int = 0, b_zp: int = 0,
                out_zp: int = 0, qmin: int = -128, qmax: int = 127) -> torch.Tensor:
    """Batched INT8 product of two activations ``[..., M, K] x [..., K, N]``, requantized per tensor."""
    _check_int8("matmul_int8", a=a, b=b)
    acc = _to_int(torch.matmul(_exact(a, a_zp), _exact(b, b_zp)))
    return requantize(acc, multiplier, shift, out_zp, qmin=qmin, qmax=qmax, axis=None).to(torch.int8)


def _matmul_int8_fake(a, b, multiplier, shift, a_zp=0, b_zp=0, out_zp=0, qmin=-128, qmax=127):
    batch = broadcast_shape(a.shape[:-2], b.shape[:-2])
    return a.new_empty((*batch, a.shape[-2], b.shape[-1]), dtype=torch.int8)


OPS = (
    OpDef("conv2d_int8", conv2d_int8, _conv2d_int8_fake),
    OpDef("linear_int8", linear_int8, _linear_int8_fake),
    OpDef("matmul_int8", matmul_int8, _matmul_int8_fake),
)

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

**Float-output forms** ``tpu.conv2d_int8_f32``, ``tpu.linear_int8_f32``, ``tpu.matmul_int8_f32``: the same
int8 operands and the same int32 accumulator ``acc`` (zero points and bias as above), but instead of a
requantization to int8 the accumulator is dequantized once, in f32 (what the peers' QDQ graphs compute
for a layer whose output stays float)::

    y = clamp(f32(acc) * scale[o], lo, hi)          (f32 arithmetic: one rounding in the int -> f32
                                                      conversion, one in the product, clamp exact)

``scale`` is f32: one value per output channel (conv, linear: ``s_x · s_w[o]`` rounded once to f32) or one
float (matmul: ``s_a · s_b``); ``lo``/``hi`` (None: unbounded) are a fused relu / relu6 / clip in real units.
The INT8 lowering uses them for a conv / linear / matmul whose consumers all read its value in float (the
graph output, an op without an int8 rule): requantizing it to int8 would only add a rounding that the
following dequantization cannot undo.
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
    acc = _conv_acc(x, weight, bias, stride, padding, dilation, groups, x_zp)
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


def dequantize_acc(acc: torch.Tensor, scale: torch.Tensor | float, axis: int | None, lo: Optional[float],
                   hi: Optional[float]) -> torch.Tensor:
    """``clamp(f32(acc) * scale, lo, hi)`` in f32 (module doc); ``scale`` per index of ``axis`` or one value."""
    y = acc.to(torch.float32)
    if isinstance(scale, torch.Tensor):
        s = scale.to(torch.float32).reshape(-1)
        if axis is not None and s.numel() > 1:
            shape = [1] * y.dim()
            shape[axis] = s.numel()
            s = s.reshape(shape)
        y = y * s
    else:
        y = y * torch.tensor(scale, dtype=torch.float32)
    if lo is not None or hi is not None:
        y = torch.clamp(y, lo, hi)
    return y


def _conv_acc(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
              padding: list[int], dilation: list[int], groups: int, x_zp: int) -> torch.Tensor:
    pt, pb, pl, pr = padding
    xf = F.pad(_exact(x, x_zp), [pl, pr, pt, pb])
    acc = _to_int(F.conv2d(xf, weight.to(torch.float64), None, stride, 0, dilation, groups))
    return acc if bias is None else acc + bias.to(torch.int64).reshape(1, -1, 1, 1)


def conv2d_int8_f32(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
                    padding: list[int], dilation: list[int], groups: int, scale: torch.Tensor, x_zp: int = 0,
                    lo: Optional[float] = None, hi: Optional[float] = None) -> torch.Tensor:
    """INT8 2-D convolution with an f32 output: ``clamp(f32(acc[n, o]) * scale[o], lo, hi)`` (module doc).

    Args:
        scale: f32, one per output channel (``s_x · s_w[o]``) or one for all.
        lo, hi: a fused relu / relu6 / clip in real units (None: unbounded).
    """
    _check_int8("conv2d_int8_f32", x=x, weight=weight)
    return dequantize_acc(_conv_acc(x, weight, bias, stride, padding, dilation, groups, x_zp), scale, 1, lo, hi)


def _conv2d_int8_f32_fake(x, weight, bias, stride, padding, dilation, groups, scale, x_zp=0, lo=None, hi=None):
    return _conv2d_int8_fake(x, weight, bias, stride, padding, dilation, groups, scale, scale).to(torch.float32)


def linear_int8_f32(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], scale: torch.Tensor,
                    x_zp: int = 0, lo: Optional[float] = None, hi: Optional[float] = None) -> torch.Tensor:
    """INT8 fully connected layer with an f32 output: ``clamp(f32(acc[..., o]) * scale[o], lo, hi)``."""
    _check_int8("linear_int8_f32", x=x, weight=weight)
    acc = _to_int(torch.matmul(_exact(x, x_zp), weight.to(torch.float64).t()))
    if bias is not None:
        acc = acc + bias.to(torch.int64)
    return dequantize_acc(acc, scale, -1, lo, hi)


def _linear_int8_f32_fake(x, weight, bias, scale, x_zp=0, lo=None, hi=None):
    return x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=torch.float32)


def matmul_int8_f32(a: torch.Tensor, b: torch.Tensor, scale: float, a_zp: int = 0, b_zp: int = 0,
                    lo: Optional[float] = None, hi: Optional[float] = None) -> torch.Tensor:
    """Batched INT8 product of two activations with an f32 output: ``clamp(f32(acc) * f32(scale), lo, hi)``."""
    _check_int8("matmul_int8_f32", a=a, b=b)
    acc = _to_int(torch.matmul(_exact(a, a_zp), _exact(b, b_zp)))
    return dequantize_acc(acc, scale, None, lo, hi)


def _matmul_int8_f32_fake(a, b, scale, a_zp=0, b_zp=0, lo=None, hi=None):
    return _matmul_int8_fake(a, b, 0, 0).to(torch.float32)


OPS = (
    OpDef("conv2d_int8", conv2d_int8, _conv2d_int8_fake),
    OpDef("linear_int8", linear_int8, _linear_int8_fake),
    OpDef("matmul_int8", matmul_int8, _matmul_int8_fake),
    OpDef("conv2d_int8_f32", conv2d_int8_f32, _conv2d_int8_f32_fake),
    OpDef("linear_int8_f32", linear_int8_f32, _linear_int8_f32_fake),
    OpDef("matmul_int8_f32", matmul_int8_f32, _matmul_int8_f32_fake),
)

"""INT8 element-wise ops, casts and lookup tables.

Integer semantics (exact, in int64; ``round_shift`` and ``requant`` are :mod:`torch_tpu.fixed_point`'s
``rounding_right_shift`` / ``requantize``, rounding half away from zero)::

    add_int8 / sub_int8:  ta = round_shift((a - a_zp) * a_multiplier, a_shift)     # a in the common scale
                          tb = round_shift((b - b_zp) * b_multiplier, b_shift)
                          y  = requant(ta ± tb, out_multiplier, out_shift, out_zp, qmin, qmax)
                          (numpy broadcasting of a and b)
    mul_int8:             y  = requant((a - a_zp) * (b - b_zp), multiplier, shift, out_zp, qmin, qmax)
    concat_int8:          y  = concat_i requant(x_i - zp_i, multipliers[i], shifts[i], out_zp)  along dim
    requant_int8:         y  = requant(x - x_zp, multiplier, shift, out_zp, qmin, qmax)
    lut_int8:             y[i] = table[x[i] & 0xff]      (256 entries ordered 0..127, -128..-1)
    conv2d_lut_int8:      a convolution followed by a curved activation, the pre-activation on a 16-bit grid:
                          acc = conv2d_int8's int32 accumulator (x - x_zp, zero padding, + bias)
                          u   = requant(acc, multiplier[c], shift[c], u_zp, -32767, 32767)
                          hi  = floor(u / 256), lo = u - 256·hi                 (hi in [-128, 127], lo in [0, 255])
                          y   = requant(base[hi & 0xff] + slope[hi & 0xff] · lo, 1, out_shift, out_zp, qmin, qmax)
                          (piecewise-linear interpolation between the 257 knots u = 256·k of the table)
    quantize_int8:        y  = clamp(round(f32(x) / f32(scale)) + zero_point, qmin, qmax)
    dequantize_int8:      y  = round_to_dtype(f32(x - zero_point) * f32(scale))

The lowering chooses the parameters: for add with scales ``s_a, s_b -> s_y`` the common scale is
``s_c = s_y / 2^8`` (eight extra fraction bits), ``a_multiplier · 2^-a_shift ≈ s_a / s_c`` and
``out_multiplier · 2^-out_shift = 2^-8``. For ``conv2d_lut_int8``, with knot values
``t[k] ≈ f((256·k - u_zp) · s_u) / s_y · 2^(out_shift - 8)`` (``f`` the activation, ``s_u`` the 16-bit grid's
step): ``base[k] = 256 · t[k]``, ``slope[k] = t[k+1] - t[k]``.
"""

from __future__ import annotations

from typing import Optional

import torch

from torch_tpu.errors import TorchTpuError
from torch_tpu.fixed_point import dequantize, quantize, requantize, rounding_right_shift
from torch_tpu.tpu_ops._common import OpDef, broadcast_shape, fake_like
from torch_tpu.tpu_ops.int8_mac import _check_int8, _conv2d_int8_fake, _conv_acc


def _i64(x: torch.Tensor, zp: int = 0) -> torch.Tensor:
    return x.to(torch.int64) - int(zp)


def _int8(y: torch.Tensor) -> torch.Tensor:
    return y.to(torch.int8)


def _rescaled_sum(a, b, a_multiplier, a_shift, b_multiplier, b_shift, a_zp, b_zp, sign):
    ta = rounding_right_shift(_i64(a, a_zp) * int(a_multiplier), int(a_shift))
    tb = rounding_right_shift(_i64(b, b_zp) * int(b_multiplier), int(b_shift))
    return ta + sign * tb


def add_int8(a: torch.Tensor, b: torch.Tensor, a_multiplier: int, a_shift: int, b_multiplier: int, b_shift: int,
             out_multiplier: int, out_shift: int, a_zp: int = 0, b_zp: int = 0, out_zp: int = 0,
             qmin: int = -128, qmax: int = 127) -> torch.Tensor:
    """``a + b`` of two int8 tensors with different scales (formula in the module doc)."""
    acc = _rescaled_sum(a, b, a_multiplier, a_shift, b_multiplier, b_shift, a_zp, b_zp, 1)
    return _int8(requantize(acc, out_multiplier, out_shift, out_zp, qmin=qmin, qmax=qmax, axis=None))


def sub_int8(a: torch.Tensor, b: torch.Tensor, a_multiplier: int, a_shift: int, b_multiplier: int, b_shift: int,
             out_multiplier: int, out_shift: int, a_zp: int = 0, b_zp: int = 0, out_zp: int = 0,
             qmin: int = -128, qmax: int = 127) -> torch.Tensor:
    """``a - b`` of two int8 tensors with different scales (formula in the module doc)."""
    acc = _rescaled_sum(a, b, a_multiplier, a_shift, b_multiplier, b_shift, a_zp, b_zp, -1)
    return _int8(requantize(acc, out_multiplier, out_shift, out_zp, qmin=qmin, qmax=qmax, axis=None))


def _binary_fake(a, b, *args, **kwargs):
    return a.new_empty(broadcast_shape(a.shape, b.shape), dtype=torch.int8)


def mul_int8(a: torch.Tensor, b: torch.Tensor, multiplier: int, shift: int, a_zp: int = 0, b_zp: int = 0,
             out_zp: int = 0, qmin: int = -128, qmax: int = 127) -> torch.Tensor:
    """``a * b``: the exact product requantized by ``multiplier · 2^-shift ≈ s_a · s_b / s_y``."""
    acc = _i64(a, a_zp) * _i64(b, b_zp)
    return _int8(requantize(acc, multiplier, shift, out_zp, qmin=qmin, qmax=qmax, axis=None))


def concat_int8(xs: list[torch.Tensor], dim: int, multipliers: list[int], shifts: list[int], zero_points: list[int],
                out_zp: int = 0) -> torch.Tensor:
    """Concatenate int8 tensors, each requantized to the output scale first."""
    if not (len(xs) == len(multipliers) == len(shifts) == len(zero_points)):
        raise TorchTpuError(f"tpu_ops/int8_eltwise.py: tpu.concat_int8 needs one multiplier, shift and zero point per "
                            f"input ({len(xs)} inputs, {len(multipliers)}/{len(shifts)}/{len(zero_points)} given)")
    parts = [requantize(_i64(x, z), m, s, out_zp, axis=None)
             for x, m, s, z in zip(xs, multipliers, shifts, zero_points)]
    return _int8(torch.cat(parts, dim))


def _concat_int8_fake(xs, dim, multipliers, shifts, zero_points, out_zp=0):
    shape = list(xs[0].shape)
    shape[dim] = sum(t.shape[dim] for t in xs)
    return xs[0].new_empty(shape, dtype=torch.int8)


def requant_int8(x: torch.Tensor, multiplier: int, shift: int, x_zp: int = 0, out_zp: int = 0, qmin: int = -128,
                 qmax: int = 127) -> torch.Tensor:
    """Change the scale (and zero point) of an int8 tensor: ``requant(x - x_zp, m, s, out_zp)``."""
    return _int8(requantize(_i64(x, x_zp), multiplier, shift, out_zp, qmin=qmin, qmax=qmax, axis=None))


def lut_int8(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """256-entry table lookup ``table[x & 0xff]`` (entries for 0..127 first, then -128..-1)."""
    if table.numel() != 256 or table.dtype != torch.int8:
        raise TorchTpuError(f"tpu_ops/int8_eltwise.py: tpu.lut_int8 needs 256 int8 entries, got {table.numel()} "
                            f"{table.dtype}")
    idx = torch.bitwise_and(x.to(torch.int64), 0xFF)
    return table.reshape(256)[idx]


#: saturation bound of the 16-bit pre-activation code ``u`` of ``conv2d_lut_int8`` (``floor(u / 256)`` in int8)
FINE_MAX = 32767


def lut_interp(u: torch.Tensor, base: torch.Tensor, slope: torch.Tensor, out_shift: int, out_zp: int,
               qmin: int = -128, qmax: int = 127) -> torch.Tensor:
    """Interpolated table of a 16-bit code ``u`` (|u| <= 32767): knot ``hi = floor(u / 256)``, offset
    ``lo = u - 256·hi``; ``requant(base[hi & 0xff] + slope[hi & 0xff] · lo, 1, out_shift, out_zp)`` (int8)."""
    if base.numel() != 256 or slope.numel() != 256:
        raise TorchTpuError(f"tpu_ops/int8_eltwise.py: an interpolated table needs 256 base and 256 slope entries, "
                            f"got {base.numel()} and {slope.numel()}")
    u = u.to(torch.int64)
    hi = torch.div(u, 256, rounding_mode="floor")
    idx = torch.bitwise_and(hi, 0xFF)
    acc = base.reshape(256).to(torch.int64)[idx] + slope.reshape(256).to(torch.int64)[idx] * (u - 256 * hi)
    return _int8(requantize(acc, 1, int(out_shift), int(out_zp), qmin=qmin, qmax=qmax, axis=None))


def conv2d_lut_int8(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
                    padding: list[int], dilation: list[int], groups: int, multiplier: torch.Tensor,
                    shift: torch.Tensor, x_zp: int, u_zp: int, base: torch.Tensor, slope: torch.Tensor,
                    out_shift: int, out_zp: int = 0, qmin: int = -128, qmax: int = 127) -> torch.Tensor:
    """Convolution + curved activation (formula in the module doc): the int32 accumulator requantized per
    channel onto the 16-bit grid ``u`` (``multiplier[c] · 2^-shift[c] ≈ s_x · s_w[c] / s_u``), then
    :func:`lut_interp`. The pre-activation is never rounded to int8."""
    _check_int8("conv2d_lut_int8", x=x, weight=weight)
    acc = _conv_acc(x, weight, bias, stride, padding, dilation, groups, x_zp)
    u = requantize(acc, multiplier, shift, int(u_zp), qmin=-FINE_MAX, qmax=FINE_MAX, axis=1)
    return lut_interp(u, base, slope, out_shift, out_zp, qmin, qmax)


def _conv2d_lut_int8_fake(x, weight, bias, stride, padding, dilation, groups, multiplier, shift, x_zp, u_zp, base,
                          slope, out_shift, out_zp=0, qmin=-128, qmax=127):
    return _conv2d_int8_fake(x, weight, bias, stride, padding, dilation, groups, multiplier, shift)


def quantize_int8(x: torch.Tensor, scale: float, zero_point: int = 0, qmin: int = -128,
                  qmax: int = 127) -> torch.Tensor:
    """Float -> int8: ``clamp(round_half_away(f32(x) / f32(scale)) + zero_point, qmin, qmax)``."""
    s = torch.tensor(scale, dtype=torch.float32)
    return quantize(x.float(), s, zero_point, qmin=qmin, qmax=qmax, dtype=torch.int8)


def _quantize_fake(x, scale, zero_point=0, qmin=-128, qmax=127):
    return x.new_empty(x.shape, dtype=torch.int8)


def dequantize_int8(x: torch.Tensor, scale: float, zero_point: int, dtype: torch.dtype) -> torch.Tensor:
    """Int8 -> float: ``f32(x - zero_point) * f32(scale)``, rounded once to ``dtype``."""
    return dequantize(x, torch.tensor(scale, dtype=torch.float32), zero_point, dtype=torch.float32).to(dtype)


def _dequantize_fake(x, scale, zero_point, dtype):
    return x.new_empty(x.shape, dtype=dtype)


OPS = (
    OpDef("add_int8", add_int8, _binary_fake),
    OpDef("sub_int8", sub_int8, _binary_fake),
    OpDef("mul_int8", mul_int8, _binary_fake),
    OpDef("concat_int8", concat_int8, _concat_int8_fake),
    OpDef("requant_int8", requant_int8, fake_like),
    OpDef("lut_int8", lut_int8, fake_like),
    OpDef("conv2d_lut_int8", conv2d_lut_int8, _conv2d_lut_int8_fake),
    OpDef("quantize_int8", quantize_int8, _quantize_fake),
    OpDef("dequantize_int8", dequantize_int8, _dequantize_fake),
)

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
    quantize_int8:        y  = clamp(round(f32(x) / f32(scale)) + zero_point, qmin, qmax)
    dequantize_int8:      y  = round_to_dtype(f32(x - zero_point) * f32(scale))

The lowering chooses the parameters: for add with scales ``s_a, s_b -> s_y`` the common scale is
``s_c = s_y / 2^8`` (eight extra fraction bits), ``a_multiplier · 2^-a_shift ≈ s_a / s_c`` and
``out_multiplier · 2^-out_shift = 2^-8``.
"""

from __future__ import annotations

import torch

from torch_tpu.errors import TorchTpuError
from torch_tpu.fixed_point import dequantize, quantize, requantize, rounding_right_shift
from torch_tpu.tpu_ops._common import OpDef, broadcast_shape, fake_like


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
    OpDef("quantize_int8", quantize_int8, _quantize_fake),
    OpDef("dequantize_int8", dequantize_int8, _dequantize_fake),
)

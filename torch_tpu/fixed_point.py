"""Fixed-point arithmetic: the ONE definition of requantization, rounding and scales.

Lowering (to compute quantization parameters), the TPU reference ops and the cmodel kernels all use
this module, so an integer tensor means the same thing at every level. It imports only torch, numpy
and :mod:`torch_tpu.errors`.

Conventions (stated once, used everywhere):

* **Multiplier + right shift.** A positive real factor ``r`` is represented as an int32 multiplier ``m``
  and a right shift ``s`` with ``r ≈ m · 2^-s`` and ``m ∈ [2^30, 2^31)`` (Q31-normalised, as TFLite's
  ``QuantizeMultiplier``; TPU-MLIR's ``getRShiftAndMultiplierFromQScale`` with ``qdm=True`` uses the same
  range). ``s`` is a plain right shift in ``[0, 62]``; factors below ``2^-31`` lose precision in ``m``
  (``m < 2^30``) rather than needing ``s > 62``; factors ``≥ 2^31`` are refused.
* **Requantization** is one rounding step on the exact 64-bit product::

      y = clamp(round_shift(acc · m, s, mode) + zero_point, qmin, qmax)

  ``|acc| < 2^31`` and ``|m| < 2^31``, so ``|acc · m| < 2^62`` never overflows int64.
* **Rounding modes** for ``round_shift(x, s) ≈ x / 2^s``:

  ================== ====================================================
  ``half_away_from_zero`` ``sign(x) · floor((|x| + 2^(s-1)) / 2^s)`` (default)
  ``half_even``      nearest; ties to the even quotient (banker's rounding)
  ``half_up``        ``floor((x + 2^(s-1)) / 2^s)``; ties toward +inf
  ``half_down``      nearest; ties toward -inf
  ``toward_zero``    ``sign(x) · floor(|x| / 2^s)`` (truncation)
  ``floor``          ``floor(x / 2^s)`` (arithmetic shift)
  ``up``             ``ceil(x / 2^s)``
  ================== ====================================================

* **Scales.** Symmetric: ``scale = threshold / qmax`` with ``qmax = 2^(bits-1) - 1`` (127 for int8),
  zero point 0 (unsigned symmetric: ``qmax = 2^bits - 1``). Asymmetric from a range ``[lo, hi]``
  (widened to contain 0): ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point = qmin - round(lo / scale)``.
* **Quantize / dequantize:** ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``,
  ``x̂ = (q - zero_point) · scale``.

Example:
    >>> m, s = quantize_multiplier(0.0123)
    >>> int(m), int(s)
    (1690499128, 37)
    >>> int(requantize(torch.tensor(1000), m, s))      # 1000 * 0.0123 = 12.3
    12
"""

from __future__ import annotations

import math
import numpy as np
import torch

from torch_tpu.errors import FixedPointError

ROUNDING_MODES = ("half_away_from_zero", "half_even", "half_up", "half_down", "toward_zero", "floor", "up")
MAX_SHIFT = 62


# FixedPointError is defined with every other error in torch_tpu.errors.


def _check_mode(mode: str) -> None:
    if mode not in ROUNDING_MODES:
        raise FixedPointError(f"fixed_point: unknown rounding mode {mode!r} (choose one of {', '.join(ROUNDING_MODES)})")


def _as_f64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def quantize_multiplier(real) -> tuple[torch.Tensor, torch.Tensor]:
    """Represent positive real factor(s) as ``(multiplier int32, right_shift int)`` (vectorized).

    ``real = f · 2^e`` with ``f ∈ [0.5, 1)``; ``m = round(f · 2^31)`` (half away from zero; if it rounds up
    to ``2^31`` then ``m = 2^30, e += 1``); ``s = 31 - e``. When ``s > 62`` the multiplier is shifted down
    to ``m = round(m / 2^(s-62))``, ``s = 62``. ``real = 0`` gives ``(0, 0)``.

    Args:
        real: a float, or an array/tensor of factors (per channel); all must be finite, ``>= 0`` and ``< 2^31``.

    Returns:
        ``(multiplier, shift)``: int32 and int64 tensors shaped like ``real`` (0-d for a scalar), with
        ``|real - m · 2^-s| <= 2^-(s+1)``.

    Raises:
        FixedPointError: a negative, non-finite or too large factor.
    """
    r = _as_f64(real)
    if not torch.isfinite(r).all() or (r < 0).any() or (r >= 2.0 ** 31).any():
        bad = r[~torch.isfinite(r) | (r < 0) | (r >= 2.0 ** 31)].flatten()[:4].tolist()
        raise FixedPointError(f"fixed_point.quantize_multiplier: factors must be finite and in [0, 2^31); got {bad}")
    f, e = torch.frexp(r)                       # r = f * 2^e, f in [0.5, 1)
    m = torch.floor(f * 2.0 ** 31 + 0.5).to(torch.int64)   # f >= 0: half away from zero == half up
    e = e.to(torch.int64)
    carry = m == 2 ** 31
    m = torch.where(carry, torch.full_like(m, 2 ** 30), m)
    e = e + carry.to(torch.int64)
    s = 31 - e
    over = s > MAX_SHIFT
    if over.any():
        extra = torch.clamp(s - MAX_SHIFT, min=0, max=63)
        m = torch.where(over, rounding_right_shift(m, extra, "half_away_from_zero"), m)
        s = torch.where(over, torch.full_like(s, MAX_SHIFT), s)
    zero = r == 0
    m = torch.where(zero, torch.zeros_like(m), m)
    s = torch.where(zero, torch.zeros_like(s), s)
    return m.to(torch.int32), s


def rounding_right_shift(x: torch.Tensor, shift, mode: str = "half_away_from_zero") -> torch.Tensor:
    """``round(x / 2^shift)`` on integers, exactly, with the given rounding mode (table in the module doc).

    Args:
        x: integer tensor (computed in int64).
        shift: int or integer tensor broadcastable to ``x``; each in ``[0, 63]``.
        mode: one of :data:`ROUNDING_MODES`.

    Returns:
        int64 tensor. ``shift == 0`` returns ``x`` unchanged.
    """
    _check_mode(mode)
    x = torch.as_tensor(x).to(torch.int64)
    s = torch.as_tensor(shift, dtype=torch.int64)
    if (s < 0).any() or (s > 63).any():
        raise FixedPointError(f"fixed_point.rounding_right_shift: shift must be in [0, 63], got "
                              f"{s.min().item()}..{s.max().item()}")
    s = torch.broadcast_to(s, torch.broadcast_shapes(s.shape, x.shape))
    one = torch.ones((), dtype=torch.int64)
    pos = s > 0
    half = torch.where(pos, torch.bitwise_left_shift(one, torch.clamp(s - 1, min=0)), torch.zeros_like(s))
    q = torch.bitwise_right_shift(x, s)                 # floor(x / 2^s)
    r = x - torch.bitwise_left_shift(q, s)              # remainder in [0, 2^s)
    if mode == "floor":
        return q
    if mode == "up":
        return q + (r > 0).to(torch.int64)
    if mode == "toward_zero":
        return q + ((r > 0) & (x < 0)).to(torch.int64)
    if mode == "half_up":
        return q + (pos & (r >= half)).to(torch.int64)
    if mode == "half_down":
        return q + (pos & (r > half)).to(torch.int64)
    if mode == "half_even":
        up = pos & ((r > half) | ((r == half) & (torch.bitwise_and(q, 1) == 1)))
        return q + up.to(torch.int64)
    # half_away_from_zero: ties go up for x >= 0 and down (toward -inf) for x < 0
    up = pos & ((r > half) | ((r == half) & (x >= 0)))
    return q + up.to(torch.int64)


def _per_channel(p, ndim: int, axis: int | None) -> torch.Tensor:
    t = torch.as_tensor(p)
    if t.ndim == 1 and axis is not None and ndim > 1:
        shape = [1] * ndim
        shape[axis % ndim] = t.shape[0]
        t = t.reshape(shape)
    return t


def requantize(acc: torch.Tensor, multiplier, shift, zero_point=0, rounding: str = "half_away_from_zero",
               qmin: int = -128, qmax: int = 127, axis: int | None = 1) -> torch.Tensor:
    """Scale int32 accumulators to the output type: ``clamp(round_shift(acc·m, s) + zp, qmin, qmax)``.

    Exact integer arithmetic in int64 (one rounding, on the full product).

    Args:
        acc: integer tensor (int32 accumulators; any integer dtype, values must fit int32).
        multiplier: int32 multiplier(s) from :func:`quantize_multiplier`; scalar or 1-D per channel.
        shift: right shift(s) in ``[0, 63]``; scalar or 1-D per channel.
        zero_point: output zero point (scalar or 1-D per channel).
        rounding: one of :data:`ROUNDING_MODES` (default half away from zero).
        qmin, qmax: saturation bounds of the output type.
        axis: the channel axis of ``acc`` that 1-D per-channel parameters run along (NCHW: 1).

    Returns:
        int64 tensor with values in ``[qmin, qmax]`` (cast it to the storage dtype).

    Example:
        >>> requantize(torch.tensor([[5, -5]]), torch.tensor([2**30, 2**30]), torch.tensor([31, 31]), axis=1)
        tensor([[ 3, -3]])
    """
    _check_mode(rounding)
    a = torch.as_tensor(acc).to(torch.int64)
    if a.numel() and (a.abs().max() >= 2 ** 31):
        raise FixedPointError("fixed_point.requantize: accumulator outside int32 range")
    m = _per_channel(multiplier, a.ndim, axis).to(torch.int64)
    s = _per_channel(shift, a.ndim, axis).to(torch.int64)
    zp = _per_channel(zero_point, a.ndim, axis).to(torch.int64)
    y = rounding_right_shift(a * m, s, rounding) + zp
    return torch.clamp(y, qmin, qmax)


def qrange(bits: int = 8, signed: bool = True) -> tuple[int, int]:
    """``(qmin, qmax)``: ``[-2^(bits-1), 2^(bits-1)-1]`` signed, ``[0, 2^bits-1]`` unsigned."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def scale_from_threshold(threshold, bits: int = 8, symmetric: bool = True):
    """Scale for a calibrated threshold: ``threshold / qmax``.

    ``qmax = 2^(bits-1) - 1`` for symmetric signed (127 for int8, zero point 0); ``qmax = 2^bits - 1`` when
    ``symmetric=False`` (unsigned, for non-negative tensors: ``[0, threshold] -> [0, 255]``).
    Works on floats and on tensors (per channel). A zero threshold gives the smallest positive scale
    ``2^-126 / qmax`` rather than 0 (so division by the scale stays finite).
    """
    qmax = (1 << (bits - 1)) - 1 if symmetric else (1 << bits) - 1
    if isinstance(threshold, torch.Tensor):
        t = threshold.to(torch.float64) if not threshold.is_floating_point() else threshold
        return torch.clamp(t, min=2.0 ** -126) / qmax
    return max(float(threshold), 2.0 ** -126) / qmax


def asymmetric_qparams(min_val: float, max_val: float, bits: int = 8, signed: bool = True) -> tuple[float, int]:
    """``(scale, zero_point)`` for the range ``[min_val, max_val]`` widened to contain 0.

    ``lo = min(min_val, 0)``, ``hi = max(max_val, 0)``, ``scale = (hi - lo) / (qmax - qmin)``,
    ``zero_point = clamp(qmin - round_half_away(lo / scale), qmin, qmax)``; so 0.0 is exactly representable.
    An empty range (``lo == hi == 0``) gives ``scale = 1``, ``zero_point = 0`` for unsigned /
    the value that maps 0 to 0 for signed.
    """
    if not (math.isfinite(min_val) and math.isfinite(max_val)) or min_val > max_val:
        raise FixedPointError(f"fixed_point.asymmetric_qparams: bad range [{min_val}, {max_val}]")
    qmin, qmax = qrange(bits, signed)
    lo, hi = min(float(min_val), 0.0), max(float(max_val), 0.0)
    if hi == lo:
        return 1.0, 0
    scale = (hi - lo) / (qmax - qmin)
    v = lo / scale
    zp = qmin - int(math.copysign(math.floor(abs(v) + 0.5), v))
    return scale, max(qmin, min(qmax, zp))


def round_float(x: torch.Tensor, mode: str = "half_away_from_zero") -> torch.Tensor:
    """Round floats to integral values with one of :data:`ROUNDING_MODES` (same meanings as for integers)."""
    _check_mode(mode)
    if mode == "half_away_from_zero":
        # exact: |x| - floor(|x|) has no rounding error (Sterbenz), whereas floor(|x| + 0.5) rounds the sum
        # first and sends e.g. f32 0.49999997 to 1
        a = torch.abs(x)
        t = torch.floor(a)
        return torch.sign(x) * (t + (a - t >= 0.5).to(x.dtype))
    if mode == "half_even":
        return torch.round(x)
    if mode == "half_up":
        return torch.floor(x + 0.5)
    if mode == "half_down":
        return torch.ceil(x - 0.5)
    if mode == "toward_zero":
        return torch.trunc(x)
    if mode == "floor":
        return torch.floor(x)
    return torch.ceil(x)


def quantize(x: torch.Tensor, scale, zero_point=0, *, qmin: int = -128, qmax: int = 127,
             rounding: str = "half_away_from_zero", axis: int | None = None,
             dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` (per tensor, or per channel along ``axis``).

    The division runs in ``x``'s float dtype (float32 for activations), like the reference ops.
    """
    s = _per_channel(scale, x.ndim, axis)
    s = s.to(x.dtype) if isinstance(s, torch.Tensor) else s
    zp = _per_channel(zero_point, x.ndim, axis)
    q = round_float(x / s, rounding) + zp
    return torch.clamp(q, qmin, qmax).to(dtype)


def dequantize(q: torch.Tensor, scale, zero_point=0, *, axis: int | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x̂ = (q - zero_point) · scale`` in ``dtype``."""
    s = _per_channel(scale, q.ndim, axis)
    zp = _per_channel(zero_point, q.ndim, axis)
    return (q.to(dtype) - torch.as_tensor(zp).to(dtype)) * torch.as_tensor(s).to(dtype)


def fake_quantize(x: torch.Tensor, scale, zero_point=0, *, qmin: int = -128, qmax: int = 127,
                  rounding: str = "half_away_from_zero", axis: int | None = None) -> torch.Tensor:
    """Quantize then dequantize (``dequantize(quantize(x))``), in ``x``'s dtype: the float simulation of int8."""
    q = quantize(x, scale, zero_point, qmin=qmin, qmax=qmax, rounding=rounding, axis=axis, dtype=x.dtype)
    return dequantize(q, scale, zero_point, axis=axis, dtype=x.dtype)

"""The int8 grid of a calibrated activation: ``(scale, zero_point)`` from its calibration entry.

One definition, read by the INT8 lowering (:mod:`torch_tpu.lowering.qparams`) and by the fake-quant
simulation (:mod:`torch_tpu.quant.simulate`, :mod:`torch_tpu.quant.mixed_precision`), so both quantize
every tensor onto the same grid. With threshold ``T`` and observed range ``[min, max]`` of a tensor:

* **symmetric** (default), TPU-MLIR's symmetric mode with its unsigned grid, plus one-sided ranges:

  - ``min >= 0`` (relu/relu6 outputs, sigmoid/hardsigmoid gates, softmax ...): **unsigned** range
    ``[0, T]`` on all 256 codes, ``s = f32(T / 255)``, ``zp = -128`` — the uint8 grid stored in int8
    (``q_int8 = q_uint8 - 128``). A symmetric grid would leave the 128 negative codes unused and
    double the step.
  - ``-T · ONE_SIDED < min < 0`` (silu, gelu, hardswish outputs: bounded below by -0.28, -0.17, -0.375;
    :data:`ONE_SIDED` = 1/2): the **one-sided** range ``[min, T]`` on all 256 codes,
    ``s = f32((T - min) / 255)``, ``zp = clamp(-128 + round(-min / s), -128, 127)``. The step is at most
    3/4 of the signed one (``(T + T/2) / 255 < 0.75 · T / 127``); a symmetric grid spends about half its
    codes on a negative side that holds a few percent of the range.
  - otherwise signed, ``s = f32(T / 127)``, ``zp = 0`` (codes -127..127).

* **asymmetric** (``asymmetric=True``): the observed range clipped by the method's threshold on each side,
  ``[lo, hi] = [max(min, -128/127 · T), min(max, T)]`` (:func:`clipped_range`: where the signed grid of
  ``T`` clips), then
  ``(s, zp) = asymmetric_qparams(min(lo, 0), max(hi, 0))`` (signed int8, from :mod:`torch_tpu.fixed_point`).
  The threshold method (kl, percentile, mse ...) decides how far the tails are clipped, as it does for the
  symmetric grid; a one-sided tensor keeps its whole short side and 256 codes over ``[lo, hi]``.

Every int8 TPU op takes zero points, so the unsigned grid needs no other op: a conv reading it pads
with ``zp`` and subtracts it before the products; a fused relu saturates at ``qmin = zp = -128``.

Example:
    >>> activation_qparams(CalibrationEntry(2.55, 0.0, 3.0))
    (0.009999999776482582, -128)
    >>> activation_qparams(CalibrationEntry(1.27, -1.0, 3.0))
    (0.009999999776482582, 0)
    >>> activation_qparams(CalibrationEntry(2.3, -0.25, 3.0))
    (0.009999999776482582, -103)
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np

from torch_tpu.fixed_point import asymmetric_qparams, scale_from_threshold
from torch_tpu.quant.tables import CalibrationEntry

UNSIGNED_ZERO_POINT = -128

#: a tensor whose negative side reaches less than this fraction of its threshold gets the one-sided grid.
ONE_SIDED = 0.5

#: what the simulation accepts per tensor: a bare symmetric threshold (signed grid) or a table entry.
ActivationSpec = Union[float, CalibrationEntry]


def _f32(v: float) -> float:
    return float(np.float32(v))


def is_unsigned(entry: CalibrationEntry) -> bool:
    """Whether the symmetric scheme puts the tensor on the unsigned grid (it was never negative)."""
    return entry.min >= 0.0


def positive_levels(threshold: float, min_val: float) -> int:
    """How many grid steps of the symmetric scheme lie in ``[0, T]`` for a tensor with this threshold and
    minimum: 127 on the signed grid, 255 on the unsigned one, ``255 · T / (T - min)`` on the one-sided one.
    The ``kl`` threshold method models this many quantization levels (:mod:`torch_tpu.quant.thresholds`).
    """
    if min_val >= 0.0:
        return 255
    if min_val > -ONE_SIDED * threshold:
        return int(round(255.0 * threshold / (threshold - min_val)))
    return 127


def activation_qparams(entry: ActivationSpec, asymmetric: bool = False) -> tuple[float, int]:
    """``(scale as f32, zero_point)`` of one activation (module doc).

    A bare float is a symmetric threshold with no range known: the signed grid ``T / 127``.
    """
    if not isinstance(entry, CalibrationEntry):
        return _f32(scale_from_threshold(float(entry))), 0
    if asymmetric:
        lo, hi = clipped_range(entry)
        scale, zp = asymmetric_qparams(min(lo, 0.0), max(hi, 0.0))
        return _f32(scale), int(zp)
    if is_unsigned(entry):
        return _f32(scale_from_threshold(entry.threshold, symmetric=False)), UNSIGNED_ZERO_POINT
    if entry.min > -ONE_SIDED * entry.threshold:
        scale = _f32((entry.threshold - entry.min) / 255.0)
        zp = UNSIGNED_ZERO_POINT + int(math.floor(-entry.min / scale + 0.5))
        return scale, max(-128, min(127, zp))
    return _f32(scale_from_threshold(entry.threshold)), 0


def clipped_range(entry: CalibrationEntry) -> tuple[float, float]:
    """The observed range clipped where the signed symmetric grid of the threshold clips it:
    ``[max(min, -128/127 · T), min(max, T)]`` (codes -128 and 127 of ``s = T / 127``; so an entry written
    from int8 qparams, e.g. a TFLite tensor with ``zp = 0``: ``[-128 s, 127 s]``, ``T = 127 s``, keeps its grid)."""
    t = abs(float(entry.threshold))
    neg = -t * 128.0 / 127.0
    lo = float(entry.min) if float(entry.min) >= neg * (1.0 + 1e-9) else neg   # (1 + 1e-9): rounding of 128/127
    hi = min(float(entry.max), t)
    return (lo, hi) if lo <= hi else (hi, hi)


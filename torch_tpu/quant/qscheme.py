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

* **asymmetric** (``asymmetric=True``): ``(s, zp) = asymmetric_qparams(min(min, 0), max(max, 0))``
  (signed int8, from :mod:`torch_tpu.fixed_point`).

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
        scale, zp = asymmetric_qparams(min(entry.min, 0.0), max(entry.max, 0.0))
        return _f32(scale), int(zp)
    if is_unsigned(entry):
        return _f32(scale_from_threshold(entry.threshold, symmetric=False)), UNSIGNED_ZERO_POINT
    if entry.min > -ONE_SIDED * entry.threshold:
        scale = _f32((entry.threshold - entry.min) / 255.0)
        zp = UNSIGNED_ZERO_POINT + int(math.floor(-entry.min / scale + 0.5))
        return scale, max(-128, min(127, zp))
    return _f32(scale_from_threshold(entry.threshold)), 0

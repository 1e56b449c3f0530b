"""Quantization parameters of a TOP graph's tensors for INT8 lowering, from a calibration table.

Formulas (all fixed-point arithmetic comes from :mod:`torch_tpu.fixed_point`):

* activation ``t`` with calibrated threshold ``T`` and observed range ``[min_t, max_t]``: the grid of
  :func:`torch_tpu.quant.qscheme.activation_qparams` (shared with the fake-quant simulation) -- symmetric
  (default): the unsigned grid ``s_t = f32(T / 255)``, ``zp_t = -128`` when ``min_t >= 0``; the one-sided
  grid ``[min_t, T]`` (``s_t = f32((T - min_t) / 255)``) when ``-T/2 < min_t < 0``; else ``s_t = f32(T / 127)``,
  ``zp_t = 0``; asymmetric (``asymmetric=True``):
  ``(s_t, zp_t) = asymmetric_qparams(max(min_t, -128/127 · T), min(max_t, T))`` (signed int8: the observed range
  clipped by the method's threshold on each side);
* constant operand ``c`` of an element-wise op: symmetric per tensor, ``s_c = max|c| / 127``;
* weight ``W`` per output channel ``o``: ``s_w[o] = max|W[o]| / 127``, ``W_q = round(W / s_w)``;
* bias ``b``: ``b_q[o] = clamp(round(b[o] / (s_x · s_w[o])), int32)``;
* requantization ``m · 2^-shift ≈ s_x · s_w[o] / s_y`` by ``quantize_multiplier`` (factors capped at ``2^22``,
  where every non-zero accumulator saturates anyway);
* fused activation bounds: relu ``qmin = zp_y``; relu6 ``qmax = zp_y + round(6 / s_y)``;
  clip ``[lo, hi]``: ``qmin = zp_y + round(lo / s_y)``, ``qmax = zp_y + round(hi / s_y)`` (within [-128, 127]).

Range-preserving ops (reshape, permute, slice, max pool, ...) give their output the qparams of their input
(:meth:`QuantParams.inherit`), so no requantization is needed there.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping

import numpy as np
import torch
import torch.fx as fx

from torch_tpu.errors import QuantizationError
from torch_tpu.fixed_point import quantize, quantize_multiplier, round_float, scale_from_threshold
from torch_tpu.graph.names import stable_name
from torch_tpu.graph.printer import op_str
from torch_tpu.quant.qscheme import activation_qparams
from torch_tpu.quant.tables import QTABLE_MODES, CalibrationTable, QTable

QMIN, QMAX = -128, 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# QuantizationError is defined with every other error in torch_tpu.errors.


@dataclasses.dataclass(frozen=True)
class QParams:
    """Per-tensor quantization: ``x ≈ (q - zero_point) · scale``."""

    scale: float
    zero_point: int = 0


def f32(v: float) -> float:
    """``v`` rounded to the nearest float32 (scales are stored as f32 in programs)."""
    return float(np.float32(v))


def load_calibration_table(table: CalibrationTable | str | os.PathLike) -> CalibrationTable:
    """A :class:`CalibrationTable`, or one loaded from its text file."""
    return table if isinstance(table, CalibrationTable) else CalibrationTable.load(table)


def load_qtable(qtable: QTable | Mapping[str, str] | str | os.PathLike | None) -> QTable:
    """A :class:`QTable` from a QTable, a path, a ``{stable_name: mode}`` dict or None (empty)."""
    if qtable is None:
        return QTable()
    if isinstance(qtable, QTable):
        return qtable
    if isinstance(qtable, Mapping):
        return QTable(dict(qtable))
    return QTable.load(qtable)


class QuantParams:
    """Qparams of every TOP value of one graph (calibration table + inherited + constants).

    Args:
        table: the calibration table (entries by stable name).
        consts: TOP constant node -> tensor (for constant operands of element-wise ops).
        asymmetric: asymmetric activations (range ``[min, max]`` clipped by the threshold) instead of
            symmetric thresholds.
    """

    def __init__(self, table: CalibrationTable, consts: Mapping[fx.Node, torch.Tensor], asymmetric: bool = False):
        self.table = table
        self.consts = consts
        self.asymmetric = asymmetric
        self._inherited: dict[fx.Node, QParams] = {}

    def of(self, node: fx.Node) -> QParams:
        """The qparams of TOP value ``node`` (error naming the tensor and op when it has no entry)."""
        if node in self._inherited:
            return self._inherited[node]
        if node in self.consts:
            amax = float(self.consts[node].detach().abs().max()) if self.consts[node].numel() else 0.0
            return QParams(f32(scale_from_threshold(amax)), 0)
        name = stable_name(node)
        if name not in self.table:
            op = op_str(node.target) if node.op == "call_function" else node.op
            raise QuantizationError(f"lowering/qparams.py: the calibration table has no entry for tensor '{name}' "
                                    f"({op}); int8 needs a threshold for every activation (re-run calibrate on "
                                    "this graph)")
        scale, zp = activation_qparams(self.table[name], self.asymmetric)
        return QParams(scale, zp)

    def inherit(self, node: fx.Node, source: fx.Node) -> None:
        """``node`` (a range-preserving op's output) takes the qparams of ``source``."""
        self._inherited[node] = self.of(source)


def quantize_weight(w: torch.Tensor, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8 weights: ``(W_q int8, s_w float64 [C])`` (module doc)."""
    wt = w.detach().to(torch.float64)
    amax = wt.transpose(0, axis).flatten(1).abs().amax(dim=1)
    s_w = scale_from_threshold(amax)
    return quantize(wt, s_w, axis=axis, dtype=torch.int8), s_w


def quantize_bias(b: torch.Tensor, s_x: float, s_w: torch.Tensor) -> torch.Tensor:
    """``clamp(round(b / (s_x · s_w)), int32)`` as int32."""
    q = round_float(b.detach().to(torch.float64) / (s_x * s_w))
    return torch.clamp(q, INT32_MIN, INT32_MAX).to(torch.int32)


#: requantization factors are capped here: an integer accumulator ``acc != 0`` times ``2^22`` saturates any
#: int8 output, so the cap changes no result (``acc == 0`` gives the zero point either way) and keeps
#: degenerate scales (a tensor that was all zeros in calibration) representable.
MAX_FACTOR = float(1 << 22)


def multiplier(real) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_multiplier(min(real, 2^22))`` for a float or a per-channel tensor (see :data:`MAX_FACTOR`)."""
    if isinstance(real, torch.Tensor):
        return quantize_multiplier(torch.clamp(real.to(torch.float64), max=MAX_FACTOR))
    return quantize_multiplier(min(float(real), MAX_FACTOR))


def scalar_multiplier(real: float) -> tuple[int, int]:
    """``(m, shift)`` as Python ints for a per-tensor factor (capped at :data:`MAX_FACTOR`)."""
    m, s = multiplier(float(real))
    return int(m), int(s)


def _q(v: float, qp: QParams) -> int:
    return qp.zero_point + int(math.copysign(math.floor(abs(v / qp.scale) + 0.5), v))


def act_bounds(act: str, lo: float, hi: float, qp: QParams) -> tuple[int, int]:
    """``(qmin, qmax)`` of a fused activation (module doc)."""
    if act == "none":
        return QMIN, QMAX
    if act == "relu":
        lo, hi = 0.0, math.inf
    elif act == "relu6":
        lo, hi = 0.0, 6.0
    qmin = QMIN if lo == -math.inf else max(QMIN, min(QMAX, _q(lo, qp)))
    qmax = QMAX if hi == math.inf else max(QMIN, min(QMAX, _q(hi, qp)))
    return qmin, qmax


def check_mode(mode: str, name: str) -> str:
    """A qtable mode, validated."""
    if mode not in QTABLE_MODES:
        raise QuantizationError(f"lowering/qparams.py: qtable mode {mode!r} for '{name}' (known: "
                                f"{', '.join(QTABLE_MODES)})")
    return mode

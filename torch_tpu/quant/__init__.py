"""Quantization: observers, threshold methods, propagation, tune/search, calibration, tables and weight rounding.

Fixed-point arithmetic (multipliers, shifts, rounding, scales) lives in :mod:`torch_tpu.fixed_point`.

Example:
    >>> table = calibrate(top, data, method="kl", num_samples=100, tune_num=5)   # doctest: +SKIP
    >>> table.save("resnet18_cali_table")                                      # doctest: +SKIP
"""

from torch_tpu.quant.calibrate import calibrate, load_samples, observe
from torch_tpu.quant.observers import CalibrationError, HistogramObserver, ObserverSet
from torch_tpu.quant.propagate import ScaleGroup, propagate_thresholds, scale_groups
from torch_tpu.quant.rounding import round_weights
from torch_tpu.quant.simulate import run_fake_quant
from torch_tpu.quant.tables import QTABLE_MODES, CalibrationEntry, CalibrationTable, QTable, TableError
from torch_tpu.quant.thresholds import THRESHOLD_METHODS, compute_threshold

__all__ = ["CalibrationEntry", "CalibrationError", "CalibrationTable", "HistogramObserver", "ObserverSet",
           "QTABLE_MODES", "QTable", "ScaleGroup", "THRESHOLD_METHODS", "TableError", "calibrate",
           "compute_threshold", "load_samples", "observe", "propagate_thresholds", "round_weights", "run_fake_quant",
           "scale_groups"]

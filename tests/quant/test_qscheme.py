"""The int8 grid of a calibrated activation (quant/qscheme.py), against its written-out definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torch_tpu.fixed_point import fake_quantize
from torch_tpu.quant.qscheme import ONE_SIDED, activation_qparams, positive_levels
from torch_tpu.quant.tables import CalibrationEntry


@pytest.mark.parametrize("entry,grid", [
    (CalibrationEntry(4.0, -3.0, 4.5), "signed"),
    (CalibrationEntry(4.0, 0.0, 4.5), "unsigned"),          # relu / relu6 / sigmoid outputs
    (CalibrationEntry(0.7, 0.3, 0.75), "unsigned"),          # a gate far from 0
    (CalibrationEntry(4.0, -0.2785, 6.0), "one-sided"),      # silu
    (CalibrationEntry(4.0, -2.0, 6.0), "signed"),            # exactly -T/2: signed
])
def test_grid_choice_and_what_it_represents(entry, grid):
    s, zp = activation_qparams(entry)
    t = entry.threshold
    assert s == float(np.float32(s))
    if grid == "signed":
        assert (s, zp) == (float(np.float32(t / 127)), 0)
    elif grid == "unsigned":
        assert (s, zp) == (float(np.float32(t / 255)), -128)
    else:
        assert s == pytest.approx((t - entry.min) / 255, rel=1e-6) and -128 < zp < 0
    # 0 is exact; the range [max(min, -T), T] is covered to half a step; the step is the finest of the grids
    lo = 0.0 if entry.min >= 0 else max(entry.min, -t)
    x = torch.tensor([0.0, lo, t], dtype=torch.float32)
    y = fake_quantize(x, s, zp)
    assert y[0] == 0.0
    assert torch.all((y - x).abs() <= s / 2 + 1e-6), (x, y)
    assert s <= float(np.float32(t / 127)) + 1e-12
    assert positive_levels(t, entry.min) == (127 if grid == "signed" else 255 if grid == "unsigned"
                                             else round(255 * t / (t - entry.min)))


def test_one_sided_step_is_at_most_three_quarters_of_the_signed_one():
    t = 3.0
    for m in np.linspace(-ONE_SIDED * t + 1e-6, -1e-6, 50):
        s, _ = activation_qparams(CalibrationEntry(t, float(m), 5.0))
        assert s < 0.76 * t / 127


def test_bare_threshold_and_asymmetric():
    assert activation_qparams(2.54) == (float(np.float32(2.54 / 127)), 0)
    s, zp = activation_qparams(CalibrationEntry(1.0, -1.0, 3.0), asymmetric=True)
    assert s == pytest.approx(4.0 / 255, rel=1e-6) and zp == -128 + round(1.0 / (4.0 / 255))

"""The int8 grid of a calibrated activation (quant/qscheme.py), against its written-out definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torch_tpu.fixed_point import fake_quantize
from torch_tpu.quant.qscheme import ONE_SIDED, activation_qparams, clipped_range, positive_levels
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
    # asymmetric: [min, max] clipped where the signed grid of T clips ([-128/127 T, T]): [-1, 3], T = 1.5 -> [-1, 1.5]
    s, zp = activation_qparams(CalibrationEntry(1.5, -1.0, 3.0), asymmetric=True)
    assert s == pytest.approx(2.5 / 255, rel=1e-6) and zp == -128 + round(1.0 / (2.5 / 255))
    assert clipped_range(CalibrationEntry(1.5, -1.0, 3.0)) == (-1.0, 1.5)
    assert clipped_range(CalibrationEntry(1.27, -6.0, 3.0)) == (pytest.approx(-1.28), 1.27)
    assert clipped_range(CalibrationEntry(1.27, -1.28, 1.27)) == (-1.28, 1.27)     # an int8 grid's own entry
    assert clipped_range(CalibrationEntry(2.0, 0.5, 3.0)) == (0.5, 2.0)


def _sqnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(10 * torch.log10(x.pow(2).sum() / (x - y).pow(2).sum()))


@pytest.mark.parametrize("method", ["kl", "percentile", "mse", "max"])
def test_asymmetric_honours_the_threshold_and_beats_symmetric_on_a_skewed_tensor(method):
    """A skewed tensor (long positive tail, a negative side of about a third): the asymmetric grid over
    the method's clipped range has an SQNR at least the symmetric grid's, and it clips the tail where the
    method says (the old min/max rule ignored the threshold)."""
    from torch_tpu.quant.observers import HistogramObserver
    from torch_tpu.quant.thresholds import compute_threshold

    g = torch.Generator().manual_seed(0)
    pos = torch.distributions.Gamma(torch.tensor(1.5), torch.tensor(1.0)).sample((40000,))
    x = torch.where(torch.rand(40000, generator=g) < 0.7, pos, -0.4 * pos)
    x[:3] = 40.0 + torch.rand(3, generator=g)              # outliers the clipping methods cut off
    obs = HistogramObserver("skewed")
    obs.update(x)
    entry = CalibrationEntry(compute_threshold(obs, method), obs.min, obs.max)
    s_sym, zp_sym = activation_qparams(entry)
    s_asym, zp_asym = activation_qparams(entry, asymmetric=True)
    sym, asym = _sqnr(x, fake_quantize(x, s_sym, zp_sym)), _sqnr(x, fake_quantize(x, s_asym, zp_asym))
    assert asym >= sym - 1e-9, (method, entry, sym, asym)
    hi = (127 - zp_asym) * s_asym                           # the largest value the asymmetric grid holds
    assert hi <= min(entry.threshold, entry.max) + s_asym
    if method == "percentile":
        assert entry.threshold < 40.0 and hi < 40.0         # the threshold clips the outliers


def test_asymmetric_grid_is_never_coarser_and_clips_no_more_than_symmetric():
    """For any entry, the asymmetric grid's step is at most the symmetric grid's and it still holds the
    observed range clipped where the symmetric grid clips it (so on calibration data it is never worse)."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        t = float(rng.uniform(0.01, 50.0))
        lo = float(rng.choice([0.0, -rng.uniform(0, 0.3) * t, -rng.uniform(0.3, 2.0) * t]))
        hi = float(rng.uniform(0.5, 2.0) * t)
        entry = CalibrationEntry(t, lo, hi)
        s_sym, zp_sym = activation_qparams(entry)
        s_asym, zp_asym = activation_qparams(entry, asymmetric=True)
        assert s_asym <= s_sym * (1 + 1e-6), entry
        c_lo, c_hi = clipped_range(entry)
        assert (-128 - zp_asym) * s_asym <= min(c_lo, 0.0) + s_asym / 2 + 1e-9, entry
        assert (127 - zp_asym) * s_asym >= c_hi - s_asym / 2 - 1e-9, entry

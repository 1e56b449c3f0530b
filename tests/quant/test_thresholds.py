"""Threshold methods on known distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torch_tpu.fixed_point import fake_quantize
from torch_tpu.quant.observers import CalibrationError, HistogramObserver
from torch_tpu.quant.thresholds import (THRESHOLD_METHODS, compute_threshold, kl_divergence_curve,
                                        register_method)

SIGMA = 2.0


def observed(x: torch.Tensor, chunks: int = 4) -> HistogramObserver:
    obs = HistogramObserver("t")
    for c in x.chunk(chunks):
        obs.update(c)
    return obs


@pytest.fixture(scope="module")
def gauss():
    g = torch.Generator().manual_seed(0)
    return torch.randn(100_000, generator=g) * SIGMA


def test_max_is_exact(gauss):
    assert compute_threshold(observed(gauss), "max") == float(gauss.abs().max())


def test_gaussian_kl_and_mse_in_expected_band():
    # 20k values: a few samples of a small activation map. (Minimum-KL thresholds of a pure Gaussian
    # drift toward the max as the sampled tail fills in: about 3.8 sigma at 10k values, 4.5 at 1M.)
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(0)) * SIGMA
    obs = observed(x)
    for method in ("kl", "mse"):
        t = compute_threshold(obs, method)
        assert 2.5 * SIGMA < t < 4.5 * SIGMA, (method, t / SIGMA)
        assert t < obs.abs_max


def test_relu_zeros_do_not_pull_kl_down():
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(0)) * SIGMA
    relu = observed(torch.relu(x))
    t_relu = compute_threshold(relu, "kl")
    assert t_relu == compute_threshold(observed(x[x > 0]), "kl")       # exact zeros are left out
    assert 2.5 * SIGMA < t_relu < 4.5 * SIGMA
    # counted in bin 0, the zero spike would drag the minimum-KL threshold far down
    cands, kl = kl_divergence_curve(relu.hist)
    assert (cands[np.argmin(kl)] + 0.5) * relu.bin_width < 0.5 * t_relu


def test_percentile_matches_exact_quantile(gauss):
    obs = observed(gauss)
    for p in (90.0, 99.0, 99.9):
        exact = float(np.percentile(gauss.abs().numpy(), p))
        assert abs(compute_threshold(obs, "percentile", percentile=p) - exact) <= obs.bin_width, p
    assert compute_threshold(obs, "percentile", percentile=100.0) == float(gauss.abs().max())
    with pytest.raises(CalibrationError, match="percentile"):
        compute_threshold(obs, "percentile", percentile=0.0)


def test_uniform_thresholds_near_max():
    x = torch.rand(100_000, generator=torch.Generator().manual_seed(1)) * 6 - 3
    obs = observed(x)
    for method in ("kl", "percentile", "mse"):
        assert compute_threshold(obs, method) >= 0.97 * 3.0, method


def test_outlier_percentile_and_kl_well_below_max(gauss):
    x = torch.cat([gauss, torch.tensor([100.0 * SIGMA])])
    obs = observed(x)
    assert compute_threshold(obs, "max") == 100.0 * SIGMA
    assert compute_threshold(obs, "percentile") < 5 * SIGMA
    assert compute_threshold(obs, "kl") < 0.1 * 100 * SIGMA


def test_mse_choice_close_to_brute_force():
    """The histogram model's choice is within 3 % of the best actual int8 MSE over a grid of thresholds."""
    x = torch.randn(20_000, generator=torch.Generator().manual_seed(2)) * SIGMA
    t = compute_threshold(observed(x), "mse")

    def actual(th: float) -> float:
        return float(((fake_quantize(x, th / 127) - x) ** 2).mean())

    grid = np.linspace(2.0 * SIGMA, float(x.abs().max()), 40)
    best = min(actual(g) for g in grid)
    assert actual(t) <= 1.03 * best


def test_registry_and_errors():
    with pytest.raises(CalibrationError, match="already registered"):
        register_method("kl")(lambda obs: 1.0)
    with pytest.raises(CalibrationError, match="unknown threshold method 'entropy'"):
        compute_threshold(observed(torch.ones(4)), "entropy")
    with pytest.raises(CalibrationError, match="'t': no calibration data"):
        compute_threshold(HistogramObserver("t"), "kl")
    zeros = observed(torch.zeros(8), chunks=1)
    assert all(0 < compute_threshold(zeros, m) < 1e-6 for m in THRESHOLD_METHODS)

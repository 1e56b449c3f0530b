"""Threshold methods on known distributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torch_tpu.fixed_point import fake_quantize
from torch_tpu.quant.observers import CalibrationError, HistogramObserver
from torch_tpu.quant.qscheme import positive_levels
from torch_tpu.quant.thresholds import (THRESHOLD_METHODS, _nonzero_hist, compute_threshold, kl_divergence_curve,
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
    # 40k values: a few samples of a small activation map (kl needs 16 per bin on average, 32768; below
    # that it takes the max, see test_kl_on_a_sparse_histogram_is_the_max). Minimum-KL thresholds of a
    # pure Gaussian drift toward the max as the sampled tail fills in (about 4.5 sigma at 1M values).
    x = torch.randn(40_000, generator=torch.Generator().manual_seed(1)) * SIGMA
    obs = observed(x)
    for method in ("kl", "mse"):
        t = compute_threshold(obs, method)
        assert 2.5 * SIGMA < t < 4.5 * SIGMA, (method, t / SIGMA)
        assert t < obs.abs_max


def test_relu_zeros_do_not_pull_kl_down():
    x = torch.randn(80_000, generator=torch.Generator().manual_seed(0)) * SIGMA
    relu = observed(torch.relu(x))
    t_relu = compute_threshold(relu, "kl")
    assert t_relu == compute_threshold(observed(x[x > 0]), "kl")       # exact zeros are left out
    assert 2.5 * SIGMA < t_relu < 4.5 * SIGMA
    # counted in bin 0, the zero spike would drag the minimum-KL threshold far down
    cands, kl = kl_divergence_curve(relu.hist)
    assert (cands[np.argmin(kl)] + 0.5) * relu.bin_width < 0.5 * t_relu


def test_kl_never_clips_below_the_coverage_floor():
    # values far from 0 on both sides (signed grid), the smallest of them in bin 623 of [0, 1): the
    # candidate of 624 bins sees one spike in P and in Q, KL = 0, which plain KL picks (an SE gate in
    # efficientnet_b0 had exactly this shape); the floor keeps 99 % of the values inside the threshold
    g = torch.Generator().manual_seed(3)
    mag = torch.cat([torch.full((500,), 623.5 / 2048), 0.31 + 0.44 * torch.rand(59_500, generator=g)])
    x = torch.where(torch.rand(60_000, generator=g) < 0.5, -mag, mag)
    obs = observed(x)
    cands, kl = kl_divergence_curve(_nonzero_hist(obs))
    assert (cands[np.argmin(kl)] + 0.5) * obs.bin_width < 0.31           # the degenerate choice
    t = compute_threshold(obs, "kl")
    assert t >= float(torch.quantile(x.abs(), 0.99)) - obs.bin_width
    assert t == compute_threshold(obs, "kl")                              # deterministic


def test_kl_on_a_sparse_histogram_is_the_max():
    x = torch.randn(2_000, generator=torch.Generator().manual_seed(4)) * SIGMA   # < 16 values per bin
    assert compute_threshold(observed(x), "kl") == float(x.abs().max())


def test_kl_on_one_sided_tensors_is_mse_on_their_grid():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(80_000, generator=g) * SIGMA
    gate = torch.sigmoid(x)                                       # unsigned grid: 255 steps in [0, T]
    obs = observed(gate)
    assert compute_threshold(obs, "kl") == compute_threshold(obs, "mse", qmax=255)
    assert compute_threshold(obs, "kl") > 0.99 * float(gate.max())
    silu = torch.nn.functional.silu(x)                            # one-sided grid [min, T]
    obs = observed(silu)
    t = compute_threshold(obs, "kl")
    assert positive_levels(t, obs.min) > 127                     # (steps taken from the KL threshold)
    assert t in {compute_threshold(obs, "mse", qmax=q) for q in range(128, 256)}
    signed = observed(x)                                          # signed grid: plain (guarded) KL
    assert compute_threshold(signed, "kl") < 0.9 * float(x.abs().max())


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


def kl_curve_loop(hist: np.ndarray, levels: int = 128, stride: int = 16, start: int = 0):
    """The KL curve candidate by candidate, written out from the module doc (independent reference)."""
    hist = np.asarray(hist, dtype=np.float64)
    last = int(np.flatnonzero(hist)[-1]) + 1
    cands = list(range(max(levels, start), last, stride)) + [last]
    out = []
    for i in cands:
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        nz = p > 0
        q = np.zeros(i)
        for j in range(levels):
            lo, hi = (j * i) // levels, ((j + 1) * i) // levels
            n = nz[lo:hi].sum()
            if n:
                q[lo:hi] = np.where(nz[lo:hi], hist[lo:hi].sum() / n, 0.0)
        p, q = p / p.sum(), q / q.sum()
        out.append(sum(pb * np.log(pb / (qb if qb > 0 else 1e-12)) for pb, qb in zip(p, q) if pb > 0))
    return np.array(cands), np.array(out)


@pytest.mark.parametrize("case", ["gauss", "relu_nonzero", "outliers_into_empty_level", "sparse_spikes"])
def test_vectorized_kl_curve_equals_the_loop(case):
    g = torch.Generator().manual_seed(7)
    if case == "gauss":
        x = torch.randn(50_000, generator=g)
    elif case == "relu_nonzero":
        x = torch.relu(torch.randn(50_000, generator=g)) * 3
        x = x[x > 0]
    elif case == "outliers_into_empty_level":       # a gap then far outliers: bin i-1 filled only by them
        x = torch.cat([torch.rand(30_000, generator=g) * 0.2, torch.full((40,), 0.97)])
    else:
        x = torch.cat([torch.full((500,), v) for v in (0.01, 0.3, 0.31, 0.6, 0.99)])
    hist = observed(x).hist
    cands, kl = kl_divergence_curve(hist)
    ref_c, ref = kl_curve_loop(hist)
    assert np.array_equal(cands, ref_c)
    np.testing.assert_allclose(kl, ref, rtol=1e-9, atol=1e-12)
    assert int(np.argmin(kl)) == int(np.argmin(ref))

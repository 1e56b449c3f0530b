"""Threshold methods: turn one tensor's statistics into a symmetric clipping threshold ``T``.

Each method reads a :class:`~torch_tpu.quant.observers.HistogramObserver` (``|x|`` histogram with
``bins`` bins of width ``w`` over ``[0, R)``, plus the exact ``max|x|``) and returns ``T > 0``; the int8
scale is then ``T / 127``. Methods live in :data:`THRESHOLD_METHODS`, a registry that refuses duplicates.

* ``max``: ``T = max|x|`` (exact, not from the histogram).
* ``percentile``: the smallest ``T`` with ``P(|x| <= T) >= p/100`` (default ``p = 99.99``), linearly
  interpolated inside the bin where the cumulative count crosses ``p``.
Exact zeros (counted by the observer) are left out of ``kl`` and ``mse``: they quantize exactly at
any scale, and a ReLU output's spike of zeros would otherwise dominate bin 0.

* ``kl`` (TensorRT's entropy calibration, as TPU-MLIR's ``kld_calibrator``): for a candidate of ``i``
  bins, ``P`` is the histogram's first ``i`` bins with all counts beyond added to bin ``i-1``; ``Q``
  merges those ``i`` bins into 128 levels (level ``j`` spans bins ``[floor(j·i/128), floor((j+1)·i/128))``)
  and spreads each level's total evenly over its non-empty bins. The candidate minimising
  ``KL(P‖Q) = Σ p·log(p/q)`` wins; ``T = (i + 0.5)·w``. Candidates run from ``i = 128`` to the last
  non-empty bin with a stride of :data:`KL_STRIDE` = 16 bins (TPU-MLIR steps by 128 bins, i.e. only 16
  candidates over 2048 bins; 16 gives 8× finer thresholds), plus the last non-empty bin itself.
  Three guards, each found on zoo CNNs with random weights (``tests/quant/test_int8_accuracy.py``):

  - **coverage floor**: no candidate below the bin holding :data:`KL_MIN_COVERAGE` = 99 % of the
    non-zero values. A tensor whose values all sit far from 0 (an SE block's sigmoid gate in
    [0.30, 0.75]) has ``KL = 0`` for every candidate below its smallest value (``P`` and ``Q`` are then
    both one spike), and plain KL picked ``T = 0.305``: 99.9 % of the gate clipped (efficientnet_b0
    output cosine 0.90 -> 0.97 at 64x64 with the floor).
  - **sparse histograms**: fewer than :data:`KL_MIN_VALUES_PER_BIN` = 16 non-zero values per bin
    on average (a pooled ``[N, C, 1, 1]`` squeeze-excite vector, a classifier's features, over a few
    samples): ``T = max|x|``. The tail is then a handful of channels, not a sampled distribution, and
    KL's choice is noise (it clipped an SE squeeze at 0.35 · max).
  - **one-sided grids**: when ``T`` puts the tensor on the unsigned or one-sided grid of
    :mod:`torch_tpu.quant.qscheme` (relu, silu, hardswish, sigmoid outputs), the ``mse`` threshold
    on that grid (``qmax`` = its steps in ``[0, T]``). Clipping such a tensor removes only positive
    mass, an error of one sign that adds up in the convolutions and means that read it instead of
    averaging out, which KL does not weigh: on efficientnet_b0 (96x96, 4 samples) fake-quantizing only
    the silu outputs gave cosine 0.94 with KL thresholds, 0.99 with max ones.
* ``mse``: minimises the expected squared error of int8 quantization with ``qmax`` steps in ``[0, T]``
  (127 by default) over candidates
  ``T = k·w`` (every bin edge, ``k = 1..last``). With step ``s = T/qmax`` and bin centres ``c``:
  ``E(T) = Σ_{c<T} n_c · s²/12 + Σ_{c≥T} n_c · (c − T)²`` (uniform rounding noise inside the range,
  clipping error outside), computed for all candidates at once with suffix sums.

Example:
    >>> import torch
    >>> obs = HistogramObserver(); obs.update(torch.randn(40000, generator=torch.Generator().manual_seed(1)))
    >>> 2.5 < compute_threshold(obs, "kl") < 4.5
    True
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from torch_tpu.quant.observers import CalibrationError, HistogramObserver
from torch_tpu.quant.qscheme import positive_levels

KL_LEVELS = 128
KL_STRIDE = 16
KL_MIN_COVERAGE = 0.99
KL_MIN_VALUES_PER_BIN = 16
KL_EPSILON = 1e-12
DEFAULT_PERCENTILE = 99.99

ThresholdFn = Callable[..., float]
THRESHOLD_METHODS: dict[str, ThresholdFn] = {}


def register_method(name: str) -> Callable[[ThresholdFn], ThresholdFn]:
    """Add a threshold method ``fn(observer, **options) -> float`` to :data:`THRESHOLD_METHODS`."""
    def deco(fn: ThresholdFn) -> ThresholdFn:
        if name in THRESHOLD_METHODS:
            raise CalibrationError(f"threshold method '{name}' is already registered")
        THRESHOLD_METHODS[name] = fn
        return fn
    return deco


def _last_nonzero(hist: np.ndarray) -> int:
    """Number of bins up to and including the last non-empty one (0 for an empty histogram)."""
    nz = np.flatnonzero(hist)
    return int(nz[-1]) + 1 if nz.size else 0


def _nonzero_hist(obs: HistogramObserver) -> np.ndarray:
    """The histogram without the exact zeros (bin 0 keeps only its non-zero values)."""
    h = obs.hist.astype(np.float64)
    h[0] -= obs.zeros
    return h


def _fallback(obs: HistogramObserver) -> float | None:
    """Thresholds for degenerate tensors: no data or all zeros -> a tiny positive threshold."""
    if obs.count == 0:
        raise CalibrationError(f"tensor '{obs.name}': no calibration data was observed")
    if obs.abs_max == 0.0:
        return 1e-8
    return None


@register_method("max")
def threshold_max(obs: HistogramObserver) -> float:
    """``T = max|x|``."""
    fb = _fallback(obs)
    return fb if fb is not None else obs.abs_max


@register_method("percentile")
def threshold_percentile(obs: HistogramObserver, percentile: float = DEFAULT_PERCENTILE) -> float:
    """Smallest ``T`` with at least ``percentile`` % of ``|x|`` at or below it (interpolated in the bin)."""
    if not 0.0 < percentile <= 100.0:
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
    fb = _fallback(obs)
    if fb is not None:
        return fb
    if percentile == 100.0:
        return obs.abs_max
    cum = np.cumsum(obs.hist)
    target = obs.count * percentile / 100.0
    k = int(np.searchsorted(cum, target, side="left"))
    below = cum[k - 1] if k > 0 else 0
    frac = (target - below) / max(obs.hist[k], 1)
    return float(min((k + frac) * obs.bin_width, obs.abs_max))


def kl_divergence_curve(hist: np.ndarray, levels: int = KL_LEVELS, stride: int = KL_STRIDE,
                        start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(candidate bin counts i, KL(P_i‖Q_i))`` for the ``kl`` method (definitions in the module doc).

    ``start``: no candidate below this many bins (the coverage floor, module doc).

    All candidates at once, from prefix sums: with ``p`` normalised by ``P``'s total ``S`` and ``q`` by
    ``Q``'s total (which equals ``S`` minus the outliers, Q being built from the un-augmented bins),
    ``KL = Σ_b (p_b/S) log(p_b/S) − Σ_b (p_b/S) log(q_b/S_q)`` over bins with ``p_b > 0``. ``Q`` is
    constant on the non-empty bins of a level, so the second sum is, per level, ``P``'s mass in it times
    ``log`` of that constant; both come from prefix sums over the levels' bin edges. Only bin ``i-1``
    (which takes the outliers) differs from the histogram, and is corrected separately.
    """
    hist = np.asarray(hist, dtype=np.float64)
    last = _last_nonzero(hist)
    if last <= max(levels, start):
        return np.array([last]), np.array([0.0])
    first = max(levels, start)
    cands = np.array(list(range(first, last, stride)) + [last])
    h = hist[:last]
    zero = np.zeros(1)
    cum = np.concatenate([zero, np.cumsum(h)])                       # cum[b] = sum(h[:b])
    cnz = np.concatenate([zero, np.cumsum(h > 0)])
    hlogh = np.concatenate([zero, np.cumsum(np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0))])
    total = float(cum[-1])
    i = cands[:, None]
    edges = (np.arange(levels + 1)[None, :] * i) // levels           # [n, levels + 1], level j: [e_j, e_j+1)
    beyond = total - cum[cands]                                      # outliers, added to bin i-1
    last_h = h[cands - 1]
    last_p = last_h + beyond
    lvl_sum = cum[edges[:, 1:]] - cum[edges[:, :-1]]                 # Q's mass per level (no outliers)
    lvl_nz = cnz[edges[:, 1:]] - cnz[edges[:, :-1]]
    # P's non-empty bins: the histogram's, plus bin i-1 if only the outliers fill it (in the last level)
    lvl_nz[:, -1] += (last_h == 0) & (last_p > 0)
    per_bin = np.divide(lvl_sum, lvl_nz, out=np.zeros_like(lvl_sum), where=lvl_nz > 0)
    p_lvl = lvl_sum.copy()                                           # P's mass per level
    p_lvl[:, -1] += beyond
    s_p = total
    s_q = (per_bin * lvl_nz).sum(axis=1)
    # Σ p log p over P's bins: the histogram's up to i-1, then bin i-1 with its outliers
    plogp = hlogh[cands - 1] + np.where(last_p > 0, last_p * np.log(np.where(last_p > 0, last_p, 1.0)), 0.0)
    with np.errstate(divide="ignore"):
        logq = np.where(per_bin > 0, np.log(np.where(per_bin > 0, per_bin, 1.0)), 0.0)
    plogq = (p_lvl * logq).sum(axis=1)
    # p > 0 with q == 0: only bin i-1 when its level is otherwise empty; its term uses an epsilon for the
    # normalised q (TensorRT smooths), and the other bins' p then sum to 1 - its p
    orphan = ((per_bin[:, -1] == 0) & (last_p > 0)).astype(np.float64)
    log_sq = np.log(np.where(s_q > 0, s_q, 1.0))
    kl = ((plogp - plogq) / s_p - np.log(s_p) + log_sq * (1.0 - orphan * last_p / s_p)
          - orphan * (last_p / s_p) * np.log(KL_EPSILON))
    kl = np.where(s_q > 0, kl, np.inf)
    return cands, kl


def coverage_bins(hist: np.ndarray, coverage: float) -> int:
    """The fewest leading bins holding at least ``coverage`` of the histogram's mass."""
    cum = np.cumsum(np.asarray(hist, dtype=np.float64))
    if cum.size == 0 or cum[-1] <= 0:
        return 0
    return int(np.searchsorted(cum, coverage * cum[-1], side="left")) + 1


@register_method("kl")
def threshold_kl(obs: HistogramObserver, levels: int = KL_LEVELS, stride: int = KL_STRIDE) -> float:
    """TensorRT-style minimum-KL threshold with ``levels`` quantized levels, with the guards of the module
    doc (sparse histogram -> max; no candidate under the coverage floor; one-sided grid -> mse)."""
    fb = _fallback(obs)
    if fb is not None:
        return fb
    hist = _nonzero_hist(obs)
    if hist.sum() < KL_MIN_VALUES_PER_BIN * obs.bins:
        return obs.abs_max
    cands, kl = kl_divergence_curve(hist, levels, stride, start=coverage_bins(hist, KL_MIN_COVERAGE))
    i = int(cands[int(np.argmin(kl))])
    t = float(min((i + 0.5) * obs.bin_width, obs.abs_max))
    steps = positive_levels(t, obs.min)
    if steps > KL_LEVELS - 1:          # unsigned / one-sided grid: clipping there is a one-signed error
        return threshold_mse(obs, qmax=steps)
    return t


def mse_curve(hist: np.ndarray, bin_width: float, qmax: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """``(candidate thresholds T_k = k·w, expected squared error E(T_k))`` for the ``mse`` method."""
    hist = np.asarray(hist, dtype=np.float64)
    last = _last_nonzero(hist)
    centres = (np.arange(last) + 0.5) * bin_width
    n = hist[:last]
    thresholds = np.arange(1, last + 1) * bin_width
    # suffix sums over bins whose centre is >= T_k, i.e. bins k..last-1
    sn = np.concatenate([np.cumsum(n[::-1])[::-1], [0.0]])
    sc = np.concatenate([np.cumsum((n * centres)[::-1])[::-1], [0.0]])
    sc2 = np.concatenate([np.cumsum((n * centres ** 2)[::-1])[::-1], [0.0]])
    k = np.arange(1, last + 1)
    t = thresholds
    clip = sc2[k] - 2 * t * sc[k] + t ** 2 * sn[k]
    inside = (sn[0] - sn[k]) * (t / qmax) ** 2 / 12.0
    return thresholds, clip + inside


@register_method("mse")
def threshold_mse(obs: HistogramObserver, qmax: int = 127) -> float:
    """Threshold minimising the expected squared quantization error (module doc)."""
    fb = _fallback(obs)
    if fb is not None:
        return fb
    t, err = mse_curve(_nonzero_hist(obs), obs.bin_width, qmax)
    return float(min(t[int(np.argmin(err))], obs.abs_max))


def compute_threshold(obs: HistogramObserver, method: str, **options: Any) -> float:
    """Run threshold method ``method`` (a key of :data:`THRESHOLD_METHODS`) on one observer."""
    try:
        fn = THRESHOLD_METHODS[method]
    except KeyError:
        raise CalibrationError(f"unknown threshold method '{method}' (known: {', '.join(sorted(THRESHOLD_METHODS))})") \
            from None
    if not obs.histogram and method != "max":
        raise CalibrationError(f"tensor '{obs.name}': method '{method}' needs a histogram, but its observer "
                               f"kept only min/max (a member whose threshold is propagated)")
    return float(fn(obs, **options))

"""Streaming per-tensor statistics for calibration: min/max and a 2048-bin histogram of ``|x|``.

A :class:`HistogramObserver` holds a fixed amount of state (a few floats and ``bins`` int64 counts)
however many samples it sees. Its histogram covers ``[0, R)`` with ``R`` always a power of two:

* a batch with ``a = max|x|`` needs ``R_a = 2^e`` where ``a = f·2^e``, ``f ∈ [0.5, 1)`` (so ``a < R_a``);
* ``|x|`` goes to bin ``floor(|x| · bins / R)`` — an exact float operation, because ``bins / R`` is a
  power of two;
* when a batch needs a wider range ``R' = 2^k·R``, the histogram is re-binned by summing groups of
  ``2^k`` adjacent bins. Since ``floor(floor(v) / 2^k) = floor(v / 2^k)``, the result is exactly the
  histogram the values would have had at ``R'`` from the start.

So histograms from any split of the data (batches, processes) merge bit-exactly (:meth:`merge`),
and :meth:`state_dict` / :meth:`from_state_dict` (JSON-able) or :meth:`ObserverSet.save` (``.npz``)
move them between processes. The power-of-two range costs at most a factor 2 of resolution
(between ``bins/2`` and ``bins`` bins are in use).

Example:
    >>> obs = HistogramObserver()
    >>> obs.update(torch.tensor([-1.0, 0.5, 3.0]))
    >>> obs.min, obs.max, obs.range, int(obs.hist.sum())
    (-1.0, 3.0, 4.0, 3)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from torch_tpu.errors import CalibrationError

DEFAULT_BINS = 2048


# CalibrationError is defined with every other error in torch_tpu.errors.


def range_for(abs_max: float) -> float:
    """The smallest power of two strictly greater than ``abs_max`` (``2^-24`` for 0)."""
    if abs_max <= 0.0:
        return 2.0 ** -24
    return math.ldexp(1.0, math.frexp(abs_max)[1])


class HistogramObserver:
    """min, max and a histogram of ``|x|`` for one tensor, updated batch by batch (rules in the module doc).

    Attributes:
        name: the tensor's stable name (used in error messages).
        bins: number of histogram bins (2048).
        min, max: signed extremes seen so far (``+inf``/``-inf`` before any data).
        range: ``R``, the histogram covers ``[0, R)``; 0 before any data.
        hist: int64 counts, ``bins`` long.
        count: number of elements seen.
        zeros: how many of them were exactly 0 (they sit in bin 0; threshold methods that score
            quantization error leave them out, since 0 is exact at every scale — a ReLU output is half zeros).
        histogram: ``False`` for a min/max-only observer (``hist`` stays all zero, ``range`` 0): calibration
            uses it for tensors whose threshold is propagated from another one (a relu or max pool output,
            :mod:`torch_tpu.quant.propagate`), which need only their own min/max; the histogram is most of
            an observer's cost.
    """

    def __init__(self, name: str = "", bins: int = DEFAULT_BINS, histogram: bool = True):
        if bins <= 0 or bins & (bins - 1):
            raise CalibrationError(f"observer '{name}': bins must be a power of two, got {bins}")
        self.name = name
        self.bins = bins
        self.min = math.inf
        self.max = -math.inf
        self.range = 0.0
        self.hist = np.zeros(bins, dtype=np.int64)
        self.count = 0
        self.zeros = 0
        self.histogram = histogram

    # -- facts -------------------------------------------------------------------------------
    @property
    def abs_max(self) -> float:
        """``max(|min|, |max|)`` (0 before any data)."""
        return 0.0 if self.count == 0 else max(abs(self.min), abs(self.max))

    @property
    def bin_width(self) -> float:
        return self.range / self.bins

    # -- updating ----------------------------------------------------------------------------
    def _grow(self, new_range: float) -> None:
        """Widen the histogram to ``new_range`` (a power-of-two multiple of the current one), exactly."""
        if self.range == 0.0:
            self.range = new_range
            return
        if new_range <= self.range:
            return
        factor = int(round(new_range / self.range))
        if factor >= self.bins:
            total = int(self.hist.sum())
            self.hist[:] = 0
            self.hist[0] = total
        else:
            folded = self.hist.reshape(-1, factor).sum(axis=1)
            self.hist[:] = 0
            self.hist[: folded.shape[0]] = folded
        self.range = new_range

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of values (any shape, float dtype).

        Cost per element: one min/max pass, ``|x|·bins/R`` (exact: a power-of-two factor) truncated to
        int32 (= floor, the values being non-negative and ``< bins``), one ``numpy.bincount`` and a non-zero
        count; about 3 ns on one core. Without a histogram (``histogram=False``) only the first and last.
        """
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise CalibrationError(f"observer '{self.name}': expects a float tensor, got "
                                   f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.numel() == 0:
            return
        x = x.detach()
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        lo, hi = torch.aminmax(x)
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise CalibrationError(f"observer '{self.name}': non-finite values (nan/inf) in the tensor")
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += x.numel()
        self.zeros += x.numel() - int(np.count_nonzero(x.reshape(-1).cpu().numpy()))   # 10x torch's here
        if not self.histogram:
            return
        self._grow(range_for(max(abs(lo), abs(hi))))
        # |x| < R, so |x| * bins / R < bins: truncation toward zero is the floor and no clamp is needed
        idx = torch.abs(x).mul_(self.bins / self.range).to(torch.int32).reshape(-1)
        self.hist += np.bincount(idx.cpu().numpy(), minlength=self.bins)

    def merge(self, other: "HistogramObserver") -> "HistogramObserver":
        """Add ``other``'s statistics into this observer (exact; returns ``self``)."""
        if other.bins != self.bins:
            raise CalibrationError(f"observer '{self.name}': cannot merge {other.bins} bins into {self.bins}")
        if other.histogram != self.histogram:
            raise CalibrationError(f"observer '{self.name}': cannot merge a min/max-only observer with a "
                                   f"histogram observer")
        if other.count == 0:
            return self
        if not self.histogram:
            self.min, self.max = min(self.min, other.min), max(self.max, other.max)
            self.count += other.count
            self.zeros += other.zeros
            return self
        hist = other.hist.copy()
        r = other.range
        if r < self.range:                      # fold a copy of the other up to our range
            tmp = HistogramObserver(other.name, other.bins)
            tmp.hist, tmp.range = hist, r
            tmp._grow(self.range)
            hist, r = tmp.hist, tmp.range
        else:
            self._grow(r)
        self.hist += hist
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.zeros += other.zeros
        return self

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (floats round-trip exactly through ``json``)."""
        return {"name": self.name, "bins": self.bins, "min": self.min, "max": self.max, "range": self.range,
                "count": self.count, "zeros": self.zeros, "histogram": self.histogram, "hist": self.hist.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "HistogramObserver":
        try:
            obs = cls(str(state.get("name", "")), int(state["bins"]), bool(state.get("histogram", True)))
            obs.min, obs.max = float(state["min"]), float(state["max"])
            obs.range, obs.count = float(state["range"]), int(state["count"])
            obs.zeros = int(state.get("zeros", 0))
            hist = np.asarray(state["hist"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"observer state '{state.get('name', '?')}': missing or bad field ({e})") from None
        if not obs.histogram:
            if hist.shape != (obs.bins,) or hist.any() or obs.range != 0.0 or not 0 <= obs.zeros <= obs.count:
                raise CalibrationError(f"observer state '{obs.name}': a min/max-only observer with histogram "
                                       f"data or a bad zero count")
        elif hist.shape != (obs.bins,) or (hist < 0).any() or int(hist.sum()) != obs.count or \
                not 0 <= obs.zeros <= (int(hist[0]) if obs.bins else 0):
            raise CalibrationError(f"observer state '{obs.name}': histogram does not match bins/count")
        if obs.range and math.frexp(obs.range)[0] != 0.5:
            raise CalibrationError(f"observer state '{obs.name}': range {obs.range} is not a power of two")
        obs.hist = hist
        return obs

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, HistogramObserver) and self.bins == other.bins and self.count == other.count
                and self.zeros == other.zeros and self.histogram == other.histogram
                and self.min == other.min and self.max == other.max and self.range == other.range
                and np.array_equal(self.hist, other.hist))

    def __repr__(self) -> str:
        return (f"HistogramObserver({self.name!r}, count={self.count}, min={self.min:.6g}, max={self.max:.6g}, "
                f"range={self.range:g})")


class ObserverSet:
    """Observers keyed by stable name, created on first sight; merge and save as a whole.

    Example:
        >>> obs = ObserverSet()
        >>> obs.update("conv1", torch.randn(4, 8))
        >>> list(obs)
        ['conv1']
    """

    def __init__(self, bins: int = DEFAULT_BINS):
        self.bins = bins
        self.observers: dict[str, HistogramObserver] = {}

    def update(self, name: str, x: torch.Tensor, histogram: bool = True) -> None:
        """Add ``x`` to ``name``'s observer, created on first sight (``histogram``: see
        :class:`HistogramObserver`; it applies only at creation)."""
        obs = self.observers.get(name)
        if obs is None:
            obs = self.observers[name] = HistogramObserver(name, self.bins, histogram)
        obs.update(x)

    def __getitem__(self, name: str) -> HistogramObserver:
        try:
            return self.observers[name]
        except KeyError:
            raise CalibrationError(f"no observer for tensor '{name}' (observed: {len(self.observers)} tensors)") \
                from None

    def __contains__(self, name: str) -> bool:
        return name in self.observers

    def __iter__(self) -> Iterator[str]:
        return iter(self.observers)

    def __len__(self) -> int:
        return len(self.observers)

    def merge(self, other: "ObserverSet") -> "ObserverSet":
        """Merge every observer of ``other`` into this set (tensors only one side saw are copied)."""
        for name, obs in other.observers.items():
            if name in self.observers:
                self.observers[name].merge(obs)
            else:
                self.observers[name] = HistogramObserver.from_state_dict(obs.state_dict())
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"bins": self.bins, "observers": [o.state_dict() for o in self.observers.values()]}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "ObserverSet":
        out = cls(int(state["bins"]))
        for s in state["observers"]:
            obs = HistogramObserver.from_state_dict(s)
            out.observers[obs.name] = obs
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.npz`` (histograms as an int64 array, the rest as JSON text; no pickles)."""
        path = Path(path)
        names = list(self.observers)
        meta = {"bins": self.bins, "observers": [{k: v for k, v in self.observers[n].state_dict().items()
                                                  if k != "hist"} for n in names]}
        hists = np.stack([self.observers[n].hist for n in names]) if names else np.zeros((0, self.bins), np.int64)
        np.savez(path, meta=np.array(json.dumps(meta)), hists=hists)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ObserverSet":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                hists = z["hists"]
        except (OSError, KeyError, ValueError) as e:
            raise CalibrationError(f"{path}: not an observer file ({e})") from None
        states = meta["observers"]
        if len(states) != hists.shape[0]:
            raise CalibrationError(f"{path}: {len(states)} observers but {hists.shape[0]} histograms")
        return cls.from_state_dict({"bins": meta["bins"],
                                    "observers": [{**s, "hist": h} for s, h in zip(states, hists)]})

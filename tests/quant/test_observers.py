"""Streaming observers: exact re-binning, exact merges, constant memory."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import torch

from torch_tpu.quant.observers import CalibrationError, HistogramObserver, ObserverSet, range_for


def reference_hist(values: np.ndarray, bins: int = 2048) -> tuple[np.ndarray, float]:
    """Histogram of |x| computed in one go at the final power-of-two range (numpy, float64)."""
    a = np.abs(values.astype(np.float64))
    r = 2.0 ** (math.frexp(float(a.max()))[1])
    idx = np.floor(a * bins / r).astype(np.int64)
    return np.bincount(idx, minlength=bins), r


def batches(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # growing ranges force several re-binnings (0.01 .. 300)
    return [torch.randn(64, generator=g) * s for s in (0.01, 0.3, 1.0, 5.0, 0.2, 40.0, 1.0, 300.0, 2.0, 0.5)]


def test_rebinning_equals_direct_histogram():
    obs = HistogramObserver("t")
    bs = batches()
    for b in bs:
        obs.update(b)
    allv = torch.cat(bs).numpy()
    ref, r = reference_hist(allv)
    assert obs.range == r
    assert np.array_equal(obs.hist, ref)
    assert obs.min == float(allv.min()) and obs.max == float(allv.max()) and obs.count == allv.size


@pytest.mark.parametrize("split", [1, 3, 5, 8])
def test_two_halves_merge_to_whole_bit_exact(split):
    bs = batches(1)
    whole, a, b = HistogramObserver("t"), HistogramObserver("t"), HistogramObserver("t")
    for x in bs:
        whole.update(x)
    for x in bs[:split]:
        a.update(x)
    for x in bs[split:]:
        b.update(x)
    # merging in either direction (small range into large, large into small) is exact
    assert HistogramObserver.from_state_dict(a.state_dict()).merge(b) == whole
    assert HistogramObserver.from_state_dict(b.state_dict()).merge(a) == whole


def test_state_dict_json_and_npz_round_trip(tmp_path):
    s = ObserverSet()
    for i, x in enumerate(batches(2)):
        s.update("conv1", x)
        s.update("relu", torch.relu(x))
    again = ObserverSet.from_state_dict(json.loads(json.dumps(s.state_dict())))
    assert again.observers == s.observers
    path = s.save(tmp_path / "obs.npz")
    loaded = ObserverSet.load(path)
    assert loaded.observers == s.observers
    assert loaded["relu"].zeros == int(sum((torch.relu(x) == 0).sum() for x in batches(2)))


def test_observer_sets_from_two_processes_merge():
    bs = batches(3)
    whole, p1, p2 = ObserverSet(), ObserverSet(), ObserverSet()
    for i, x in enumerate(bs):
        whole.update("a", x)
        (p1 if i % 2 else p2).update("a", x)
    p2.update("only_p2", bs[0])
    whole.update("only_p2", bs[0])
    p1.merge(ObserverSet.from_state_dict(json.loads(json.dumps(p2.state_dict()))))
    assert p1.observers == whole.observers


def test_memory_does_not_grow_with_samples():
    obs = ObserverSet()
    g = torch.Generator().manual_seed(0)
    tracemalloc.start()
    try:
        for i in range(1000):
            obs.update("x", torch.randn(2, 8, generator=g) * (1 + i % 7))
            obs.update("y", torch.rand(16, generator=g))
            if i == 9:
                size_10 = {k: len(v.hist) for k, v in obs.observers.items()}
                mem_10 = tracemalloc.get_traced_memory()[0]
        mem_1000 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert {k: len(v.hist) for k, v in obs.observers.items()} == size_10 == {"x": 2048, "y": 2048}
    assert obs["x"].count == 16000
    assert mem_1000 - mem_10 < 16_384, (mem_10, mem_1000)


def test_errors_and_edge_cases():
    obs = HistogramObserver("conv1")
    with pytest.raises(CalibrationError, match="conv1.*non-finite"):
        obs.update(torch.tensor([1.0, float("nan")]))
    with pytest.raises(CalibrationError, match="float"):
        obs.update(torch.tensor([1, 2]))
    obs.update(torch.zeros(4))
    assert obs.range == range_for(0.0) and obs.hist[0] == 4 and obs.zeros == 4
    obs.update(torch.tensor([3.0]))            # growth from the all-zero range keeps the zeros in bin 0
    assert obs.range == 4.0 and obs.hist[0] == 4 and obs.hist[1536] == 1
    with pytest.raises(CalibrationError, match="no observer for tensor 'missing'"):
        ObserverSet()["missing"]
    bad = obs.state_dict()
    bad["count"] += 1
    with pytest.raises(CalibrationError, match="conv1"):
        HistogramObserver.from_state_dict(bad)


def test_minmax_only_observer_round_trips_merges_and_refuses_histogram_methods():
    from torch_tpu.quant.thresholds import compute_threshold

    bs = batches(4)
    whole, p1, p2 = ObserverSet(), ObserverSet(), ObserverSet()
    for i, x in enumerate(bs):
        whole.update("relu", torch.relu(x), histogram=False)
        (p1 if i % 2 else p2).update("relu", torch.relu(x), histogram=False)
    p1.merge(ObserverSet.from_state_dict(json.loads(json.dumps(p2.state_dict()))))
    assert p1.observers == whole.observers
    o = whole["relu"]
    allv = torch.relu(torch.cat(bs))
    assert (o.min, o.max, o.count, o.zeros) == (0.0, float(allv.max()), allv.numel(), int((allv == 0).sum()))
    assert not o.hist.any() and o.range == 0.0
    assert compute_threshold(o, "max") == float(allv.max())
    with pytest.raises(CalibrationError, match="needs a histogram"):
        compute_threshold(o, "kl")
    with pytest.raises(CalibrationError, match="min/max-only"):
        HistogramObserver("relu").merge(o)
    bad = o.state_dict() | {"hist": [1] + [0] * (o.bins - 1)}
    with pytest.raises(CalibrationError, match="min/max-only"):
        HistogramObserver.from_state_dict(bad)

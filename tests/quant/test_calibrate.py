"""calibrate() on a captured small CNN with random data."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn as nn

from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.meta import run_named
from torch_tpu.graph.names import stable_name
from torch_tpu.quant import (CalibrationError, CalibrationTable, QTable, calibrate, observe, run_fake_quant,
                             scale_groups)
from torch_tpu.quant.observers import HistogramObserver
from torch_tpu.quant.propagate import is_activation
from torch_tpu.quant.calibrate import method_thresholds, statistics_tensors
from torch_tpu.quant.search import SEARCH_METHODS, search_thresholds
from torch_tpu.quant.thresholds import compute_threshold
from torch_tpu.quant.simulate import (cosine, eval_node, fake_quant_activation, first_float, fused_producers,
                                      run_env)
from torch_tpu.quant.tables import CalibrationEntry
from torch_tpu.quant.tune import candidates, group_consumers, tune_thresholds

N_CAL = 12


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x, bias):
        y = torch.relu(self.bn(self.c1(x)))
        y = nn.functional.max_pool2d(y, 2)
        z = torch.cat([self.c2(y), torch.relu(self.c3(y))], 1)
        z = nn.functional.max_pool2d(z, 2) + bias
        return self.fc(z.flatten(1))


def sample(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # a batch of 8: enough values per tensor for the kl method (thresholds.KL_MIN_VALUES_PER_BIN)
    return torch.randn(8, 3, 16, 16, generator=g), 0.1 * torch.randn(1, 16, 4, 4, generator=g)


@pytest.fixture(scope="module")
def top():
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 2.0)
    return capture_module(model, sample(torch.Generator().manual_seed(0)))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return [sample(g) for _ in range(N_CAL + 4)]


@pytest.fixture(scope="module")
def table_kl(top, data):
    return calibrate(top, data, method="kl", num_samples=N_CAL, tune_num=0, progress=False)


@pytest.fixture(scope="module")
def table_tuned(top, data):
    return calibrate(top, data, method="kl", num_samples=N_CAL, tune_num=3, progress=False)


def test_every_float_value_has_an_entry_with_its_range(top, data, table_kl):
    names = [stable_name(n) for n in top.gm.graph.nodes if is_activation(n)]
    assert list(table_kl) == names
    assert {"x", "bias", "c1", "bn", "relu", "cat", *top.output_names} <= set(names)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for inputs in data[:N_CAL]:             # independent min/max from plain named execution
        for k, v in run_named(top.gm, *inputs)[1].items():
            if v.is_floating_point():
                lo[k] = min(lo.get(k, np.inf), float(v.min()))
                hi[k] = max(hi.get(k, -np.inf), float(v.max()))
    for k in names:
        e = table_kl[k]
        assert (e.min, e.max) == (lo[k], hi[k]), k
    for g in scale_groups(top.gm):           # a shared threshold never exceeds the group's widest member
        group_max = max(max(abs(table_kl[m].min), abs(table_kl[m].max)) for m in g.members)
        assert all(0 < table_kl[m].threshold <= group_max for m in g.members), g
    assert (table_kl.method, table_kl.sample_number, table_kl.tune_number, table_kl.histogram_bins) == \
        ("kl", N_CAL, 0, 2048)


def test_propagated_tensors_share_thresholds(top, data, table_kl):
    th = {k: e.threshold for k, e in table_kl.items()}
    # relu and max pool take their input's threshold (forward) ...
    assert th["bn"] == th["relu"] == th["max_pool2d_with_indices"]
    # ... concat inputs (and the chain after it) share one: the largest of the sources' own thresholds
    shared = {th[k] for k in ("c2", "c3", "relu_1", "cat", "max_pool2d_with_indices_1")}
    assert len(shared) == 1
    obs, _, _ = observe(top, data, N_CAL, progress=False)
    # c3 feeds only a relu (fused by the INT8 lowering): its statistics are the relu output's
    assert statistics_tensors(top.gm, scale_groups(top.gm))["c3"] == "relu_1"
    assert not obs["c3"].histogram and obs["relu_1"].histogram
    # bn (not fused: a separate op here) feeds only a relu: the relu's histogram on bn's own (signed) grid
    assert statistics_tensors(top.gm, scale_groups(top.gm))["bn"] == "relu"
    assert not obs["bn"].histogram and obs["relu"].histogram
    proxy = HistogramObserver.from_state_dict(obs["relu"].state_dict())
    proxy.min = max(obs["bn"].min, -obs["relu"].max)
    assert th["bn"] == compute_threshold(proxy, "kl") != compute_threshold(obs["relu"], "kl")
    assert shared.pop() == max(compute_threshold(obs["c2"], "kl"), compute_threshold(obs["relu_1"], "kl"))
    assert th["c1"] == compute_threshold(obs["c1"], "kl")
    groups = {tuple(g.members) for g in scale_groups(top.gm)}
    assert ("bn", "relu", "max_pool2d_with_indices") in groups


def test_tune_never_lowers_layer_similarity(top, data, table_kl, table_tuned):
    start = {k: e.threshold for k, e in table_kl.items()}
    obs, _, _ = observe(top, data, N_CAL, progress=False)
    abs_max = {k: obs[k].abs_max for k in start}
    ranges = {k: (obs[k].min, obs[k].max) for k in start}
    tuned, results = tune_thresholds(top.gm, data[:3], scale_groups(top.gm), start, abs_max, ranges=ranges)
    assert tuned == {k: e.threshold for k, e in table_tuned.items()}
    assert table_tuned.tune_number == 3
    for r in results:
        assert r.similarity >= r.start_similarity, r
        assert r.start_threshold <= r.threshold <= max(abs_max[m] for m in r.members)
    # from thresholds that clip hard (a third of the kl ones) tuning moves every group up, and gains
    low = {k: t / 3 for k, t in start.items()}
    _, results = tune_thresholds(top.gm, data[:3], scale_groups(top.gm), low, abs_max, ranges=ranges)
    moved = [r for r in results if r.threshold > r.start_threshold]
    assert len(moved) >= len(results) - 1 and all(r.similarity > r.start_similarity for r in moved)


@pytest.mark.parametrize("lowering_grid", [True, False])
def test_tune_scores_match_a_naive_per_candidate_reference(top, data, table_kl, lowering_grid):
    """Each group's chosen threshold and similarities equal those of a plain loop: per candidate, every member
    fake-quantized on its grid (the table entry's with ranges, else T/127), each consumer re-run, cosine()."""
    start = {k: e.threshold for k, e in table_kl.items()}
    abs_max = {k: max(abs(e.min), abs(e.max)) for k, e in table_kl.items()}
    ranges = {k: (e.min, e.max) for k, e in table_kl.items()} if lowering_grid else None
    groups = scale_groups(top.gm)
    samples = data[:2]
    tuned, results = tune_thresholds(top.gm, samples, groups, start, abs_max, ranges=ranges, steps=4)
    by_name = {stable_name(n): n for n in top.gm.graph.nodes}
    envs = [run_env(top.gm, s) for s in samples]
    for g, r in zip(groups, results):
        nodes = [by_name[m] for m in g.members]
        consumers = group_consumers(nodes)
        scores = []
        for t in candidates(start[g.members[0]], max(abs_max[m] for m in g.members), 4):
            sims = []
            for env in envs:
                spec = {m: (CalibrationEntry(t, *ranges[stable_name(m)]) if ranges else t) for m in nodes}
                subst = {m: fake_quant_activation(env[m], spec[m]) for m in nodes}
                per = [cosine(first_float(env[c]), first_float(eval_node(c, env, subst))) for c in consumers
                       if first_float(env[c]) is not None]
                sims.append(np.mean(per) if per else np.mean([cosine(env[m], subst[m]) for m in nodes]))
            scores.append(np.mean(sims))
        best = int(np.argmax(np.round(scores, 9)))
        assert r.similarity == pytest.approx(max(scores), abs=1e-7), g.members
        assert r.start_similarity == pytest.approx(scores[0], abs=1e-7), g.members
        assert scores[[*candidates(start[g.members[0]], max(abs_max[m] for m in g.members), 4)].index(
            r.threshold)] == pytest.approx(scores[best], abs=1e-7), g.members


def test_search_picks_one_method_per_group(top, data):
    table = calibrate(top, data, method="search", num_samples=N_CAL, tune_num=0, progress=False)
    obs, _, _ = observe(top, data, N_CAL, progress=False)
    assert table.method == "search" and len(table) == len(list(table_kl_names(top)))
    stats = statistics_tensors(top.gm, scale_groups(top.gm))
    for g in scale_groups(top.gm):
        options = {max(compute_threshold(obs[stats[s]], m) for s in g.sources) for m in SEARCH_METHODS}
        assert table[g.members[0]].threshold in options
        assert len({table[m].threshold for m in g.members}) == 1


@pytest.mark.parametrize("lowering_grid", [False, True])
def test_search_matches_a_naive_greedy_reference(top, data, lowering_grid):
    """The suffix-only re-runs give the same choices as full fake-quantized runs (independent reference);
    with ranges, tensors sit on their table entry's grid and fused conv outputs are not quantized."""
    obs, _, _ = observe(top, data, N_CAL, progress=False)
    groups = scale_groups(top.gm)
    per_method = {m: method_thresholds(top.gm, obs, groups, m) for m in SEARCH_METHODS}
    ranges = {k: (obs[k].min, obs[k].max) for k in obs} if lowering_grid else None
    fused = {stable_name(n) for n in fused_producers(top.gm)} if lowering_grid else set()
    assert fused == ({"c3"} if lowering_grid else set())
    samples = data[:2]
    got, picked = search_thresholds(top.gm, samples, groups, per_method, ranges=ranges)

    def spec(k: str, t: float):
        return CalibrationEntry(t, *ranges[k]) if ranges else t

    chosen: dict[str, float] = {}
    for g in groups:                          # groups already come in graph order
        scores = {}
        for m in SEARCH_METHODS:
            trial = {**chosen, **{k: per_method[m][k] for k in g.members}}
            specs = {k: spec(k, t) for k, t in trial.items() if k not in fused}
            scores[m] = np.mean([float(nn.functional.cosine_similarity(
                top.gm(*s)[0].flatten().double(), run_fake_quant(top.gm, s, specs)[0].flatten().double(), dim=0))
                for s in samples])
        best = max(SEARCH_METHODS, key=lambda m: (scores[m], -SEARCH_METHODS.index(m)))
        assert scores[picked[g.members[0]]] == pytest.approx(scores[best], abs=1e-9), g.members
        chosen.update({k: per_method[picked[g.members[0]]][k] for k in g.members})
    assert got == chosen


def table_kl_names(top):
    return (stable_name(n) for n in top.gm.graph.nodes if is_activation(n))


@pytest.mark.parametrize("which", ["kl", "kl+tune"])
def test_fake_quant_int8_keeps_output_cosine(top, data, table_kl, table_tuned, which):
    table = table_kl if which == "kl" else table_tuned
    th = {k: e.threshold for k, e in table.items()}
    sims = []
    for inputs in data[N_CAL:]:                  # held-out samples
        ref = top.gm(*inputs)[0]
        got = run_fake_quant(top.gm, inputs, th, quantize_weights=True)[0]
        sims.append(float(nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0)))
    print(f"int8 fake-quant output cosine ({which}): min {min(sims):.5f} mean {np.mean(sims):.5f}")
    assert min(sims) >= 0.98


def test_table_and_qtable_round_trip(tmp_path, table_tuned):
    path = table_tuned.save(tmp_path / "cali_table")
    assert CalibrationTable.load(path) == table_tuned
    q = QTable({name: ("F32" if name.startswith("fc") else "INT8") for name in table_tuned})
    assert QTable.load(q.save(tmp_path / "qtable")) == q


def test_data_forms_and_errors(top, data, tmp_path):
    g = torch.Generator().manual_seed(5)

    def stream():                      # a one-shot generator of numpy samples, longer than needed
        for _ in range(1000):
            x, b = sample(g)
            yield x.numpy(), b.numpy()

    obs, kept, count = observe(top, stream(), num_samples=6, keep=2, progress=False)
    assert count == 6 and len(kept) == 2 and obs["x"].count == 6 * 8 * 3 * 16 * 16
    # statistics memory (numpy, traced) does not grow with the number of samples
    def traced_peak(n: int) -> int:
        tracemalloc.start()
        try:
            observe(top, stream(), num_samples=n, keep=1, progress=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak_5, peak_50 = traced_peak(5), traced_peak(50)
    assert peak_50 < peak_5 * 1.1 + 16_384, (peak_5, peak_50)
    # a folder of .npz samples (arrays by input name, stored in the other order) and of .npy
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, (x, b) in enumerate(data[:3]):
        np.savez(folder / f"s{i}.npz", bias=b.numpy(), x=x.numpy())
    from_folder = calibrate(top, folder, method="max", num_samples=10, tune_num=0, progress=False)
    from_list = calibrate(top, data[:3], method="max", num_samples=10, tune_num=0, progress=False)
    assert from_folder == from_list and from_folder.sample_number == 3
    assert from_folder.thresholds()["x"] == from_folder["x"].threshold
    with pytest.raises(CalibrationError, match="no .npy or .npz"):
        calibrate(top, tmp_path, progress=False)
    with pytest.raises(CalibrationError, match="sample 0: 1 tensor"):
        calibrate(top, [torch.randn(1, 3, 16, 16)], progress=False)
    with pytest.raises(CalibrationError, match="unknown method 'entropy'"):
        calibrate(top, [], method="entropy", progress=False)
    with pytest.raises(CalibrationError, match="no samples"):
        calibrate(top, [], progress=False)

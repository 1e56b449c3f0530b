"""Mixed-precision sensitivity and qtable search on small captured CNNs (int8 by simulation)."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_tpu.api import transform
from torch_tpu.graph.names import stable_name
from torch_tpu.quant import CalibrationEntry, QTable, calibrate, run_fake_quant
from torch_tpu.quant.mixed_precision import (MixedPrecisionError, SimulationEvaluator, network_cosine,
                                             qtable_cosine, qtable_main, quantizable_layers, search_qtable,
                                             sensitivity)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c2(y))
        z = torch.relu(self.c3(y)) + y
        return self.fc(z.mean((2, 3)))


def _data(n: int, seed: int, outlier_channel: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(1, 3, 12, 12, generator=g) for _ in range(n)]
    for x in xs:
        x[:, 2] *= outlier_channel
    return xs


@functools.cache
def _setup(kind: str):
    """A captured Net, its calibration table (max), and 4 held-out samples.

    ``kind``: ``plain``; ``weight`` — c2 reads a channel that is always 0 with weights 50 (per-channel int8
    then rounds all its real weights to 0: only c2 is sensitive); ``input`` — the graph input's channel 2
    is 1000x larger, compensated in c1's weights (its int8 input step swamps channels 0-1: only c1 is).
    """
    torch.manual_seed(0)
    model = Net().eval()
    scale = 1.0
    with torch.no_grad():
        model.fc.bias.zero_()           # keep the output cosine about the features, not a constant offset
        if kind == "weight":
            model.c1.weight[0] = 0.0
            model.c1.bias[0] = 0.0
            model.c2.weight[:, 0] = 50.0
        elif kind == "input":
            scale = 1000.0
            model.c1.weight[:, 2] /= scale
    cal, held = _data(8, 1, scale), _data(4, 2, scale)
    top = transform(model, (cal[0],))     # the fx_passes pipeline folds permute(fc.weight) into a constant
    table = calibrate(top, cal, method="max", num_samples=8, tune_num=0, progress=False)
    return model, top, table, held


@pytest.fixture(scope="module")
def plain():
    return _setup("plain")


def test_layers_are_the_quantized_ops(plain):
    _, top, _, _ = plain
    assert quantizable_layers(top) == ["c1", "c2", "c3", "add", "mean", "fc"]


def _fq(x: torch.Tensor, e: CalibrationEntry) -> torch.Tensor:
    """The grid of quant/qscheme.py, written out: unsigned [0, T] for tensors never negative, [min, T] when
    min > -T/2, else signed symmetric."""
    t = e.threshold
    if e.min >= 0:
        s, zp = t / 255, -128
    elif e.min > -t / 2:
        s = float(np.float32((t - e.min) / 255))
        zp = -128 + round(-e.min / s)
    else:
        s, zp = t / 127, 0
    return torch.fake_quantize_per_tensor_affine(x, float(np.float32(s)), zp, -128, 127)


def _fqw(w: torch.Tensor) -> torch.Tensor:
    s = w.abs().flatten(1).amax(1) / 127
    return torch.fake_quantize_per_channel_affine(w, s, torch.zeros(len(s), dtype=torch.int32), 0, -128, 127)


def _eager_int8(m: Net, x: torch.Tensor, th: dict[str, CalibrationEntry]) -> torch.Tensor:
    """Independent reference: eager PyTorch with torch's own fake-quant ops (module doc semantics): each conv
    is fused with its relu (its output is only rounded as the relu's), and fc feeds the graph output (its
    accumulator is dequantized to f32, never rounded to int8)."""
    q = _fq
    r = q(torch.relu(F.conv2d(q(x, th["x"]), _fqw(m.c1.weight), m.c1.bias, padding=1)), th["relu"])
    r1 = q(torch.relu(F.conv2d(r, _fqw(m.c2.weight), m.c2.bias, padding=1)), th["relu_1"])
    r2 = q(torch.relu(F.conv2d(r1, _fqw(m.c3.weight), m.c3.bias, padding=1)), th["relu_2"])
    add = q(r2 + r1, th["add"])
    mean = q(add.mean((2, 3)), th["mean"])
    return F.linear(mean, _fqw(m.fc.weight), m.fc.bias)


def test_simulation_matches_eager_fake_quant(plain):
    model, top, table, held = plain
    ev = SimulationEvaluator(top, table, held)
    th = dict(table.items())
    with torch.no_grad():
        for x, (got,) in zip(held, ev(frozenset())):
            torch.testing.assert_close(got, _eager_int8(model, x, th), rtol=1e-5, atol=1e-5)
        for x, (got,) in zip(held, ev(frozenset(ev.layers))):          # all float: the float model
            torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)


def test_all_int8_is_run_fake_quant_with_weights(plain):
    _, top, table, held = plain
    ev = SimulationEvaluator(top, table, held)
    # the values the lowering never rounds to int8: c1..c3 (fused with their relus) and fc (graph output)
    th = {k: v for k, v in table.items() if k not in ("c1", "c2", "c3", "fc")}
    for x, (got,) in zip(held, ev(frozenset())):
        torch.testing.assert_close(got, run_fake_quant(top.gm, (x,), th, quantize_weights=True)[0],
                                   rtol=1e-6, atol=1e-6)


def test_simulation_follows_the_int8_lowering_more_closely_than_plain_fake_quant(plain):
    """The real integer graph is the reference: the simulation's error to it is below that of fake-quantizing
    every tabled value (which rounds the fused convs' and the logits' values to int8 too)."""
    from torch_tpu.lowering.driver import lower

    _, top, table, held = plain
    ev = SimulationEvaluator(top, table, held)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    for x, (got,) in zip(held, ev(frozenset())):
        real = tpu(x)[0]
        every = run_fake_quant(top.gm, (x,), dict(table.items()), quantize_weights=True)[0]
        assert (got - real).norm() < 0.5 * (every - real).norm()


@pytest.mark.parametrize("kind,culprit", [("weight", "c2"), ("input", "c1")])
def test_search_makes_the_sensitive_layer_float(kind, culprit):
    _, top, table, held = _setup(kind)
    ranking = sensitivity(top, table, held, progress=False)
    print(kind, ranking)
    assert ranking[0][0] == culprit and ranking[0][1] < 0.97
    assert all(c > 0.99 for _, c in ranking[1:])
    qtable, rep = search_qtable(top, table, held, expected_cos=0.99, ranking=ranking, progress=False)
    print(rep)
    assert rep.int8_cosine < 0.97
    assert rep.float_layers == [culprit] and rep.reached and rep.final_cosine >= 0.99
    assert dict(qtable.items()) == {culprit: "F32"}
    assert qtable_cosine(top, table, qtable, held) == pytest.approx(rep.final_cosine, abs=1e-12)


def test_qtable_round_trips_and_names_real_layers(tmp_path):
    _, top, table, held = _setup("weight")
    qtable, rep = search_qtable(top, table, held, expected_cos=0.9999, mode="bf16", progress=False)
    assert len(qtable) >= 1 and set(qtable.modes.values()) == {"BF16"}
    names = {stable_name(n) for n in top.gm.graph.nodes}
    assert set(qtable) <= names and set(qtable) <= set(quantizable_layers(top))
    back = QTable.load(qtable.save(tmp_path / "qtable"))
    assert back == qtable
    assert [c for _, c in rep.steps] == sorted(c for _, c in rep.steps) or rep.reached


def test_pluggable_evaluator_and_limits(plain):
    _, top, table, held = plain
    sim = SimulationEvaluator(top, table, held)
    calls = []

    def evaluator(float_layers):
        calls.append(frozenset(float_layers))
        return sim(float_layers)

    qtable, rep = search_qtable(top, table, held, expected_cos=1.0, evaluator=evaluator, max_float=2,
                                progress=False)
    n = len(sim.layers)
    assert len(calls) == n + 1 + 2 and len(qtable) == 2 and rep.evaluator == "evaluator"
    assert rep.final_cosine == network_cosine(sim.reference, sim(frozenset(rep.float_layers)))
    assert not rep.reached
    with pytest.raises(MixedPrecisionError, match="not layers"):
        qtable_cosine(top, table, QTable({"relu": "F32"}), held)
    with pytest.raises(MixedPrecisionError, match="expected_cos"):
        search_qtable(top, table, held, expected_cos=1.5)


def test_qtable_main_writes_the_searched_qtable(tmp_path):
    """The function behind ``torch-tpu qtable``: calibration table file + .npy folder -> qtable file."""
    import numpy as np

    _, top, table, held = _setup("weight")
    data = tmp_path / "data"
    data.mkdir()
    for i, x in enumerate(held):
        np.save(data / f"{i:03d}.npy", x.numpy())
    rep = qtable_main(top, table.save(tmp_path / "cali_table"), data, tmp_path / "qtable", num_samples=4,
                      progress=False)
    assert QTable.load(tmp_path / "qtable") == QTable({"c2": "F32"}) and rep.reached
    with pytest.raises(MixedPrecisionError, match=r"\.pt2"):
        qtable_main(tmp_path / "model.onnx", tmp_path / "cali_table", data, tmp_path / "q2")


@pytest.mark.parametrize("kind,culprit", [("weight", "c2"), ("input", "c1")])
def test_search_with_the_real_int8_lowering(kind, culprit):
    from torch_tpu.lowering.driver import lower
    from torch_tpu.lowering.int8_driver import Int8Evaluator

    _, top, table, held = _setup(kind)
    ev = Int8Evaluator(top, table, held)
    t0 = time.perf_counter()
    ranking = sensitivity(top, table, held, evaluator=ev, progress=False)
    qtable, rep = search_qtable(top, table, held, expected_cos=0.99, evaluator=ev, ranking=ranking, progress=False)
    dt = time.perf_counter() - t0
    print(kind, ranking, f"\n{rep}\n{len(ev._graphs)} lowerings, {dt:.2f} s")
    assert rep.evaluator == "int8 lowering"
    assert ranking[0][0] == culprit and ranking[0][1] < 0.97
    assert rep.int8_cosine < 0.97 and rep.float_layers == [culprit] and rep.reached
    # the evaluator's outputs are the lowered graph's, with the qtable found
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table, qtable=qtable)
    for x, (got,) in zip(held, ev(frozenset(rep.float_layers))):
        assert torch.equal(got, tpu(x)[0])
    # and the simulation agrees on the outcome
    assert qtable_cosine(top, table, qtable, held) >= 0.99

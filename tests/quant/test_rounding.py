"""Data-aware weight rounding (``torch_tpu.quant.rounding``): the solver against round-to-nearest, the graph
it returns against the INT8 lowering's own weight quantization, and the accuracy it buys on a trained CNN."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import torch_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.qparams import quantize_weight
from torch_tpu.quant.observers import CalibrationError
from torch_tpu.quant.rounding import attr_value, gptq_round, round_weights, rounding_layers

from .helpers import digits, trained_digits_net


def _rtn(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Round to nearest, per row of ``[O, K]``, from the lowering's own weight quantizer."""
    q, s = quantize_weight(w, axis=0)
    return q.to(torch.float64), s


def _layer_error(w: torch.Tensor, q: torch.Tensor, s: torch.Tensor, x: torch.Tensor) -> float:
    """``||(W - s·Q) X||²``: the layer output's squared error on inputs ``x`` ``[K, N]``."""
    return float(((w.double() - q * s[:, None]) @ x.double()).pow(2).sum())


def test_diagonal_statistics_give_round_to_nearest():
    # uncorrelated inputs: no error can be moved to another column, GPTQ is plain rounding
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 20, generator=g)
    h = torch.diag(torch.rand(20, generator=g) + 0.5)
    q, s = gptq_round(w[None], h[None])
    q_ref, s_ref = _rtn(w)
    assert torch.equal(q[0], q_ref)
    torch.testing.assert_close(s[0], s_ref, rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlated_inputs_lower_the_layer_error_and_keep_the_grid(seed):
    g = torch.Generator().manual_seed(seed)
    k, o, n = 48, 16, 2000
    mix = torch.randn(k, k, generator=g) / k ** 0.5 + torch.eye(k)       # correlated features
    x_train = mix @ torch.randn(k, n, generator=g)
    x_test = mix @ torch.randn(k, n, generator=g)
    w = torch.randn(o, k, generator=g) * 0.1
    q, s = gptq_round(w[None], (2 * x_train @ x_train.T)[None])
    q, s = q[0], s[0]
    q_ref, s_ref = _rtn(w)
    assert torch.equal(q, q.round()) and q.abs().max() <= 127
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)
    # each row keeps its largest weight at its nearest value: the lowering's max|W'|/127 gives back s
    top = w.abs().argmax(1)
    assert torch.equal(q[torch.arange(o), top], q_ref[torch.arange(o), top])
    assert torch.equal(q.abs().amax(1), torch.full((o,), 127.0, dtype=q.dtype))
    e_gptq, e_rtn = _layer_error(w, q, s, x_test), _layer_error(w, q_ref, s_ref, x_test)
    print(f"seed {seed}: held-out layer error GPTQ / nearest = {e_gptq / e_rtn:.3f}")
    assert e_gptq < 0.8 * e_rtn


class _Layers(nn.Module):
    """Every layout the rounding handles: conv2d, depthwise and grouped conv, conv1d, linear (addmm)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, stride=2, groups=2)
        self.conv1d = nn.Conv1d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 9, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.relu(self.dw(x))
        x = self.grouped(x)                              # [1, 8, 3, 3]
        x = torch.relu(self.conv1d(x.flatten(2)))        # [1, 6, 9]
        return self.fc(x.flatten(1))


def test_rounded_graph_lies_on_the_lowering_grid_and_is_a_copy():
    torch.manual_seed(0)
    model = _Layers().eval()
    data = [torch.randn(1, 3, 8, 8) for _ in range(8)]
    top = torch_tpu.transform(model, (data[0],))
    before = {k: v.clone() for k, v in top.gm.state_dict().items()}
    rounded = round_weights(top, data, progress=False)
    layers = rounding_layers(rounded.gm)
    assert len(layers) == 5 and {x.kind for x in layers} == {"conv", "kn"}
    for k, v in top.gm.state_dict().items():           # the input graph is untouched
        assert torch.equal(v, before[k])
    changed = 0
    for layer in layers:
        w_old = attr_value(top.gm, layer.weight.target)
        w_new = attr_value(rounded.gm, layer.weight.target)
        axis = 1 if layer.kind == "kn" else 0
        q_old, s_old = quantize_weight(w_old, axis)
        q_new, s_new = quantize_weight(w_new, axis)
        # the lowering finds the same scales, and the rounded weights are exactly its grid points
        torch.testing.assert_close(s_new, s_old, rtol=1e-6, atol=0)
        shape = [-1 if d == axis else 1 for d in range(w_new.ndim)]
        torch.testing.assert_close(w_new.double(), q_new.double() * s_new.view(shape), rtol=1e-6, atol=0)
        assert (q_new.double() - q_old.double()).abs().max() <= 127
        changed += int(not torch.equal(q_new, q_old))
    assert changed >= 3                                  # error feedback moved some weights off nearest
    assert rounded.meta["weight_rounding"] == "gptq" and rounded.meta["weight_rounding_nearest"] == []
    # the rounded float graph and its int8 lowering run and stay close to the source model
    table = torch_tpu.calibrate(rounded, data, num_samples=8, tune_num=0, progress=False)
    tpu = lower(rounded.gm, "bm1684x", "int8", calibration_table=table)
    with torch.no_grad():
        ref, got = model(data[0]), tpu(data[0])[0]
    assert nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0) > 0.99


def _sqnr(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum()))


def test_trained_digits_cnn_gains_sqnr_from_rounding():
    """Weights only and the whole int8 graph: held-out SQNR vs the float model, nearest vs GPTQ rounding."""
    (xtr, ytr), (xte, yte) = digits()
    model = trained_digits_net(xtr, ytr)
    n = len(yte)
    top = torch_tpu.transform(model, (xte,))
    cal = [xtr[:n], xtr[n:2 * n]]
    rounded = round_weights(top, cal, progress=False)
    with torch.no_grad():
        ref = model(xte)
        rtn_only = torch_tpu.transform(model, (xte,))
        for layer in rounding_layers(rtn_only.gm):          # round-to-nearest weights, float activations
            w = attr_value(rtn_only.gm, layer.weight.target)
            axis = 1 if layer.kind == "kn" else 0
            q, s = quantize_weight(w, axis)
            shape = [-1 if d == axis else 1 for d in range(w.ndim)]
            w.copy_((q.double() * s.view(shape)).to(w.dtype))
        w_rtn, w_gptq = _sqnr(ref, rtn_only(xte)), _sqnr(ref, rounded(xte))
    full = {}
    for label, graph in (("nearest", top), ("gptq", rounded)):
        table = torch_tpu.calibrate(graph, cal, num_samples=2, tune_num=0, progress=False)
        out = lower(graph.gm, "bm1684x", "int8", calibration_table=table)(xte)[0]
        full[label] = (_sqnr(ref, out), (out.argmax(1) == yte).float().mean().item() * 100)
    print(f"digits weights only: nearest {w_rtn:.2f} dB, gptq {w_gptq:.2f} dB; int8: nearest "
          f"{full['nearest'][0]:.2f} dB / {full['nearest'][1]:.2f} %, gptq {full['gptq'][0]:.2f} dB / "
          f"{full['gptq'][1]:.2f} %")
    assert w_gptq > w_rtn + 3.0
    assert full["gptq"][0] > full["nearest"][0]
    acc_f32 = (ref.argmax(1) == yte).float().mean().item() * 100
    assert abs(full["gptq"][1] - acc_f32) <= 0.5


def test_layers_too_wide_keep_nearest_rounding(caplog):
    torch.manual_seed(0)
    data = [torch.randn(1, 3, 8, 8) for _ in range(4)]
    top = torch_tpu.transform(_Layers().eval(), (data[0],))
    with caplog.at_level("WARNING"):
        rounded = round_weights(top, data, max_inputs=27, progress=False)   # conv 27, dw 9, conv1d 24 inputs
    wide = rounded.meta["weight_rounding_nearest"]
    assert wide == ["grouped", "fc"] and "keep round-to-nearest" in caplog.text
    for layer in rounding_layers(top.gm):
        w_old, w_new = attr_value(top.gm, layer.weight.target), attr_value(rounded.gm, layer.weight.target)
        assert torch.equal(w_old, w_new) == (layer.name in wide)


def test_bad_arguments_and_data_name_the_problem():
    top = torch_tpu.transform(_Layers().eval(), (torch.randn(1, 3, 8, 8),))
    with pytest.raises(CalibrationError, match="num_samples, damp, block and max_inputs"):
        round_weights(top, [torch.randn(1, 3, 8, 8)], num_samples=0)
    with pytest.raises(CalibrationError, match="no samples"):
        round_weights(top, [], progress=False)
    with pytest.raises(CalibrationError, match="sample 0: 2 tensor"):
        round_weights(top, [(torch.randn(1, 3, 8, 8), torch.randn(1))], progress=False)
    bad = torch.randn(1, 3, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(CalibrationError, match=r"layer 'conv' .*not finite"):
        round_weights(top, [bad], progress=False)


def test_compile_with_weight_rounding_runs_the_rounded_graph():
    torch.manual_seed(0)
    model = _Layers().eval()
    data = [torch.randn(1, 3, 8, 8) for _ in range(6)]
    compiled = torch_tpu.compile(model, (data[0],), precision="int8", calibration_data=iter(data), num_samples=6,
                                 tune_num=0, weight_rounding="gptq")
    rounded = torch_tpu.round_weights(model, data, num_samples=6, progress=False)
    tpu = lower(rounded.gm, "bm1684x", "int8", calibration_table=compiled.calibration_table)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), tpu(x)[0], rtol=0, atol=0)
    with pytest.raises(torch_tpu.errors.ConfigError, match="weight_rounding needs precision int8"):
        torch_tpu.compile(model, (data[0],), precision="bf16", weight_rounding="gptq")
    with pytest.raises(torch_tpu.errors.ConfigError, match="unknown weight_rounding"):
        torch_tpu.compile(model, (data[0],), precision="int8", calibration_data=data, weight_rounding="adaround")

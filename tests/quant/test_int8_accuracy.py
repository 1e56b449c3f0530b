"""INT8 accuracy on real data and on zoo CNNs: calibrate (kl) -> lower to int8 -> run the TPU reference ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import torch_tpu
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.int8_driver import float_value_names
from torch_tpu.quant.simulate import cosine, run_fake_quant

from .helpers import digits, trained_digits_net


def test_digits_cnn_int8_accuracy_within_half_a_point():
    (xtr, ytr), (xte, yte) = digits()
    model = trained_digits_net(xtr, ytr)
    n = len(yte)          # the TOP graph has a static batch: the whole test set, calibration on training batches
    top = torch_tpu.transform(model, (xte,))
    table = torch_tpu.calibrate(top, [xtr[:n], xtr[n:2 * n]], method="kl", num_samples=2, tune_num=0,
                                progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    with torch.no_grad():
        acc_f32 = (model(xte).argmax(1) == yte).float().mean().item() * 100
    acc_int8 = (tpu(xte)[0].argmax(1) == yte).float().mean().item() * 100
    print(f"digits: f32 accuracy {acc_f32:.2f} %, int8 accuracy {acc_int8:.2f} % ({len(yte)} test images)")
    assert acc_f32 >= 90.0
    assert abs(acc_f32 - acc_int8) <= 0.5


class SkewedNet(nn.Module):
    """Convs whose outputs are skewed but reach far on both sides (bias = +1 std: about [-3 std, 5 std]), so
    the symmetric scheme uses its signed grid (``min < -T/2``) and leaves codes unused on the short side."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1),
                                   nn.Conv2d(16, 8, 1))
        with torch.no_grad():
            y = torch.randn(8, 3, 10, 10)
            for c in self.convs:
                c.bias.zero_()
                c.bias.fill_(float(c(y).std()))
                y = c(y)

    def forward(self, x):
        return self.convs(x)


def _sqnr(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum()))


@pytest.mark.parametrize("method", ["kl", "percentile"])
def test_asymmetric_int8_at_least_as_accurate_as_symmetric_on_a_skewed_model(method):
    """The asymmetric grid (range clipped by the method's threshold, quant/qscheme.py) is never coarser than
    the symmetric one; on a model with skewed activations the INT8 output's SQNR is at least as high."""
    torch.manual_seed(0)
    model = SkewedNet().eval()
    data = [torch.randn(4, 3, 10, 10) for _ in range(14)]
    top = torch_tpu.transform(model, (data[0],))
    table = torch_tpu.calibrate(top, data[:12], method=method, num_samples=12, tune_num=0, progress=False)
    sym = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    asym = lower(top.gm, "bm1684x", "int8", calibration_table=table, asymmetric=True)
    for x in data[12:]:
        with torch.no_grad():
            ref = model(x)
        s_sym, s_asym = _sqnr(ref, sym(x)[0]), _sqnr(ref, asym(x)[0])
        print(f"skewed model ({method}): int8 SQNR symmetric {s_sym:.2f} dB, asymmetric {s_asym:.2f} dB")
        assert s_asym >= s_sym


#: the zoo at build(name, small=True)'s input size (its BatchNorm statistics come from that size).
#: Default run: the models that take < ~20 s here; the rest are slow.
_SLOW = pytest.mark.slow
ZOO_CASES = [
    "resnet18", "mobilenet_v2", "mobilenet_v3_small",
    pytest.param("bert_2layer", marks=_SLOW),
    pytest.param("vgg11_bn", marks=_SLOW),
    pytest.param("resnet50", marks=_SLOW),
    pytest.param("vit_tiny_patch16_224", marks=_SLOW),
    pytest.param("efficientnet_b0", marks=[_SLOW, pytest.mark.xfail(
        strict=False, reason="int8 vs f32 cosine 0.954 on eval sample 0 (about 0.99 on sample 1; 0.979 mean, "
        "0.952 worst over 10 held-out inputs). Sample 0 exceeds the 16-sample calibrated max by up to 1.9x from "
        "stage 6 on; with every threshold widened to cover it the same fake-quant simulation reaches 0.990, so "
        "what fails is calibration coverage of this random-weight net, not int8 resolution. No static scheme "
        "gets there: kl 0.956, mse 0.962-0.965, percentile 0.958, max 0.952, asymmetric 0.956, kl + GPTQ weight "
        "rounding 0.953, kl with 64 / 128 calibration inputs 0.982 / 0.979 (worst of 10: 0.978 / 0.977), "
        "squeeze-excite layers in F32 0.960, a searched qtable (20 layers float) 0.957; torchao PT2E on the same "
        "inputs: X86InductorQuantizer 0.962 (worst 0.962), XNNPACK per-channel 0.960")]),
]
N_CAL, N_EVAL = 16, 2


@pytest.mark.parametrize("name", ZOO_CASES)
def test_zoo_cnn_int8_cosine(name):
    from benchmarks.zoo import build
    model, example = build(name, small=True)
    torch.manual_seed(2)
    x0 = example[0]
    if x0.is_floating_point():
        data = [torch.randn(x0.shape) for _ in range(N_CAL + N_EVAL)]
    else:                                       # token ids
        data = [torch.randint(0, 1000, x0.shape) for _ in range(N_CAL + N_EVAL)]
    top = torch_tpu.transform(model, (data[0],))
    table = torch_tpu.calibrate(top, data[:N_CAL], method="kl", num_samples=N_CAL, tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    # the simulation quantizes the tensors the int8 graph quantizes: not the conv outputs fused into
    # relu/relu6, nor the element-wise results only read in float (float_value_names)
    skip = float_value_names(top.gm, "bm1684x")
    entries = {k: e for k, e in table.items() if k not in skip}
    for i, x in enumerate(data[N_CAL:]):
        with torch.no_grad():
            ref = model(x)
        refs = ref if isinstance(ref, tuple) else (ref,)
        outs = tpu(x)
        sims = run_fake_quant(top.gm, (x,), entries, quantize_weights=True)
        for j, (r, o, s) in enumerate(zip(refs, outs, sims)):
            c, c_sim = cosine(r, o), cosine(s, o)
            print(f"{name} sample {i} output {j}: int8 vs f32 cosine {c:.4f}; int8 TPU graph vs fake-quant "
                  f"simulation {c_sim:.4f}")
            assert c >= 0.98
            assert c_sim >= 0.99

"""INT8 accuracy on real data and on zoo CNNs: calibrate (kl) -> lower to int8 -> run the TPU reference ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import torch_tpu
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.int8_driver import fused_producer_names
from torch_tpu.quant.simulate import cosine, run_fake_quant


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16 * 16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def test_digits_cnn_int8_accuracy_within_half_a_point():
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = _digits()
    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _epoch in range(8):
        for i in range(0, len(ytr), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[i:i + 64]), ytr[i:i + 64]).backward()
            opt.step()
    model.eval()
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


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_zoo_cnn_int8_cosine(name):
    from benchmarks.zoo import build
    model, _ = build(name, small=True)
    torch.manual_seed(2)
    data = [torch.randn(1, 3, 64, 64) for _ in range(5)]
    top = torch_tpu.transform(model, (data[0],))
    table = torch_tpu.calibrate(top, data[:4], method="kl", num_samples=4, tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    x = data[4]
    with torch.no_grad():
        ref = model(x)
    out = tpu(x)[0]
    # the simulation quantizes the tensors the int8 graph quantizes: not the conv outputs fused into relu/relu6
    fused = fused_producer_names(top.gm, "bm1684x")
    thresholds = {k: t for k, t in table.thresholds().items() if k not in fused}
    sim = run_fake_quant(top.gm, (x,), thresholds, quantize_weights=True)[0]
    c, c_sim = cosine(ref, out), cosine(sim, out)
    print(f"{name}: int8 vs f32 cosine {c:.4f}; int8 TPU graph vs fake-quant simulation {c_sim:.4f}")
    assert c >= 0.98
    assert c_sim >= 0.99

"""SiLU, GELU and hardswish / hardsigmoid recognition (one graph per pass)."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_tpu.fx_passes.gelu import recognize_gelu
from torch_tpu.fx_passes.hardswish import recognize_hardswish
from torch_tpu.fx_passes.silu import recognize_silu

from .helpers import run_pass

aten = torch.ops.aten


class Silus(nn.Module):
    def forward(self, x, y):
        u = x + 1
        return x * torch.sigmoid(x), torch.sigmoid(u) * u, torch.sigmoid(y) * x  # last: not silu


def test_silu():
    r = run_pass(Silus(), (torch.randn(2, 8), torch.randn(2, 8)), recognize_silu)
    assert r.after[aten.silu.default] == 2 and r.after[aten.sigmoid.default] == 1
    assert r.names["mul"].target is aten.silu.default


class Gelus(nn.Module):
    def forward(self, x):
        erf1 = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
        erf2 = x * (torch.erf(x * 0.7071067811865476) + 1.0) * 0.5
        k = math.sqrt(2 / math.pi)
        tanh1 = 0.5 * x * (1.0 + torch.tanh(k * (x + 0.044715 * torch.pow(x, 3.0))))
        tanh2 = x * 0.5 * (1 + torch.tanh(k * x * (1 + 0.044715 * x * x)))
        not_gelu = 0.5 * x * (1 + torch.erf(x / 2))
        return erf1, erf2, tanh1, tanh2, not_gelu


def test_gelu_erf_and_tanh_forms():
    r = run_pass(Gelus(), (torch.randn(3, 16) * 3,), recognize_gelu)
    gelus = [n for n in r.top.gm.graph.nodes if n.target is aten.gelu.default]
    assert len(gelus) == 4 and r.after[aten.erf.default] == 1 and r.after[aten.tanh.default] == 0
    assert sorted(n.kwargs.get("approximate", "none") for n in gelus) == ["none", "none", "tanh", "tanh"]


class HardActs(nn.Module):
    def forward(self, x):
        onnx_hsig = torch.clamp(x * (1 / 6) + 0.5, 0, 1)  # onnx2torch's HardSigmoid(alpha=1/6)
        return (F.hardswish(x), F.hardsigmoid(x), x * F.relu6(x + 3) / 6, torch.clamp(x + 3, 0, 6) * (1 / 6),
                onnx_hsig, x * onnx_hsig,
                x * torch.clamp(x + 2, 0, 6) / 6, torch.clamp(x * 0.2 + 0.5, 0, 1))  # last two: neither


def test_hardswish_and_hardsigmoid():
    r = run_pass(HardActs(), (torch.randn(2, 4, 6) * 4,), recognize_hardswish)
    assert r.after[aten.hardswish.default] == 3 and r.after[aten.hardsigmoid.default] == 3
    assert r.after[aten.div.Tensor] == 1 and r.after[aten.clamp.default] >= 2

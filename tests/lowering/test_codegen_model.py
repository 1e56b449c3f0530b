"""Whole models through codegen: DDR plan (reuse, aliases), save/load, profile; linear/softmax/reductions."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _codegen_helpers import assert_close, check_codegen, compile_module
from torch_tpu.cmodel import Program, isa, run_program


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        y = self.c1(x)
        y = F.max_pool2d(y + self.c2(y), 2)
        y = F.adaptive_avg_pool2d(F.relu(self.c3(y)), 1)
        return F.softmax(self.fc(torch.flatten(y, 1)), -1)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_tiny_cnn_end_to_end_saved_and_loaded(precision, tmp_path):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 16, 16)
    tpu, prog, plan = check_codegen(model, [x], precisions=(precision,))[precision]
    assert plan.size < plan.naive and plan.aliases  # liveness reuse and the flatten alias
    print(plan.report())
    assert all(i.layer for i in prog.instructions)
    path = prog.save(tmp_path / "tiny.tpu")
    res = run_program(path, {prog.inputs[0].name: x}, kernels="c", profile=True)
    with torch.no_grad():
        ref = tpu(x)
    assert_close(res.outputs["output0"], ref[0] if isinstance(ref, (tuple, list)) else ref, precision)
    prof = res.profile
    print(prof.summary())
    assert prof.total_cycles > 0 and prof.ddr_read_bytes >= len(prog.weights)
    assert Program.load(path).to_header() == prog.to_header()


def test_resnet18_32x32_f32():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    tpu, prog, plan = check_codegen(tv.models.resnet18(num_classes=10), [x], precisions=("f32",),
                                    kernels=("c",))["f32"]
    print(plan.report())
    assert plan.size < plan.naive / 2


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(24, 12)
        self.ln = nn.LayerNorm(12)

    def forward(self, x):
        y = F.relu(self.fc(x))                    # (2, 64, 12): 128 rows -> 2 batches of 64 lanes
        att = torch.matmul(y, y.transpose(1, 2))   # (2, 64, 64): two computed operands
        return F.log_softmax(y, -1), y.sum(-1), y.amax(-1), y.mean((1, 2)), self.ln(y), F.softmax(att, -1)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_linear_softmax_reductions(precision):
    torch.manual_seed(3)
    check_codegen(Heads(), [torch.randn(2, 64, 24)], precisions=(precision,))


def test_reshape_alias_emits_no_copy():
    class Flat(nn.Module):
        def forward(self, x):
            return torch.relu(x.reshape(4, 30)) * 2.0

    torch.manual_seed(4)
    tpu, prog, plan = compile_module(Flat(), [torch.randn(2, 3, 20)], "f32")
    assert plan.aliases and not any(isinstance(i, isa.DmaCopy) for i in prog.instructions)
    check_codegen(Flat(), [torch.randn(2, 3, 20)], precisions=("f32",))

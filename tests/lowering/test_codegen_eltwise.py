"""Codegen of element-wise ops (activations, binary with broadcast, constants, casts) vs the TPU graph."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _codegen_helpers import check_codegen
from torch_tpu.errors import UnsupportedOpError
from torch_tpu.lowering.codegen.driver import HANDLERS


class Unary(torch.nn.Module):
    def forward(self, x):
        a = torch.relu(x) + torch.sigmoid(x) * torch.tanh(x)
        b = F.silu(x) - F.gelu(x) + F.gelu(x, approximate="tanh")
        c = F.hardswish(x) * F.hardsigmoid(x) + F.leaky_relu(x, 0.1) + torch.clamp(x, -0.5, 0.7)
        d = torch.exp(x * 0.5) + torch.sqrt(torch.abs(x) + 1.0) - torch.erf(x) + torch.neg(x)
        return a, b, c, d


class Binary(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("k", torch.linspace(-1, 1, 6).reshape(1, 6, 1, 1))

    def forward(self, x, y, r):
        a = x + y
        b = x * r - self.k          # row broadcast (1, 1, 1, W) and a per-channel constant
        c = torch.maximum(x, y) / (torch.abs(r) + 2.0)
        d = torch.minimum(x, y * 3.0) + (0.25 - x)
        return a, b, c, d


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_unary_activations(precision):
    torch.manual_seed(0)
    check_codegen(Unary(), [torch.randn(2, 6, 5, 7)], precisions=(precision,))


@pytest.mark.parametrize("precision", ["f32", "bf16", "f16"])
def test_binary_broadcast_and_constants(precision):
    torch.manual_seed(1)
    x, y, r = torch.randn(2, 6, 5, 7), torch.randn(2, 6, 5, 7), torch.randn(1, 1, 1, 7)
    check_codegen(Binary(), [x, y, r], precisions=(precision,))


def test_rank2_and_cast_only_graph():
    torch.manual_seed(2)
    check_codegen(torch.nn.ReLU6(), [torch.randn(3, 130)], precisions=("f32", "bf16", "f16"))


class BatchNormOnly(torch.nn.Module):
    """A batch norm without a conv before it stays a ``tpu.scale_shift``."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1), self.bn.running_var.uniform_(0.5, 2)
            self.bn.weight.uniform_(0.5, 1.5), self.bn.bias.uniform_(-1, 1)

    def forward(self, x):
        return self.bn(x) * 1.5


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_scale_shift(precision):
    torch.manual_seed(5)
    check_codegen(BatchNormOnly(), [torch.randn(2, 5, 6, 9)], precisions=(precision,), kernels=("c",))


def test_unsupported_op_names_op_and_node(monkeypatch):
    monkeypatch.delitem(HANDLERS, "gather")  # every tpu op has a handler now: take one away

    class Gather(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("idx", torch.tensor([[2, 0, 1, 1]]))

        def forward(self, x):
            return torch.gather(x, 1, self.idx) * 2.0

    with pytest.raises(UnsupportedOpError, match=r"codegen\[bm1684x\].*unsupported op tpu.gather.* "
                                                 r"at node 'gather' .*codegen/driver.py"):
        check_codegen(Gather(), [torch.randn(1, 4)], precisions=("f32",))

"""Activation rules: every unary op of the table, gelu (erf/tanh), leaky_relu, hardtanh, clamp, pow."""

import torch
import torch.nn.functional as F

from _lowering_helpers import check_module


class ActNet(torch.nn.Module):
    def forward(self, x):
        p = x.abs() + 0.5
        outs = [
            F.relu(x), torch.sigmoid(x), F.silu(x), torch.tanh(x), F.hardswish(x), F.hardsigmoid(x),
            torch.exp(x * 0.5), torch.erf(x), torch.log(p), torch.sqrt(p), torch.rsqrt(p), -x,
            F.gelu(x), F.gelu(x, approximate="tanh"), F.leaky_relu(x, 0.1), F.relu6(x * 4),
            torch.clamp(x, -0.5, 0.7), torch.clamp(x, min=0.2), p ** 2.5, F.hardtanh(x, -0.3, 0.3),
        ]
        return torch.stack(outs)


def test_activation_family():
    torch.manual_seed(0)
    check_module(ActNet(), [torch.randn(3, 40)])

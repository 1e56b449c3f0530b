"""Normalisation rules: softmax, log_softmax, layer norm, raw inference batch norm."""

import torch

from _lowering_helpers import check_module


class NormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(4)
        self.ln = torch.nn.LayerNorm([5, 6])
        self.bn.running_mean.normal_()
        self.bn.running_var.uniform_(0.5, 2.0)
        self.bn.weight.data.normal_()
        self.bn.bias.data.normal_()

    def forward(self, x):
        y = self.bn(x)
        return self.ln(y), torch.softmax(y, dim=1), torch.log_softmax(y, dim=-1)


def test_norm_family():
    torch.manual_seed(0)
    check_module(NormNet(), [torch.randn(2, 4, 5, 6)])

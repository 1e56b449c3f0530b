"""Convolution rules: captured modules lowered at f32 / bf16 / f16 against the TOP graph."""

import pytest
import torch
import torch.nn.functional as F

from _lowering_helpers import check_module


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.grouped = torch.nn.Conv2d(8, 6, (1, 3), padding=(0, 1), groups=2)
        self.c1d = torch.nn.Conv1d(6, 5, 3, padding=1)

    def forward(self, x):
        y = self.grouped(self.dw(self.c1(x)))
        y = F.conv2d(F.pad(y, [1, 0, 0, 1]), torch.ones(6, 6, 2, 2) * 0.1)  # asymmetric pad, constant weight
        n, c, h, w = y.shape
        return self.c1d(y.reshape(n, c, h * w))


def test_conv_family():
    torch.manual_seed(0)
    check_module(ConvNet(), [torch.randn(2, 4, 9, 11)])


def test_transposed_conv_is_unsupported():
    from torch_tpu.errors import UnsupportedOpError
    from torch_tpu.frontends.torch_frontend import capture_module
    from torch_tpu.lowering.driver import lower

    top = capture_module(torch.nn.ConvTranspose2d(3, 4, 2, stride=2), (torch.randn(1, 3, 4, 4),))
    with pytest.raises(UnsupportedOpError, match="convolution.*non-transposed"):
        lower(top.gm, "bm1684x", "f32")

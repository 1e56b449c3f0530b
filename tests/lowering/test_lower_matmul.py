"""Matrix-product rules (addmm/mm -> tpu.linear, bmm and broadcast matmul -> tpu.matmul)."""

import torch

from _lowering_helpers import check_module


class MatNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 6)
        self.fc3 = torch.nn.Linear(6, 5, bias=False)
        self.register_buffer("proj", torch.randn(5, 7))

    def forward(self, x, y):
        h = self.fc3(self.fc(x))            # [2, 3, 5]: view + addmm / mm
        a = h @ self.proj                    # constant right operand
        b = torch.matmul(a, y)               # [2, 3, 7] x [7, 4] broadcast
        q = torch.bmm(h, h.transpose(1, 2))  # computed operands
        return b, q


def test_matmul_family():
    torch.manual_seed(0)
    check_module(MatNet(), [torch.randn(2, 3, 8), torch.randn(7, 4)])

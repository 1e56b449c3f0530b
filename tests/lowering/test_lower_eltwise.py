"""Element-wise rules: arithmetic with broadcast and constants, comparisons, logic, where, full_like."""

import torch

from _lowering_helpers import check_module


class EltNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("bias", torch.randn(1, 4, 1))
        self.register_buffer("scale", torch.tensor(1.5))

    def forward(self, x, y):
        a = x + y                                   # broadcast [2,4,5] + [4,1]
        b = a * self.bias - 0.5                     # constant tensor, scalar
        c = torch.add(b, x, alpha=2.0)              # alpha
        d = 1.0 - c / (x.abs() + 1.0)               # rsub, div
        e = torch.maximum(d, y) + torch.minimum(d, self.scale)
        mask = (e > 0.1) & ~(x == 0.0) | (y < -5.0)
        f = torch.where(mask, e, torch.full_like(e, -1.0))
        g = f.masked_fill(x < -1.0, 0.25)
        return g * 2 / 3, mask.any(dim=-1)


def test_eltwise_family():
    torch.manual_seed(0)
    check_module(EltNet(), [torch.randn(2, 4, 5), torch.randn(4, 1)])

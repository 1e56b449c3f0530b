"""Pooling and reduction rules."""

import torch
import torch.nn.functional as F

from _lowering_helpers import check_module


class PoolNet(torch.nn.Module):
    def forward(self, x):
        a = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        b = F.max_pool2d(x, 2, dilation=2)
        c = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        d = F.avg_pool2d(x, 3, 2, 1, count_include_pad=True, divisor_override=5)
        e = F.adaptive_avg_pool2d(x, (2, 3))
        r = [x.mean([2, 3], keepdim=True).flatten(), x.sum(-1).flatten(), x.amax((1, 3)).flatten(),
             x.amin(2).flatten(), x.max(dim=1).values.flatten(), x.mean().reshape(1)]
        return a, b, c, d, e, torch.cat(r)


def test_pool_reduce_family():
    torch.manual_seed(0)
    check_module(PoolNet(), [torch.randn(2, 3, 9, 10)])

"""Codegen of conv2d (groups, depthwise, stride, dilation, fused activation) and pools, with tiling along
N/H (halos, double buffering) when the tensors do not fit one lane's local memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _codegen_helpers import check_codegen
from torch_tpu.cmodel import isa
from torch_tpu.targets import get_target


class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.g = nn.Conv2d(8, 6, (1, 3), padding=(0, 1), groups=2, bias=False)

    def forward(self, x):
        y = F.relu6(self.a(x))
        y = torch.relu(self.dw(y))
        y = self.g(y)
        return F.max_pool2d(y, 3, 2, 1), F.avg_pool2d(y, 2), F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_conv_family_and_pools(precision):
    torch.manual_seed(0)
    check_codegen(Convs(), [torch.randn(2, 4, 11, 13)], precisions=(precision,))


class Big(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return F.max_pool2d(torch.relu(self.c(x)), 3, 1, 1)


def test_tiling_with_halos_is_exact_and_double_buffered():
    """1x3x192x192 f32: 144 KiB per lane per channel, input + output exceed 256 KiB -> several H slices."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 192, 192)
    progs = check_codegen(Big(), [x], precisions=("f32",), kernels=("c",))
    prog = progs["f32"][1]
    insts = prog.instructions
    t = get_target(prog.target)
    conv = [i for i in insts if isinstance(i, isa.Conv2d)]
    pools = [i for i in insts if isinstance(i, isa.Pool2d)]
    assert len(conv) > 2 and len(pools) > 2
    assert sum(c.out.shape[2] for c in conv) == 192
    # halos: inner slices load one extra row above and below, and only the border slices are padded
    assert conv[0].pad[:2] == (1, 0) and conv[-1].pad[:2] == (0, 1)
    assert all(c.pad[:2] == (0, 0) and c.x.shape[2] == c.out.shape[2] + 2 for c in conv[1:-1])
    for inst in insts:
        assert inst.layer, inst
        for _, lt in inst.local_operands():
            assert lt.addr + lt.bytes_per_lane(t) <= t.local_mem_bytes
    # double buffering: the load of slice i+1 does not depend on slice i's compute
    by_id = {i.id: i for i in insts}
    loads = [i for i in insts if isinstance(i, isa.DmaLoad) and i.layer == conv[0].layer and i.dst.shape[1] == 3]
    for prev_conv, nxt_load in zip(conv, loads[1:]):
        assert prev_conv.id not in nxt_load.deps
        # only the compute two slices back (same buffer set, write-after-read) may precede it
        assert all(d < prev_conv.id for d in nxt_load.deps if isinstance(by_id[d], isa.Conv2d))
        assert nxt_load.id < prev_conv.id  # pipelined: emitted before, so the DMA engine is not held
    assert conv[0].x.addr != conv[1].x.addr

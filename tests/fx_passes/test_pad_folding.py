import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_tpu.fx_passes.pad_folding import fold_pad

from .helpers import run_pass

aten = torch.ops.aten
PAD = aten.constant_pad_nd.default


class Pads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=(1, 0))
        self.conv2 = nn.Conv2d(2, 4, 3)

    def forward(self, x):
        return (self.conv(F.pad(x, [1, 1, 2, 2])),                                 # folds: padding (3, 1)
                self.conv2(F.pad(x, [0, 1, 0, 1])),                                # asymmetric: stays
                self.conv2(F.pad(x, [1, 1, 1, 1], value=0.5)),                     # not zero: stays
                F.max_pool2d(F.pad(x, [1, 1, 1, 1], value=-math.inf), 3, 2),       # folds: -inf is max's pad
                F.avg_pool2d(F.pad(x, [1, 1, 1, 1]), 3, 2, count_include_pad=True),  # folds
                F.max_pool2d(F.pad(x, [1, 1, 1, 1]), 3, 2))                        # zero pad before max: stays


def test_pads_fold_only_where_the_op_pads_with_the_same_values():
    r = run_pass(Pads(), (torch.randn(1, 2, 9, 9),), fold_pad)
    assert r.result.modified
    assert r.before[PAD] == 6 and r.after[PAD] == 3
    assert list(r.names["conv"].args[4]) == [3, 1]
    assert r.after[aten.max_pool2d_with_indices.default] == 2 and r.after[aten.avg_pool2d.default] == 1
    assert sum(1 for n in r.top.gm.graph.nodes if n.target is aten.max_pool2d_with_indices.default
               and n.args[0].target is not PAD) == 1

"""Codegen of shape ops (DDR -> DDR copies) vs the TPU graph: permute, concat, slice, pad, expand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _codegen_helpers import check_codegen


class Shapes(torch.nn.Module):
    def forward(self, x, y):
        p = x.permute(0, 2, 3, 1) * 2.0                      # (2, 5, 7, 3)
        c = torch.cat([x, y, x], dim=1)                      # (2, 9, 5, 7)
        s = c[:, 2:8:2, 1:-1] + 1.0                          # slices on C (step 2) and H
        q = F.pad(torch.relu(y), (1, 2, 0, 3), value=0.5)    # W and H pads
        e = torch.relu(x[:, :1]).expand(2, 4, 5, 7) - 1.0
        return p, s, q, e


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_shape_ops(precision):
    torch.manual_seed(0)
    check_codegen(Shapes(), [torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7)], precisions=(precision,),
                  kernels=("c",))

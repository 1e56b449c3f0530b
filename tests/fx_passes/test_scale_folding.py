import torch
import torch.nn as nn

from torch_tpu.fx_passes.scale_folding import fold_scale

from .helpers import run_pass

aten = torch.ops.aten


class Scales(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.scale = nn.Parameter(torch.rand(1, 6, 1, 1) + 0.5)
        self.shift = nn.Parameter(torch.randn(6, 1, 1))
        self.fc = nn.Linear(4, 5, bias=False)
        self.other = nn.Conv2d(3, 6, 3)
        self.mask = nn.Parameter(torch.randn(1, 1, 6, 6))

    def forward(self, x, v):
        a = torch.relu((self.conv(x) * self.scale + self.shift) / 2.0 - 0.25)  # all four fold into conv
        b = 3.0 * self.fc(v) + 1.0                                             # scalar scale into linear
        c = self.other(x) * self.mask                                          # not per channel: stays
        return a, b, c


def test_per_channel_and_scalar_constants_fold_into_conv_and_linear():
    r = run_pass(Scales(), (torch.randn(2, 3, 8, 8), torch.randn(2, 4)), fold_scale)
    assert r.result.modified
    assert r.before[aten.mul.Tensor] == 3 and r.after[aten.mul.Tensor] == 1
    for op in (aten.add.Tensor, aten.div.Tensor, aten.sub.Tensor):
        assert r.after[op] == 0, op
    assert r.after[aten.convolution.default] == 2
    relu_in = r.names["relu"].args[0]
    assert relu_in.target is aten.convolution.default and relu_in.meta["stable_name"] == "sub"
    assert r.names["add_1"].target is aten.addmm.default

import torch
import torch.nn as nn

from torch_tpu.fx_passes.permute_reshape import cancel_permute_reshape

from .helpers import run_pass

aten = torch.ops.aten


class Shapes(nn.Module):
    def forward(self, x):
        nhwc = x.permute(0, 2, 3, 1)
        a = torch.relu(nhwc.permute(0, 3, 1, 2))            # NHWC round trip: both permutes go
        b = torch.sigmoid(x.permute(0, 2, 1, 3).permute(3, 0, 2, 1))  # composes into one permute
        c = torch.tanh(x.reshape(2, 12, 5).reshape(6, 4, 5).reshape(2, 3, 4, 5))  # back to x's shape
        d = torch.exp(x.reshape(24, 5).reshape(4, 30))      # merges into one view
        return a, b, c, d


def test_permute_and_reshape_chains_cancel_or_merge():
    r = run_pass(Shapes(), (torch.randn(2, 3, 4, 5),), cancel_permute_reshape)
    assert r.result.modified
    assert r.before[aten.permute.default] == 4 and r.after[aten.permute.default] == 1
    assert r.after[aten.view.default] == 1
    assert r.names["relu"].args[0].op == "placeholder" and r.names["tanh"].args[0].op == "placeholder"
    perm = r.names["sigmoid"].args[0]
    assert perm.target is aten.permute.default and list(perm.args[1]) == [3, 0, 1, 2]
    assert perm.args[0].op == "placeholder" and perm.meta["stable_name"] == "permute_3"

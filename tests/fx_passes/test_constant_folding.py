import torch
import torch.nn as nn

from torch_tpu.fx_passes.constant_folding import fold_constants

from .helpers import run_pass

aten = torch.ops.aten


class Consts(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.row = nn.Parameter(torch.randn(1, 1, 512))

    def forward(self, x):
        tokens = self.fc(x)                                          # permute(fc.weight) folds
        pos = torch.arange(3, dtype=torch.float32).view(1, 3, 1) * 0.5 + torch.ones(1, 3, 8)
        seq = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens + pos], dim=1)
        big = x.sum() * self.row.expand(1, 256, 512)                 # 131072 elements: stays an expand
        return seq, big


def test_constant_subgraphs_fold_but_big_broadcasts_stay():
    r = run_pass(Consts(), (torch.randn(1, 3, 8),), fold_constants)
    assert r.result.modified
    for op in (aten.arange.start_step, aten.ones.default, aten.permute.default):
        assert r.after[op] == 0, op
    assert r.after[aten.expand.default] == 1 and r.names["expand_1"].target is aten.expand.default
    assert r.names["fc.permute"].op == "get_attr"  # the constant keeps the last folded node's name
    assert r.names["expand"].op == "get_attr"
    assert r.names["add"].op == "get_attr" and tuple(r.names["add"].meta["val"].shape) == (1, 3, 8)
    assert not any(n.op == "get_attr" and n.target == "fc.weight" for n in r.top.gm.graph.nodes)
    assert not hasattr(r.top.gm.fc, "weight")  # no dangling attribute
    # the limit is a parameter: a larger one folds the broadcast too (same graph, same outputs)
    x = torch.randn(1, 3, 8)
    ref = r.top.run_flat(x)
    assert fold_constants(r.top.gm, max_elements=1 << 18).modified
    assert all(n.target is not aten.expand.default for n in r.top.gm.graph.nodes)
    assert all(torch.equal(a, b) for a, b in zip(r.top.run_flat(x), ref))

import operator

import torch
import torch.nn as nn

from torch_tpu.fx_passes.constant_folding import fold_constants
from torch_tpu.fx_passes.checker import find_fake_mode
from torch_tpu.fx_passes.dead_code import remove_dead_code
from torch_tpu.fx_passes.noops import remove_noops

from .helpers import run_pass

aten = torch.ops.aten


class Noops(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.register_buffer("zeros", torch.zeros(2, 3, 4))
        self.register_buffer("ones", torch.ones(4))

    def forward(self, x):
        y = self.drop(x).clone() * 1 + 0
        y = y.view(2, 3, 4).expand(2, 3, 4).to(torch.float32).contiguous()
        y = (y - 0.0) / 1.0 + self.zeros
        y = y * self.ones
        z = torch.relu(y)[:, :, 0:4]
        kept = x.transpose(1, 2).contiguous().view(2, 12)  # clone of a transposed tensor feeds a view: kept
        return z, kept, (x + 1) * 1.0


def _add_eval_dropout(gm):
    """Route the input through native_dropout(train=False) + getitem, as an ONNX/trace remnant."""
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    with gm.graph.inserting_after(x):
        d = gm.graph.call_function(aten.native_dropout.default, (x, 0.5, False))
    with gm.graph.inserting_after(d):
        g = gm.graph.call_function(operator.getitem, (d, 0))
    x.replace_all_uses_with(g, delete_user_cb=lambda u: u is not d)
    with find_fake_mode(gm):
        d.meta["val"] = aten.native_dropout.default(x.meta["val"], 0.5, False)
    g.meta["val"] = d.meta["val"][0]
    d.meta["stable_name"], g.meta["stable_name"] = "dropout#tuple", "dropout"
    gm.recompile()


def test_identities_are_removed_and_layout_changing_copies_kept():
    r = run_pass(Noops(), (torch.randn(2, 3, 4),), remove_noops,
                 pre=(remove_dead_code, fold_constants, _add_eval_dropout))
    assert r.before[aten.native_dropout.default] == 1 and r.after[aten.native_dropout.default] == 0
    assert r.result.modified
    for op in (aten.mul.Tensor, aten.div.Tensor, aten.sub.Tensor, aten.expand.default, aten.slice.Tensor,
               aten._to_copy.default):
        assert r.after[op] == 0, op
    assert r.after[aten.add.Tensor] == 1  # x + 1 stays
    assert r.after[aten.clone.default] == 1 and r.after[aten.view.default] == 1
    assert r.names["relu"].args[0].op == "placeholder"
    assert not any(n.op == "get_attr" for n in r.top.gm.graph.nodes)  # zeros / ones buffers are gone

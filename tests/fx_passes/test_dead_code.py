import torch
import torch.nn as nn

from torch_tpu.fx_passes.dead_code import remove_dead_code

from .helpers import run_pass

aten = torch.ops.aten


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)  # its num_batches_tracked buffer is never read

    def forward(self, x):
        return self.bn(self.fc(x).to(torch.float32))  # .to() leaves an _assert_tensor_metadata


def _add_dead_node(gm):
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    with gm.graph.inserting_after(x):
        dead = gm.graph.call_function(aten.sin.default, (x,))
    dead.meta["val"] = x.meta["val"]
    dead.meta["stable_name"] = "dead_sin"
    gm.register_buffer("stale", torch.zeros(3))
    gm.recompile()


def test_unused_nodes_attributes_and_assertions_go():
    r = run_pass(Unused(), (torch.randn(3, 4),), remove_dead_code, pre=(_add_dead_node,))
    assert r.result.modified
    assert r.before[aten.sin.default] == 1 and r.after[aten.sin.default] == 0
    assert r.after[aten._assert_tensor_metadata.default] == 0
    gm = r.top.gm
    assert not hasattr(gm, "stale") and not hasattr(gm, "unused")
    assert not any("num_batches_tracked" in name for name, _ in gm.named_buffers())
    assert not remove_dead_code(gm).modified  # idempotent

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from torch_tpu.fx_passes.flops import annotate_flops, graph_flops, node_flops

from .helpers import run_pass

aten = torch.ops.aten


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.fc = nn.Linear(8 * 3 * 3, 10)

    def forward(self, x):
        y = self.dw(torch.relu(self.conv(x)))
        z = self.fc(y.flatten(1))
        return z, torch.bmm(z.unsqueeze(2), z.unsqueeze(1))


def test_matmul_and_conv_flops_match_torch_flop_counter_and_elementwise_ops_count_elements():
    x = torch.randn(2, 3, 10, 10)
    r = run_pass(Net(), (x,), annotate_flops)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        r.top.gm(x)
    heavy = (aten.convolution.default, aten.addmm.default, aten.bmm.default)
    ours = sum(n.meta["flops"] for n in r.top.gm.graph.nodes if n.target in heavy)
    assert ours == counter.get_total_flops()
    conv = r.names["conv"]
    assert conv.meta["flops"] == 2 * 2 * 8 * 5 * 5 * 3 * 9 and conv.meta["shape"] == (2, 8, 5, 5)
    assert r.names["dw"].meta["flops"] == 2 * 2 * 8 * 3 * 3 * 1 * 9
    assert r.names["relu"].meta["flops"] == 2 * 8 * 5 * 5
    views = [n for n in r.top.gm.graph.nodes if n.target is aten.view.default]
    assert views and all(n.meta["flops"] == 0 for n in views)
    total = graph_flops(r.top.gm)
    assert total == sum(node_flops(n) for n in r.top.gm.graph.nodes if n.op == "call_function") > ours

"""Float conv / linear + activation fusion (torch_tpu/lowering/fuse.py).

The fused graph must give the same bits as the unfused one at every float precision: the fused op
rounds ``act(acc)`` once, the pair rounds ``acc`` and then ``act(round(acc))``; rounding is monotone and
keeps 0, 6 and the (dtype-representable) clip bounds, so both agree for clamps. Names: a fused node takes
the activation's stable name; producers with other users or activations with tensor bounds stay apart.
"""

import pytest
import torch
import torch.nn.functional as F

import torch_tpu.lowering.driver as driver
from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.names import stable_name
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.fuse import fuse_conv_activations

tpu = torch.ops.tpu


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = torch.nn.ReLU()
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.act2 = torch.nn.ReLU6()
        self.c3 = torch.nn.Conv2d(8, 8, 1)
        self.c4 = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8, 5)
        self.fc2 = torch.nn.Linear(5, 4)

    def forward(self, x):
        y = self.act2(self.c2(self.act1(self.c1(x))))
        y = torch.clamp(self.c3(y), -0.5, 0.75)           # clip with finite bounds
        z = self.c4(y)
        y = F.relu(z) + z                                  # z has two users: not fused
        y = y.mean((2, 3))
        return self.fc2(torch.relu(self.fc(y)))


def unfused(monkeypatch, gm, precision):
    with monkeypatch.context() as m:
        m.setattr(driver, "fuse_conv_activations", lambda g: type("R", (), {"graph_module": g})())
        return driver.lower(gm, "bm1684x", precision)


@pytest.mark.parametrize("precision", ["f32", "bf16", "f16"])
def test_fused_equals_unfused_bitwise(monkeypatch, precision):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 7) * 3
    top = capture_module(Net().eval(), (x,))
    fused = driver.lower(top.gm, "bm1684x", precision)
    plain = unfused(monkeypatch, top.gm, precision)
    check_tpu(fused, "bm1684x", precision)
    with torch.no_grad():
        a, b = fused(x), plain(x)
    a, b = (a[0] if isinstance(a, (tuple, list)) else a), (b[0] if isinstance(b, (tuple, list)) else b)
    assert torch.equal(a, b)
    acts = [n.kwargs.get("act") for n in fused.graph.nodes if n.target in (tpu.conv2d.default, tpu.linear.default)]
    assert acts == ["relu", "relu6", "clip", None, "relu", None]
    assert not any(n.target == tpu.clip.default for n in fused.graph.nodes)
    assert sum(n.target == tpu.relu.default for n in fused.graph.nodes) == 1   # the one after c4


def test_fused_nodes_take_the_activation_names(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 6)
    top = capture_module(Net().eval(), (x,))
    fused = driver.lower(top.gm, "bm1684x", "f32")
    names = {stable_name(n): n for n in fused.graph.nodes if n.op == "call_function"}
    assert names["act1"].target == tpu.conv2d.default and names["act1"].kwargs["act"] == "relu"
    assert names["act2"].kwargs["act"] == "relu6"
    clamp = names["clamp"]
    assert (clamp.kwargs["act"], clamp.kwargs["act_min"], clamp.kwargs["act_max"]) == ("clip", -0.5, 0.75)
    assert "c1" not in names and "c2" not in names and "fc" not in names
    assert "c4" in names and names["c4"].kwargs.get("act") is None            # two users
    top_names = {stable_name(n) for n in top.gm.graph.nodes}
    assert {"act1", "act2", "clamp", "relu"} <= top_names


def test_pass_leaves_unmatched_graphs_alone(monkeypatch):
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Sigmoid())
    top = capture_module(m.eval(), (torch.randn(1, 3, 4, 4),))
    gm = unfused(monkeypatch, top.gm, "f32")
    assert not fuse_conv_activations(gm).modified


def test_fused_program_runs_one_instruction_per_layer():
    """The fused conv's activation reaches the ISA: no activation instructions, same values as the graph."""
    import torch_tpu

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 1),
                            torch.nn.Hardtanh(0.0, 6.0)).eval()
    x = torch.randn(1, 3, 8, 8) * 4
    top = torch_tpu.transform(m, (x,))
    prog = torch_tpu.deploy(top, precision="f32")
    ops = [i for i in prog.instructions if i.ENGINE == "compute"]
    assert [i.OPCODE for i in ops] == ["conv2d", "conv2d"]
    assert [i.act for i in ops] == ["relu", "relu6"]
    with torch.no_grad():
        want = driver.lower(top.gm, "bm1684x", "f32")(x)
    want = want[0] if isinstance(want, (tuple, list)) else want
    got = torch_tpu.run(prog, [x], cmodel="c")["output0"]
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)

import torch
import torch.nn as nn

from torch_tpu.frontends import capture_module
from torch_tpu.graph.names import normalize_module_path, stable_name


def test_normalize_module_path_forms():
    assert normalize_module_path("L['self'].layer1[0].conv1") == "layer1.0.conv1"
    assert normalize_module_path("L['self']._modules['fc']._parameters['weight']") == "fc.weight"
    assert normalize_module_path("L['self'].encoder.layer[1].attention.self.query") == \
        "encoder.layer.1.attention.self.query"
    assert normalize_module_path("L['x']") == "x"
    assert normalize_module_path("layer1.0.conv1") == "layer1.0.conv1"


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        return self.act(y + 1.0)  # the same module called twice, plus an op of the block itself


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = self.block(x).mean(dim=(2, 3))
        return self.fc(y).softmax(-1)


def test_names_follow_module_paths():
    top = capture_module(Net(), (torch.randn(1, 3, 8, 8),))
    names = [stable_name(n) for n in top.gm.graph.nodes if n.op != "output"]
    assert len(names) == len(set(names)), "stable names must be unique"
    for expected in ["x", "block.conv", "block.bn", "block.act", "block.act_1", "block.conv.weight", "fc.weight"]:
        assert expected in names, (expected, names)
    # the value named block.bn is element 0 of the BatchNorm tuple; the tuple itself is block.bn#tuple
    assert "block.bn#tuple" in names
    assert top.output_names == [names[-1]]


def test_names_are_the_same_through_torch_compile():
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    top = capture_module(model, (x,))
    seen = {}

    def backend(gm, example_inputs):
        from torch_tpu.frontends import capture_dynamo
        t, _ = capture_dynamo(gm, example_inputs)
        seen["names"] = sorted(stable_name(n) for n in t.gm.graph.nodes if n.op != "output")
        seen["text"] = set(t.text().splitlines()[1:])
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=backend)(x)
    assert seen["names"] == sorted(stable_name(n) for n in top.gm.graph.nodes if n.op != "output")
    assert seen["text"] == set(top.text().splitlines()[1:])

import pytest
import torch
import torch.nn as nn

from torch_tpu.errors import VerificationError
from torch_tpu.frontends import capture_module
from torch_tpu.fx_passes.checker import check_top, top_problems

aten = torch.ops.aten


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


@pytest.fixture(scope="module")
def gm():
    return capture_module(Small(), (torch.randn(1, 3, 6, 6),)).gm


def _node(gm, name):
    return next(n for n in gm.graph.nodes if n.meta.get("stable_name") == name)


def test_captured_graph_is_valid(gm):
    assert top_problems(gm) == []
    assert check_top(gm) is gm


def test_wrong_val_is_reported_with_node_and_rule(gm):
    relu = _node(gm, "relu")
    old = relu.meta["val"]
    relu.meta["val"] = old.new_empty((1, 4, 3, 3))
    try:
        with pytest.raises(VerificationError, match=r"node 'relu' \(aten.relu\): rule val-matches"):
            check_top(gm)
    finally:
        relu.meta["val"] = old


def test_duplicate_name_missing_val_inplace_and_missing_attr_are_reported(gm):
    relu, conv = _node(gm, "relu"), _node(gm, "conv")
    saved = (relu.target, relu.meta["stable_name"], conv.meta.pop("val"))
    relu.target = aten.relu_.default
    relu.meta["stable_name"] = "conv"
    weight = _node(gm, "conv.weight")
    target = weight.target
    weight.target = "no.such.weight"
    try:
        text = "\n".join(top_problems(gm))
        assert "rule unique-names: stable name 'conv'" in text
        assert "node 'conv' (aten.convolution): rule has-val" in text
        assert "rule functional: op aten.relu_ mutates its inputs" in text
        assert "rule attr-exists: get_attr target 'no.such.weight'" in text
    finally:
        relu.target, relu.meta["stable_name"], conv.meta["val"] = saved
        weight.target = target
    assert top_problems(gm) == []


def test_non_core_ops_and_modules_are_refused(gm):
    relu = _node(gm, "relu")
    relu.target = aten.relu6.default  # not core ATen
    try:
        with pytest.raises(VerificationError, match="rule core-aten: op aten.relu6 is not core ATen"):
            check_top(gm)
    finally:
        relu.target = aten.relu.default
    relu.target = aten.silu.default  # an allowed TOP extra (what recognize_silu produces)
    try:
        assert top_problems(gm) == []
    finally:
        relu.target = aten.relu.default

"""Schema, reader and plan: legacy inputs, phase rules, V1 upgrade, naming plan, TOP save/load round trip."""

from __future__ import annotations

import numpy as np
import torch

from conftest_caffe import write_net
from torch_tpu.frontends.caffe import load_caffe, message_class, read_net
from torch_tpu.frontends.caffe.builder import plan_network
from torch_tpu.frontends.caffe.registry import REGISTRY
from torch_tpu.graph import load_top


def test_schema_round_trip_uses_caffe_field_numbers():
    layer = message_class("LayerParameter")(name="c", type="Convolution")
    layer.convolution_param.num_output = 4
    layer.convolution_param.kernel_size.append(3)
    data = layer.SerializeToString()
    # name = 1, type = 2 (strings); convolution_param = 106 (length-delimited: tag 106 << 3 | 2 = 850)
    assert data.startswith(b"\x0a\x01c\x12\x0bConvolution")
    assert b"\xd2\x06" in data  # varint 850
    again = message_class("LayerParameter")()
    again.ParseFromString(data)
    assert again.convolution_param.kernel_size == [3] and again.convolution_param.bias_term  # default true


def test_legacy_input_shape_and_phase_rules(tmp_path):
    text = """name: "p"
input: "a" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
input: "b" input_shape { dim: 1 dim: 2 dim: 3 dim: 3 }
layer { name: "train_only" type: "Frobnicate" bottom: "a" top: "t" include { phase: TRAIN } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
layer { name: "r" type: "ReLU" bottom: "sum" top: "sum" exclude { phase: TRAIN } }
layer { name: "not_test" type: "Frobnicate" bottom: "sum" top: "x" exclude { phase: TEST } }
layer { name: "d" type: "Dropout" bottom: "sum" top: "sum" }
"""
    proto = tmp_path / "p.prototxt"
    proto.write_text(text)
    net = read_net(proto)
    assert net.inputs == [("a", (1, 2, 3, 3)), ("b", (1, 2, 3, 3))]
    assert [layer.name for layer in net.layers] == ["sum", "r", "d"]
    plan = plan_network(net, REGISTRY)
    assert plan.outputs == ["sum"]
    assert [s.value_names for s in plan.steps] == [["sum.sum"], ["sum"], [""]]
    plan2 = plan_network(net, REGISTRY, input_shapes=[(2, 2, 5, 5), (2, 2, 5, 5)])
    assert plan2.inputs == [("a", (2, 2, 5, 5)), ("b", (2, 2, 5, 5))]


def test_save_and_load_keep_caffe_names(tmp_path):
    rng = np.random.default_rng(0)
    text = """name: "s"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "drop" }
"""
    w = {"conv": [rng.standard_normal((3, 2, 3, 3)).astype(np.float32), np.zeros(3, np.float32)],
         "bn": [np.ones(3, np.float32), np.full(3, 4.0, np.float32), np.array([2.0], np.float32)]}
    proto, model = write_net(tmp_path, text, w)
    top = load_caffe(proto, model)
    assert top.output_names == ["conv"] and top.meta["caffe"]["aliases"] == {"drop": "conv"}
    x = torch.randn(1, 2, 5, 5)
    values = top.named_values(x)
    assert list(values) == ["data", "conv.conv", "conv.bn", "conv"]
    expected = torch.relu((values["conv.conv"] - 0.5) / torch.sqrt(torch.tensor(2.0 + 1e-5)))
    torch.testing.assert_close(values["conv"], expected)
    again = load_top(top.save(tmp_path / "s"))
    assert again.source == "caffe" and list(again.named_values(x)) == list(values)
    torch.testing.assert_close(again(x), top(x))

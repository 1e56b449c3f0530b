"""load_onnx on torchvision models (both exporters, opset 17/18), stable names, and refusals."""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import onnx
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from torch_tpu.errors import ModelFormatError, TorchTpuError, UnsupportedOpError
from torch_tpu.frontends.onnx_frontend import load_onnx, validate_onnx
from torch_tpu.frontends.preprocess import PreprocessConfig
from torch_tpu.graph.names import node_by_name, stable_name

MODELS = {"resnet18": torchvision.models.resnet18, "mobilenet_v3_small": torchvision.models.mobilenet_v3_small}
SLOW = pytest.mark.slow
CASES = [  # the default run covers both models and both exporters; the rest are slow
    pytest.param("resnet18", True, 18),
    pytest.param("mobilenet_v3_small", False, 17),
    pytest.param("resnet18", False, 17, marks=SLOW),
    pytest.param("resnet18", False, 18, marks=SLOW),
    pytest.param("resnet18", True, 17, marks=SLOW),
    pytest.param("mobilenet_v3_small", False, 18, marks=SLOW),
    pytest.param("mobilenet_v3_small", True, 17, marks=SLOW),
    pytest.param("mobilenet_v3_small", True, 18, marks=SLOW),
]


def export(tmp_path, name: str, dynamo: bool, opset: int) -> str:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    path = str(tmp_path / f"{name}_{'dynamo' if dynamo else 'legacy'}_{opset}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 48, 48),), path, dynamo=dynamo, opset_version=opset,
                          input_names=["input"], output_names=["logits"], verbose=False)
    return path


@pytest.mark.parametrize("name,dynamo,opset", CASES)
def test_torchvision_export_matches_onnxruntime(tmp_path, name, dynamo, opset):
    path = export(tmp_path, name, dynamo, opset)
    top = load_onnx(path)
    assert top.source == "onnx" and top.meta["source_file"] == os.path.abspath(path)
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    report = validate_onnx(top, path, (x,), tol=(1e-4, 0.99999))
    assert report["logits"].passed, report

    # Stable names: inputs, outputs, every Conv output and every weight come from the ONNX file.
    model = onnx.load(path)
    assert top.input_names == ["input"] and top.output_names == ["logits"]
    nodes = node_by_name(top.gm)
    convs = [n.output[0] for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(nodes[c].target is torch.ops.aten.convolution.default for c in convs)
    values = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.initializer}
    for n in top.gm.graph.nodes:
        if n.op in ("call_function", "get_attr"):
            name_ = stable_name(n).split("#")[0]
            assert name_ in values or name_.split(".")[0] in values or name_.rsplit(".", 1)[0] in values, name_
    inits = {i.name for i in model.graph.initializer}
    weights = [stable_name(n) for n in top.gm.graph.nodes if n.op == "get_attr"]
    assert sum(w in inits for w in weights) >= len(convs)
    # Every TOP value named after an ONNX value equals onnxruntime's value of that name.
    named = top.named_values(x)
    assert torch.allclose(named["logits"], top(x))


# -- refusals ----------------------------------------------------------------------------------------
def tiny_model(path, *, op: str = "Relu", domain: str = "", attrs: dict | None = None, inputs=("x",),
               x_shape=(1, 4), y_shape=None, consts: dict | None = None, opset: int = 18) -> str:
    inits = [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()]
    node = helper.make_node(op, list(inputs), ["y"], name="the_node", domain=domain, **(attrs or {}))
    add = helper.make_node("Add", ["y", "x"], ["z"], name="add") if op == "Relu" else None
    graph = helper.make_graph([node] + ([add] if add else []), "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("z" if add else "y", TensorProto.FLOAT,
                                                             list(y_shape or x_shape))], inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.save(model, str(path))
    return str(path)


def test_unknown_op_names_file_node_and_op(tmp_path):
    path = tiny_model(tmp_path / "m.onnx", op="FooBar")
    with pytest.raises(ModelFormatError, match=r"m\.onnx, node 'the_node', op FooBar"):
        load_onnx(path)
    path = tiny_model(tmp_path / "c.onnx", op="Foo", domain="com.example")
    with pytest.raises(UnsupportedOpError, match=r"Foo-1 at node 'the_node'.*c\.onnx"):
        load_onnx(path)
    path = tiny_model(tmp_path / "d.onnx", op="Hardmax")  # a standard op without a converter
    with pytest.raises(UnsupportedOpError, match=r"Hardmax-13 at node 'the_node'.*no converter"):
        load_onnx(path)


def test_unsupported_attribute_names_the_node(tmp_path):
    path = tiny_model(tmp_path / "r.onnx", op="Reshape", inputs=("x", "shape"), attrs={"allowzero": 1},
                      x_shape=(0, 4), y_shape=(4, 0), consts={"shape": np.array([4, 0], np.int64)})
    with pytest.raises(UnsupportedOpError, match=r"Reshape at node 'the_node'.*allowzero"):
        load_onnx(path)


def test_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file"):
        load_onnx(tmp_path / "absent.onnx")
    good = tiny_model(tmp_path / "good.onnx")
    data = open(good, "rb").read()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=r"trunc\.onnx"):
        load_onnx(tmp_path / "trunc.onnx")
    (tmp_path / "text.onnx").write_bytes(b"this is not a model\n")
    with pytest.raises(ModelFormatError, match=r"text\.onnx"):
        load_onnx(tmp_path / "text.onnx")


def test_input_shapes(tmp_path):
    path = tmp_path / "dyn.onnx"
    tiny_model(path)
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match=r"input 'x' has dynamic or unknown dims \['N', 4\]"):
        load_onnx(path)
    with pytest.raises(ModelFormatError, match=r"\['images'\] are not inputs of the model \(inputs: \['x'\]\)"):
        load_onnx(path, input_shapes={"images": [2, 4]})
    cfg = PreprocessConfig(mean=(0.5,), scale=(2.0,), pixel_format="gray")
    top = load_onnx(path, input_shapes={"x": [3, 4]}, preprocess=cfg)
    assert top.input_specs == [((3, 4), torch.float32)]
    assert PreprocessConfig.from_dict(top.meta["preprocess"]) == cfg
    x = torch.randn(3, 4)
    assert torch.equal(top(x), torch.relu(x) + x)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_model_bytes_give_torch_tpu_errors(tmp_path_factory, data):
    """Flipped, overwritten or truncated bytes: load_onnx succeeds or raises a TorchTpuError, in bounded time."""
    d = tmp_path_factory.mktemp("fuzz")
    good = open(tiny_model(d / "good.onnx", op="Conv", inputs=("x", "w"), x_shape=(1, 2, 5, 5),
                           y_shape=(1, 3, 5, 5), consts={"w": np.ones((3, 2, 3, 3), np.float32)}, attrs={"pads": [1, 1, 1, 1]}),
                "rb").read()
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(buf))))
    if cut is not None:
        buf = buf[:cut]
    path = d / "mutated.onnx"
    path.write_bytes(bytes(buf))
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    try:
        load_onnx(path)
    except TorchTpuError:
        pass
    except _Timeout:
        pytest.fail("load_onnx hung on a mutated model")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)

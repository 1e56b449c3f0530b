"""torch_tpu's ONNX converters against onnxruntime.

To keep the run short, each op family is one ONNX graph whose nodes all read the input ``x`` and
whose outputs are all compared (output ``<op>_<case>`` names the failing case).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from torch_tpu.errors import ConfigError, UnsupportedOpError
from torch_tpu.frontends.onnx_converters import added_by_torch_tpu, converter_rows, register_all
from torch_tpu.frontends.onnx_frontend import load_onnx, validate_onnx
from torch_tpu.graph.top import TopGraph


def make_model(tmp_path, x_shape: list[int], cases: list[tuple], opset: int, name: str = "model.onnx",
               pre: str | None = None) -> str:
    """One graph: for each case ``(op, attrs, consts, n_out)``, ``outs = op(x, *consts)``.

    ``consts`` are numpy arrays (None: an empty optional input); ``pre`` applies a unary op to x first.
    """
    nodes, inits, outs = [], [], []
    src = "x"
    if pre:
        nodes.append(helper.make_node(pre, ["x"], ["x_pre"]))
        src = "x_pre"
    for k, (op, attrs, consts, n_out) in enumerate(cases):
        inputs = [src]
        for i, c in enumerate(consts):
            if c is None:
                inputs.append("")
                continue
            inits.append(numpy_helper.from_array(np.asarray(c), f"c{k}_{i}"))
            inputs.append(f"c{k}_{i}")
        names = [f"{op}_{k}" if n_out == 1 else f"{op}_{k}#{j}" for j in range(n_out)]
        nodes.append(helper.make_node(op, inputs, names, name=f"node_{op}_{k}", **attrs))
        outs += names
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for out in model.graph.output:  # the checker wants typed outputs
        out.CopyFrom(inferred[out.name])
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def check_against_ort(path: str) -> TopGraph:
    """Load ``path``, check output names and every output against onnxruntime; return the TOP graph."""
    top = load_onnx(path)
    assert top.output_names == [o.name for o in onnx.load(path).graph.output]
    report = validate_onnx(top, path, top.example_inputs(), tol=(1e-5, 0.99999))
    bad = {k: m for k, m in report.items() if not m.passed}
    assert len(report) == len(top.output_names) and not bad, bad
    return top


def i64(*v: int) -> np.ndarray:
    return np.array(v, np.int64)


def f32(*v: float) -> np.ndarray:
    return np.array(v, np.float32)


REDUCE_18 = [(op, {"keepdims": keep}, [] if axes is None else [i64(*axes)], 1) for op, axes, keep in [
    ("ReduceMean", [1, 2], 1), ("ReduceMean", None, 0), ("ReduceMax", [-1], 0), ("ReduceMin", [0, 2], 1),
    ("ReduceProd", [1], 1), ("ReduceL1", [2], 0), ("ReduceL2", [1, 2], 1), ("ReduceSumSquare", [0], 1),
    ("ReduceLogSumExp", [2], 0), ("ReduceLogSum", [1, 3], 1)]]
PAD_19 = [("Pad", {"mode": mode}, [i64(*pads), f32(1.5) if mode == "constant" else None]
           + ([] if axes is None else [i64(*axes)]), 1) for mode, pads, axes in [
    ("constant", [0, 1, 2, 0, 0, 2, 1, 1], None), ("constant", [1, -1], [3]), ("reflect", [1, 2, 1, 2], [2, 3]),
    ("edge", [2, 1, 1, 0], [-2, -1]), ("wrap", [1, 1, 1, 1], [2, 3])]]
SPLIT_18 = [("Split", {"axis": 3}, [i64(1, 3, 3)], 3), ("Split", {"axis": 3, "num_outputs": 3}, [], 3),
            ("Split", {"axis": 2, "num_outputs": 2}, [], 2)]
RESIZE_19 = [("Resize", attrs, [None, f32(*scales) if scales else None] + ([i64(*sizes)] if sizes else []), 1)
             for attrs, scales, sizes in [
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, [1, 1, 2, 2], None),
    ({"mode": "nearest", "coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_ceil"},
     None, [1, 2, 7, 5]),
    ({"mode": "linear"}, [1, 1, 1.5, 2.0], None),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [1, 2, 9, 3]),
    ({"mode": "cubic"}, None, [1, 2, 8, 10]),
    ({"mode": "linear", "axes": [2, 3]}, None, [6, 9])]]


def test_reduce_pad_split_resize_opset19(tmp_path):
    """ReduceX-18, Pad-19, Split-18, Resize-19 in one graph (Abs first: ReduceLogSum needs a positive sum)."""
    path = make_model(tmp_path, [1, 2, 4, 7], REDUCE_18 + PAD_19 + SPLIT_18 + RESIZE_19, opset=19, pre="Abs")
    top = check_against_ort(path)
    assert top.output_names[15:18] == ["Split_15#0", "Split_15#1", "Split_15#2"]


def test_reduce_20_noop_and_identity_output(tmp_path):
    cases = [("ReduceMax", {"noop_with_empty_axes": 1}, [], 1), ("ReduceMin", {}, [i64(2)], 1),
             ("Squeeze", {}, [i64(1)], 1)]
    path = make_model(tmp_path, [2, 1, 3], cases, opset=20)
    top = load_onnx(path)
    x = top.example_inputs()
    assert torch.equal(top(*x)[0], x[0])  # noop: a copy of the input, named after the ONNX output
    assert top.output_names[0] == "ReduceMax_0" and top.meta["onnx_aliases"] == {"ReduceMax_0": "x"}
    check_against_ort(path)


def test_shape_ops_with_constant_inputs_and_newer_versions(tmp_path):
    cases = [
        ("Reshape", {}, [i64(0, -1, 2)], 1), ("Reshape", {"allowzero": 1}, [i64(3, 4, 2)], 1),
        ("Unsqueeze", {}, [i64(0, -1)], 1), ("Expand", {}, [i64(3, 1, 1, 1)], 1), ("Tile", {}, [i64(1, 2, 3)], 1),
        ("Slice", {}, [i64(0, 3), i64(2, -10), i64(0, 2), i64(1, -2)], 1), ("Slice", {}, [i64(1), i64(100)], 1),
        ("Flatten", {"axis": 2}, [], 1), ("Identity", {}, [], 1), ("Transpose", {"perm": [2, 0, 1]}, [], 1),
        ("Cast", {"to": TensorProto.INT32}, [], 1), ("AveragePool", {"kernel_shape": [2]}, [], 1),
    ]
    check_against_ort(make_model(tmp_path, [2, 3, 4], cases, opset=21))


@pytest.mark.parametrize("attrs,match", [
    ({"mode": "linear", "antialias": 1}, "antialias"),
    ({"mode": "cubic", "cubic_coeff_a": -0.5}, "cubic_coeff_a"),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric"}, "nearest_mode"),
])
def test_resize_refuses_inexact_modes_by_name(tmp_path, attrs, match):
    path = make_model(tmp_path, [1, 2, 4, 4], [("Resize", attrs, [None, np.array([1, 1, 2, 2], np.float32)], 1)],
                      opset=18)
    with pytest.raises(UnsupportedOpError, match=rf"node_Resize_0.*{match}"):
        load_onnx(path)


def test_registry_rows_are_new_and_registration_is_idempotent():
    first = register_all()
    assert register_all() == first
    assert len(first) == len(converter_rows()) == len(added_by_torch_tpu())
    assert ("ReduceMean", 18) in added_by_torch_tpu()


def test_registry_refuses_duplicates(monkeypatch):
    import torch_tpu.frontends.onnx_converters as conv

    monkeypatch.setattr(conv, "_registered", {})
    with pytest.raises(ConfigError, match=r"Reduce\w+-18 already registered \(by onnx2torch\)"):
        conv.register_all()


def test_support_table_is_up_to_date():
    """docs/support_onnx.md is generated from the registry: regenerate it when converters change."""
    import runpy
    from pathlib import Path

    tool = Path(__file__).resolve().parents[2] / "tools" / "gen_support_tables.py"
    main = runpy.run_path(str(tool))["main"]
    assert main(["--check", "onnx"]) == 0, "run: python tools/gen_support_tables.py"

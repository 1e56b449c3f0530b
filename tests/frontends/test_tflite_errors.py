"""TFLite importer on bad input: truncated / corrupted files, unknown ops, inconsistent tensors; the registry."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tflite.Padding import Padding

from torch_tpu.errors import ModelFormatError, TorchTpuError, UnsupportedOpError
from torch_tpu.frontends.tflite import load_tflite, read_tflite, supported_ops
from torch_tpu.frontends.tflite.importer import _build, _example_inputs, import_tflite_model
from torch_tpu.frontends.tflite.registry import ConverterRegistry
from torch_tpu.frontends.tflite.writer import TFLiteWriter


def _tiny(op: str = "CONV_2D") -> bytes:
    rng = np.random.default_rng(0)
    b = TFLiteWriter()
    x = b.input("x", (1, 4, 4, 2))
    y = b.tensor("y", (1, 4, 4, 3))
    if op == "CONV_2D":
        b.op("CONV_2D", [x, b.const("w", rng.standard_normal((3, 3, 3, 2)).astype(np.float32)),
                         b.const("b", np.zeros(3, np.float32))], [y], "Conv2DOptions", Padding=Padding.SAME,
             StrideW=1, StrideH=1, DilationWFactor=1, DilationHFactor=1)
    else:
        b.op(op, [x], [y])
    b.output(y)
    return b.build()


TINY = _tiny()


class _Timeout(Exception):
    pass


def _guarded(fn, seconds: int = 20):
    """Run ``fn`` and fail (not hang) if it takes longer than ``seconds``."""
    def alarm(signum, frame):
        raise _Timeout(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _import_or_refuse(data: bytes) -> None:
    """A damaged file either still builds and runs (the import up to the torch.export capture) or raises a
    TorchTpuError — nothing else. (The capture itself is covered by the other tests; skipping it keeps the
    property cheap, since most damaged weight bytes leave a valid model.)"""
    try:
        model = read_tflite(content=data)
        graph, _, _ = _guarded(lambda: _build(model))
        with torch.no_grad():
            _guarded(lambda: graph(*_example_inputs(model)))
    except TorchTpuError:
        return


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(cut=st.integers(min_value=0, max_value=len(TINY) - 1) | st.integers(len(TINY) - 40, len(TINY) - 1))
def test_truncated_file_is_refused(cut):
    """Refused, unless the cut only dropped trailing padding (then the content read is unchanged)."""
    try:
        model = read_tflite(content=TINY[:cut])
    except ModelFormatError:
        return
    assert _content(model) == _content(read_tflite(content=TINY))


def _content(m):
    tensors = [(t.name, t.shape, t.type, None if t.data is None else t.data.tobytes(), t.quant) for t in m.tensors]
    return tensors, [(o.op, o.inputs, o.outputs) for o in m.operators], m.inputs, m.outputs, m.description


def test_truncation_inside_the_content_is_refused():
    for cut in (0, 7, 100, len(TINY) // 2, len(TINY) - 5):
        with pytest.raises(ModelFormatError):
            read_tflite(content=TINY[:cut])


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(st.integers(min_value=0, max_value=len(TINY) - 1), st.integers(0, 255)),
                      min_size=1, max_size=6))
def test_corrupted_file_imports_or_raises_model_error(edits):
    data = bytearray(TINY)
    for pos, value in edits:
        data[pos] = value
    _import_or_refuse(bytes(data))


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read"):
        load_tflite(tmp_path / "nope.tflite")
    onnx_like = tmp_path / "model.tflite"
    onnx_like.write_bytes(b"\x08\x07\x12\x04onnx" + bytes(64))
    with pytest.raises(ModelFormatError, match="TFL3"):
        load_tflite(onnx_like)


def test_unknown_op_names_file_operator_and_op(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(_tiny("CUMSUM"))
    with pytest.raises(UnsupportedOpError) as err:
        load_tflite(path)
    e = err.value
    assert e.op == "CUMSUM" and e.location == str(path) and e.name == "operator #0 -> y"
    assert "CUMSUM" in str(e) and "operator #0 -> y" in str(e) and str(path) in str(e)


def test_inconsistent_shapes_name_the_operator(tmp_path):
    b = TFLiteWriter()
    x = b.input("x", (1, 4, 4, 2))
    y = b.tensor("y", (1, 5, 4, 2))  # ADD cannot make this shape
    b.op("ADD", [x, x], [y], "AddOptions", FusedActivationFunction=0)
    b.output(y)
    with pytest.raises(ModelFormatError) as err:
        import_tflite_model(read_tflite(content=b.build()))
    assert err.value.op == "ADD" and "operator #0 -> y" in str(err.value) and "[1, 5, 4, 2]" in str(err.value)


def test_bad_buffer_size_is_refused():
    b = TFLiteWriter()
    x = b.input("x", (1, 2))
    c = b.tensor("c", (1, 3), "float32", np.zeros(2, np.float32))  # 2 values for 3 elements
    y = b.tensor("y", (1, 3))
    b.op("ADD", [x, c], [y], "AddOptions", FusedActivationFunction=0)
    b.output(y)
    with pytest.raises(ModelFormatError, match="needs 12 bytes, its buffer holds 8"):
        read_tflite(content=b.build())


def test_registry_refuses_duplicates_and_lists_ops():
    reg = ConverterRegistry()
    reg.register("RELU", lambda ctx: None, "a")
    with pytest.raises(TorchTpuError, match="RELU registered twice"):
        reg.register("RELU", lambda ctx: None, "b")
    ops = supported_ops()
    required = ["CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "DIV",
                "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "RESHAPE", "SQUEEZE", "SOFTMAX", "CONCATENATION", "PAD",
                "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "LOGISTIC", "TANH", "RELU", "RELU6", "HARD_SWISH",
                "PRELU", "TRANSPOSE", "STRIDED_SLICE", "DEQUANTIZE", "QUANTIZE", "DEPTH_TO_SPACE"]
    assert set(required) <= set(ops)
    assert ops["CONV_2D"] == "conv" and ops["MEAN"] == "reduce"

"""TFLite importer, pre-quantized int8 models imported in float, vs LiteRT's int8 execution.

A model is first written in float and run by LiteRT to get each activation's range; the same model is
then written in int8 (asymmetric int8 activations, per-channel symmetric int8 weights, int32 bias with
``scale = s_in * s_w``), as the TFLite converter would. The TOP graph (weights dequantized at import)
runs on the dequantized int8 input; its output must agree with LiteRT's int8 output, dequantized:
cosine >= 0.99 and the mean error within one quantization step of the output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tflite.Padding import Padding

from torch_tpu.frontends.tflite import load_tflite
from torch_tpu.frontends.tflite.writer import TFLiteWriter

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

SAME, VALID = Padding.SAME, Padding.VALID


class Plan:
    """Writes tensors in float (``ranges is None``) or int8 with ranges measured on the float model."""

    def __init__(self, ranges: dict[str, tuple[float, float]] | None):
        self.b = TFLiteWriter()
        self.ranges = ranges
        self.scales: dict[str, np.ndarray] = {}

    @property
    def int8(self) -> bool:
        return self.ranges is not None

    def act_quant(self, name: str):
        lo, hi = self.ranges[name]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = max(hi - lo, 1e-6) / 255.0
        zp = int(np.clip(round(-128 - lo / scale), -128, 127))
        self.scales[name] = np.array([scale])
        return [scale], [zp], 0

    def act(self, name: str, shape, fixed=None) -> int:
        if not self.int8:
            return self.b.tensor(name, shape)
        if fixed is not None:
            self.scales[name] = np.array([fixed[0]])
            return self.b.tensor(name, shape, "int8", quant=([fixed[0]], [fixed[1]], 0))
        return self.b.tensor(name, shape, "int8", quant=self.act_quant(name))

    def input(self, name: str, shape) -> int:
        t = self.act(name, shape)
        self.b.inputs.append(t)
        return t

    def weight(self, name: str, w: np.ndarray, axis: int) -> int:
        if not self.int8:
            return self.b.const(name, w.astype(np.float32))
        other = tuple(d for d in range(w.ndim) if d != axis)
        scale = np.maximum(np.abs(w).max(axis=other), 1e-8) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        self.scales[name] = scale
        return self.b.const(name, q, quant=(scale.tolist(), [0] * scale.size, axis))

    def bias(self, name: str, bias: np.ndarray, x: str, w: str) -> int:
        if not self.int8:
            return self.b.const(name, bias.astype(np.float32))
        scale = self.scales[x][0] * self.scales[w]
        q = np.round(bias / scale).astype(np.int32)
        return self.b.const(name, q, quant=(scale.tolist(), [0] * scale.size, 0))


def convnet(plan: Plan, rng: np.random.Generator) -> None:
    """int8 in/out: CONV_2D (SAME, stride 2, RELU6), DEPTHWISE, ADD, AVERAGE_POOL, MAX_POOL, RESHAPE,
    FULLY_CONNECTED, SOFTMAX."""
    b = plan.b
    x = plan.input("x", (1, 12, 12, 3))
    w1, b1 = rng.standard_normal((8, 3, 3, 3)) * 0.5, rng.standard_normal(8) * 0.1
    c1 = plan.act("conv1", (1, 6, 6, 8))
    b.op("CONV_2D", [x, plan.weight("conv1/w", w1, 0), plan.bias("conv1/b", b1, "x", "conv1/w")], [c1],
         "Conv2DOptions", Padding=SAME, StrideW=2, StrideH=2, DilationWFactor=1, DilationHFactor=1,
         FusedActivationFunction=3)
    w2, b2 = rng.standard_normal((1, 3, 3, 8)) * 0.5, rng.standard_normal(8) * 0.1
    d1 = plan.act("dw1", (1, 6, 6, 8))
    b.op("DEPTHWISE_CONV_2D", [c1, plan.weight("dw1/w", w2, 3), plan.bias("dw1/b", b2, "conv1", "dw1/w")], [d1],
         "DepthwiseConv2DOptions", Padding=SAME, StrideW=1, StrideH=1, DepthMultiplier=1, DilationWFactor=1,
         DilationHFactor=1, FusedActivationFunction=0)
    a = plan.act("add", (1, 6, 6, 8))
    b.op("ADD", [c1, d1], [a], "AddOptions", FusedActivationFunction=1)
    p = plan.act("avgpool", (1, 3, 3, 8)) if not plan.int8 else plan.act("avgpool", (1, 3, 3, 8),
                                                                           fixed=_same(plan, "add"))
    b.op("AVERAGE_POOL_2D", [a], [p], "Pool2DOptions", Padding=VALID, StrideW=2, StrideH=2, FilterWidth=2,
         FilterHeight=2)
    m = plan.act("maxpool", (1, 3, 3, 8)) if not plan.int8 else plan.act("maxpool", (1, 3, 3, 8),
                                                                          fixed=_same(plan, "add"))
    b.op("MAX_POOL_2D", [a], [m], "Pool2DOptions", Padding=SAME, StrideW=2, StrideH=2, FilterWidth=3,
         FilterHeight=3)
    s = plan.act("sum", (1, 3, 3, 8))
    b.op("ADD", [p, m], [s], "AddOptions", FusedActivationFunction=0)
    flat = plan.act("flat", (1, 72), fixed=_same(plan, "sum") if plan.int8 else None)
    b.op("RESHAPE", [s, b.const("flat/shape", np.array([1, 72], np.int32))], [flat])
    wf, bf = rng.standard_normal((10, 72)) * 0.2, rng.standard_normal(10) * 0.1
    fc = plan.act("fc", (1, 10))
    b.op("FULLY_CONNECTED", [flat, plan.weight("fc/w", wf, 0), plan.bias("fc/b", bf, "flat", "fc/w")], [fc],
         "FullyConnectedOptions", FusedActivationFunction=0)
    sm = plan.act("softmax", (1, 10), fixed=(1.0 / 256.0, -128) if plan.int8 else None)
    b.op("SOFTMAX", [fc], [sm], "SoftmaxOptions", Beta=1.0)
    b.output(sm)
    b.output(a)


def _same(plan: Plan, name: str):
    t = next(t for t in plan.b.tensors if t.name == name)
    return t.quant[0][0], t.quant[1][0]


def float_io(plan: Plan, rng: np.random.Generator) -> None:
    """float in/out around int8: QUANTIZE, CONV_2D, LOGISTIC, MEAN, DEQUANTIZE."""
    b = plan.b
    x = b.input("x", (1, 8, 8, 4))
    if plan.int8:
        xq = plan.act("x_q", (1, 8, 8, 4))
        b.op("QUANTIZE", [x], [xq])
        xs = "x_q"
    else:
        xq, xs = x, "x"
    w, bias = rng.standard_normal((6, 3, 3, 4)) * 0.4, rng.standard_normal(6) * 0.1
    c = plan.act("conv", (1, 8, 8, 6))
    b.op("CONV_2D", [xq, plan.weight("conv/w", w, 0), plan.bias("conv/b", bias, xs, "conv/w")], [c],
         "Conv2DOptions", Padding=SAME, StrideW=1, StrideH=1, DilationWFactor=1, DilationHFactor=1,
         FusedActivationFunction=0)
    sg = plan.act("sigmoid", (1, 8, 8, 6), fixed=(1.0 / 256.0, -128) if plan.int8 else None)
    b.op("LOGISTIC", [c], [sg])
    mean = plan.act("mean", (1, 6))
    b.op("MEAN", [sg, b.const("axes", np.array([1, 2], np.int32))], [mean], "ReducerOptions", KeepDims=False)
    if plan.int8:
        out = b.tensor("mean_f", (1, 6))
        b.op("DEQUANTIZE", [mean], [out])
    else:
        out = mean
    b.output(out)


def _ranges(build, seed: int, inputs: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    plan = Plan(None)
    build(plan, np.random.default_rng(seed))
    it = Interpreter(model_content=plan.b.build(), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x)
    it.invoke()
    out = {}
    for d in it.get_tensor_details():
        try:
            v = it.get_tensor(d["index"])
        except ValueError:
            continue
        if v.dtype == np.float32 and v.size:
            out[d["name"]] = (float(v.min()), float(v.max()))
    out["x_q"] = out["x"]
    return out


def _quantize(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def run_litert(data: bytes, x: np.ndarray):
    """Run a one-input model in LiteRT; an int8 input is quantized first. Returns (interpreter, the float
    input the TOP graph must see: the dequantized int8 input, or ``x`` itself)."""
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    (din,) = it.get_input_details()
    if din["dtype"] == np.int8:
        s, zp = din["quantization"]
        xq = _quantize(x, s, zp)
        it.set_tensor(din["index"], xq)
        x_top = (xq.astype(np.float32) - zp) * s
    else:
        it.set_tensor(din["index"], x)
        x_top = x
    it.invoke()
    return it, x_top


def litert_outputs(it, got, plan):
    """Yield (detail, our output, LiteRT's output dequantized, one quantization step) per output."""
    for d, g in zip(it.get_output_details(), got):
        r = it.get_tensor(d["index"])
        if r.dtype == np.int8:
            s, zp = d["quantization"]
            r = (r.astype(np.float32) - zp) * s
        else:
            s = next(t.quant[0][0] for t in plan.b.tensors if t.name == "mean")
        yield d, g, r, s


@pytest.mark.parametrize("build", [convnet, float_io], ids=lambda f: f.__name__)
def test_int8_model_matches_litert(build, tmp_path):
    rng = np.random.default_rng(3)
    shape = (1, 12, 12, 3) if build is convnet else (1, 8, 8, 4)
    x = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    plan = Plan(_ranges(build, 7, [x]))
    build(plan, np.random.default_rng(7))
    data = plan.b.build()
    path = tmp_path / "int8.tflite"
    path.write_bytes(data)

    it, x_top = run_litert(data, x)

    top = load_tflite(path)
    got = top.run_flat(torch.from_numpy(x_top))
    for d, g, r, s in litert_outputs(it, got, plan):
        g = g.numpy()
        assert g.shape == r.shape
        assert _cos(g, r) >= 0.99, d["name"]
        assert float(np.abs(g - r).mean()) <= s, d["name"]

    # the activations' quantization is recorded by stable name, weights are float in the graph
    q = top.meta["tflite_quant"]
    names = {n.meta["stable_name"] for n in top.gm.graph.nodes if n.op != "output"}
    assert set(q) <= names
    for t in plan.b.tensors:
        if t.quant is not None and t.data is None and t.name in names:
            assert q[t.name] == {"scale": [pytest.approx(t.quant[0][0])], "zero_point": [t.quant[1][0]],
                                 "dtype": "int8"}
    weights = [n for n in top.gm.graph.nodes if n.op == "get_attr"]
    assert weights and all(n.meta["val"].dtype == torch.float32 for n in weights)
    if build is float_io:  # QUANTIZE of the input is an identity: its scale lands on the input's name
        assert q["x"]["dtype"] == "int8" and top.meta["tflite_aliases"]["x_q"] == "x"
        assert top.meta["tflite_aliases"]["mean_f"] == "mean"

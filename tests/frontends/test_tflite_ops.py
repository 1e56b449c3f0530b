"""TFLite importer, float models: small models built with TFLiteWriter, TOP graph vs LiteRT.

Every model is checked at its outputs (1e-5 relative to the output's largest magnitude) and at every
intermediate tensor LiteRT keeps whose name is a stable name of the TOP graph.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tflite.Padding import Padding

from torch_tpu.frontends.tflite import load_tflite
from torch_tpu.frontends.tflite.writer import TFLiteWriter
from torch_tpu.graph.top import load_top

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

SAME, VALID = Padding.SAME, Padding.VALID
RELU, RELU6 = 1, 3


def _rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def run_litert(data: bytes, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Outputs and every kept tensor by name."""
    it = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], x)
    it.invoke()
    outs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    named = {}
    for d in it.get_tensor_details():
        try:
            named[d["name"]] = it.get_tensor(d["index"])
        except ValueError:
            continue
    return outs, named


PREPROCESS = {"mean": [0.0, 0.0, 0.0], "scale": [1.0, 1.0, 1.0]}
_IMPORTED: dict[str, object] = {}


def imported(builder, tmp_path) -> tuple:
    """(top, data, inputs) for a model builder, imported once per test session (imports cost ~1-2 s)."""
    key = builder.__name__
    if key not in _IMPORTED:
        data, inputs = builder(np.random.default_rng(0))
        path = tmp_path / f"{key}.tflite"
        path.write_bytes(data)
        _IMPORTED[key] = (load_tflite(path, preprocess=PREPROCESS), data, inputs)
    return _IMPORTED[key]


def check_against_litert(top, data: bytes, inputs: list[np.ndarray], min_named: int = 1):
    assert top.source == "tflite"
    ref, ref_named = run_litert(data, inputs)
    got = top.run_flat(*[torch.from_numpy(x) for x in inputs])
    assert len(got) == len(ref)
    for r, g in zip(ref, got):
        assert tuple(g.shape) == r.shape
        scale = max(float(np.abs(r).max()), 1e-6)
        assert float(np.abs(g.numpy() - r).max()) <= 1e-5 * scale
    named = top.named_values(*[torch.from_numpy(x) for x in inputs])
    compared = 0
    for name, value in named.items():
        r = ref_named.get(name)
        if r is None or r.dtype != np.float32 or r.shape != tuple(value.shape):
            continue
        scale = max(float(np.abs(r).max()), 1e-6)
        assert float(np.abs(value.numpy() - r).max()) <= 1e-5 * scale, name
        compared += 1
    assert compared >= min_named


def conv_pool_model(rng) -> tuple[bytes, list[np.ndarray]]:
    """CONV_2D (asymmetric SAME, stride 2, RELU6), DEPTHWISE (multiplier 2, dilation 2), ADD+RELU,
    MAX_POOL/AVERAGE_POOL (asymmetric SAME), MEAN, RESHAPE, FULLY_CONNECTED, SOFTMAX."""
    b = TFLiteWriter()
    x = b.input("image", (1, 11, 10, 3))
    c1 = b.tensor("conv1", (1, 6, 5, 4))
    b.op("CONV_2D", [x, b.const("conv1/w", _rand(rng, 4, 3, 3, 3)), b.const("conv1/b", _rand(rng, 4))], [c1],
         "Conv2DOptions", Padding=SAME, StrideW=2, StrideH=2, DilationWFactor=1, DilationHFactor=1,
         FusedActivationFunction=RELU6)
    d1 = b.tensor("dw1", (1, 6, 5, 8))
    b.op("DEPTHWISE_CONV_2D", [c1, b.const("dw1/w", _rand(rng, 1, 3, 3, 8)), b.const("dw1/b", _rand(rng, 8))],
         [d1], "DepthwiseConv2DOptions", Padding=SAME, StrideW=1, StrideH=1, DepthMultiplier=2,
         DilationWFactor=2, DilationHFactor=2)
    c2 = b.tensor("conv2", (1, 6, 5, 8))
    b.op("CONV_2D", [c1, b.const("conv2/w", _rand(rng, 8, 1, 1, 4)), b.const("conv2/b", _rand(rng, 8))], [c2],
         "Conv2DOptions", Padding=VALID, StrideW=1, StrideH=1, DilationWFactor=1, DilationHFactor=1)
    a = b.tensor("add", (1, 6, 5, 8))
    b.op("ADD", [d1, c2], [a], "AddOptions", FusedActivationFunction=RELU)
    mp = b.tensor("maxpool", (1, 3, 3, 8))
    b.op("MAX_POOL_2D", [a], [mp], "Pool2DOptions", Padding=SAME, StrideW=2, StrideH=2, FilterWidth=3,
         FilterHeight=2)
    ap = b.tensor("avgpool", (1, 3, 3, 8))
    b.op("AVERAGE_POOL_2D", [a], [ap], "Pool2DOptions", Padding=SAME, StrideW=2, StrideH=2, FilterWidth=2,
         FilterHeight=3)
    ap2 = b.tensor("avgpool_sym", (1, 6, 5, 8))
    b.op("AVERAGE_POOL_2D", [a], [ap2], "Pool2DOptions", Padding=SAME, StrideW=1, StrideH=1, FilterWidth=3,
         FilterHeight=3)
    mean = b.tensor("mean", (1, 1, 1, 8))
    b.op("MEAN", [ap2, b.const("mean/axes", np.array([1, 2], np.int32))], [mean], "ReducerOptions", KeepDims=True)
    s = b.tensor("sum", (1, 3, 3, 8))
    b.op("ADD", [mp, ap], [s], "AddOptions", FusedActivationFunction=0)
    flat = b.tensor("flat", (1, 72))
    b.op("RESHAPE", [s, b.const("flat/shape", np.array([1, 72], np.int32))], [flat])
    fc = b.tensor("fc", (1, 10))
    b.op("FULLY_CONNECTED", [flat, b.const("fc/w", _rand(rng, 10, 72, scale=0.2)), b.const("fc/b", _rand(rng, 10))],
         [fc], "FullyConnectedOptions", FusedActivationFunction=0)
    sm = b.tensor("softmax", (1, 10))
    b.op("SOFTMAX", [fc], [sm], "SoftmaxOptions", Beta=0.5)
    b.output(sm)
    b.output(mean)
    return b.build(), [_rand(rng, 1, 11, 10, 3)]


def upsample_model(rng) -> tuple[bytes, list[np.ndarray]]:
    """TRANSPOSE_CONV (SAME, stride 2, bias), the RESIZE modes, CONCATENATION (axis -1)."""
    b = TFLiteWriter()
    x = b.input("x", (1, 5, 4, 3))
    tc = b.tensor("tconv", (1, 10, 8, 6))
    b.op("TRANSPOSE_CONV", [b.const("tconv/shape", np.array([1, 10, 8, 6], np.int32)),
                            b.const("tconv/w", _rand(rng, 6, 3, 3, 3)), x, b.const("tconv/b", _rand(rng, 6))],
         [tc], "TransposeConvOptions", Padding=SAME, StrideW=2, StrideH=2)
    tv = b.tensor("tconv_valid", (1, 11, 9, 2))
    b.op("TRANSPOSE_CONV", [b.const("tconv_valid/shape", np.array([1, 11, 9, 2], np.int32)),
                            b.const("tconv_valid/w", _rand(rng, 2, 3, 3, 3)), x], [tv], "TransposeConvOptions",
         Padding=VALID, StrideW=2, StrideH=2)
    size = b.const("size", np.array([10, 8], np.int32))
    outs = []
    for name, op, opts, align, half in [("bilinear_half", "RESIZE_BILINEAR", "ResizeBilinearOptions", False, True),
                                        ("bilinear_align", "RESIZE_BILINEAR", "ResizeBilinearOptions", True, False),
                                        ("bilinear_legacy", "RESIZE_BILINEAR", "ResizeBilinearOptions", False, False),
                                        ("nearest", "RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions", False,
                                         False),
                                        ("nearest_half", "RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions",
                                         False, True),
                                        ("nearest_align", "RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighborOptions",
                                         True, False)]:
        t = b.tensor(name, (1, 10, 8, 3))
        b.op(op, [x, size], [t], opts, AlignCorners=align, HalfPixelCenters=half)
        outs.append(t)
    cat = b.tensor("concat", (1, 10, 8, 24))
    b.op("CONCATENATION", [tc] + outs, [cat], "ConcatenationOptions", Axis=-1, FusedActivationFunction=0)
    b.output(cat)
    b.output(tv)
    return b.build(), [_rand(rng, 1, 5, 4, 3)]


def activation_model(rng) -> tuple[bytes, list[np.ndarray]]:
    """SUB/MUL/DIV (constant operands, broadcasting), LOGISTIC, TANH, RELU, RELU6, HARD_SWISH, PRELU,
    LEAKY_RELU."""
    b = TFLiteWriter()
    x = b.input("x", (1, 4, 5, 6))
    y = b.input("y", (1, 1, 5, 6))
    sub = b.tensor("sub", (1, 4, 5, 6))
    b.op("SUB", [x, y], [sub], "SubOptions", FusedActivationFunction=0)
    mul = b.tensor("mul", (1, 4, 5, 6))
    b.op("MUL", [sub, b.const("mul/c", _rand(rng, 6))], [mul], "MulOptions", FusedActivationFunction=RELU6)
    div = b.tensor("div", (1, 4, 5, 6))
    b.op("DIV", [x, b.const("div/c", np.abs(_rand(rng, 1, 1, 1, 6)) + 0.5)], [div], "DivOptions",
         FusedActivationFunction=0)
    chain, cur = [], div
    for name, op, opts, fields in [("sigmoid", "LOGISTIC", None, {}), ("tanh", "TANH", None, {}),
                                   ("relu", "RELU", None, {}), ("relu6", "RELU6", None, {}),
                                   ("hswish", "HARD_SWISH", None, {}),
                                   ("leaky", "LEAKY_RELU", "LeakyReluOptions", {"Alpha": 0.2})]:
        t = b.tensor(name, (1, 4, 5, 6))
        b.op(op, [sub if name in ("hswish", "leaky") else cur], [t], opts, **fields)
        chain.append(t)
        cur = t
    pr = b.tensor("prelu", (1, 4, 5, 6))
    b.op("PRELU", [mul, b.const("prelu/alpha", _rand(rng, 1, 1, 6))], [pr])
    total = pr
    for k, t in enumerate(chain):
        s = b.tensor(f"acc{k}", (1, 4, 5, 6))
        b.op("ADD", [total, t], [s], "AddOptions", FusedActivationFunction=0)
        total = s
    b.output(total)
    return b.build(), [_rand(rng, 1, 4, 5, 6, scale=3.0), _rand(rng, 1, 1, 5, 6)]


def shape_model(rng) -> tuple[bytes, list[np.ndarray]]:
    """TRANSPOSE, STRIDED_SLICE (masks, shrink), PAD, SQUEEZE, DEQUANTIZE of float16 weights, DEPTH_TO_SPACE,
    an operator on constants only (folded)."""
    b = TFLiteWriter()
    x = b.input("x", (1, 6, 7, 8))
    w16 = b.const("conv/w_f16", _rand(rng, 4, 1, 1, 8).astype(np.float16))
    w = b.tensor("conv/w", (4, 1, 1, 8))
    b.op("DEQUANTIZE", [w16], [w])
    c = b.tensor("conv", (1, 6, 7, 4))
    b.op("CONV_2D", [x, w, b.const("conv/b", _rand(rng, 4))], [c], "Conv2DOptions", Padding=SAME, StrideW=1,
         StrideH=1, DilationWFactor=1, DilationHFactor=1)
    d2s = b.tensor("d2s", (1, 12, 14, 1))
    b.op("DEPTH_TO_SPACE", [c], [d2s], "DepthToSpaceOptions", BlockSize=2)
    tr = b.tensor("transpose", (1, 8, 6, 7))
    b.op("TRANSPOSE", [x, b.const("perm", np.array([0, 3, 1, 2], np.int32))], [tr])
    sl = b.tensor("slice", (8, 2, 5))
    b.op("STRIDED_SLICE", [tr, b.const("sl/b", np.array([0, 0, 1, 1], np.int32)),
                           b.const("sl/e", np.array([1, 0, 5, -1], np.int32)),
                           b.const("sl/s", np.array([1, 1, 2, 1], np.int32))], [sl], "StridedSliceOptions",
         BeginMask=0, EndMask=2, ShrinkAxisMask=1)
    pad = b.tensor("pad", (10, 3, 8))
    b.op("PAD", [sl, b.const("pads", np.array([[1, 1], [0, 1], [2, 1]], np.int32))], [pad])
    sq = b.tensor("squeeze", (12, 14))
    b.op("SQUEEZE", [d2s], [sq], "SqueezeOptions")
    gain_t = b.tensor("gain", (1, 1, 1, 8))  # a TRANSPOSE of a constant: folded at import
    b.op("TRANSPOSE", [b.const("gain/raw", _rand(rng, 8, 1, 1, 1)), b.const("gain/perm", np.array([1, 2, 3, 0],
                                                                                                  np.int32))], [gain_t])
    scaled = b.tensor("scaled", (1, 6, 7, 8))
    b.op("MUL", [x, gain_t], [scaled], "MulOptions", FusedActivationFunction=0)
    b.output(pad)
    b.output(sq)
    b.output(scaled)
    return b.build(), [_rand(rng, 1, 6, 7, 8)]


@pytest.mark.parametrize("builder", [conv_pool_model, upsample_model, activation_model, shape_model],
                         ids=lambda f: f.__name__)
def test_float_model_matches_litert(builder, tmp_path):
    top, data, inputs = imported(builder, tmp_path)
    check_against_litert(top, data, inputs, min_named=5)
    assert top.meta["tflite_quant"] == {}


def test_stable_names_and_layout(tmp_path):
    top, _, _ = imported(conv_pool_model, tmp_path)
    assert top.input_names == ["image"]
    assert top.output_names == ["softmax", "mean"]
    by_name = {n.meta["stable_name"]: n for n in top.gm.graph.nodes if n.op != "output"}
    assert {"conv1", "dw1", "conv2", "add", "maxpool", "avgpool", "fc", "conv1/w", "conv1/b"} <= set(by_name)
    assert tuple(by_name["conv1/w"].meta["val"].shape) == (4, 3, 3, 3)  # OHWI -> OIHW
    # the conv runs in NCHW between explicit permutes; its output node is the NHWC permute back
    conv1 = by_name["conv1"]
    assert conv1.target is torch.ops.aten.permute.default and list(conv1.args[1]) == [0, 2, 3, 1]
    # asymmetric SAME padding (11 x 10, k=3, s=2: rows 1 before / 1 after, columns 0 / 1) is explicit
    assert any(n.target is torch.ops.aten.constant_pad_nd.default for n in top.gm.graph.nodes)
    assert top.meta["preprocess"] == PREPROCESS
    assert all("val" in n.meta for n in top.gm.graph.nodes if n.op != "output")


def test_saved_top_keeps_names(tmp_path):
    top, _, inputs = imported(shape_model, tmp_path)
    again = load_top(top.save(tmp_path / "top"))
    assert again.source == "tflite" and again.input_names == ["x"]
    assert again.output_names == ["pad", "squeeze", "scaled"]
    assert again.meta["preprocess"] == PREPROCESS and again.meta["tflite_quant"] == {}
    x = torch.from_numpy(inputs[0])
    for a, b in zip(top.run_flat(x), again.run_flat(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def misc_model(rng) -> tuple[bytes, list[np.ndarray]]:
    """SPLIT, SPLIT_V, PACK, UNPACK, SLICE, SPACE_TO_DEPTH, EXPAND_DIMS, PADV2, MAXIMUM, MINIMUM,
    SQUARED_DIFFERENCE, POW, EXP, LOG, SQRT, RSQRT, ABS, NEG, SQUARE, ELU, GELU, RELU_N1_TO_1, RELU_0_TO_1,
    LOG_SOFTMAX,
    SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD."""
    b = TFLiteWriter()
    x = b.input("x", (1, 4, 6, 4))
    halves = [b.tensor(f"split{k}", (1, 4, 3, 4)) for k in range(2)]
    b.op("SPLIT", [b.const("split/axis", np.array(2, np.int32)), x], halves, "SplitOptions", NumSplits=2)
    parts = [b.tensor(f"splitv{k}", (1, 4, 6, n)) for k, n in enumerate((1, 3))]
    b.op("SPLIT_V", [x, b.const("splitv/sizes", np.array([1, -1], np.int32)),
                     b.const("splitv/axis", np.array(-1, np.int32))], parts, "SplitVOptions", NumSplits=2)
    mx, mn, sqd, pw = (b.tensor(n, (1, 4, 3, 4)) for n in ("maximum", "minimum", "sqdiff", "pow"))
    b.op("MAXIMUM", halves, [mx])
    b.op("MINIMUM", halves, [mn])
    b.op("SQUARED_DIFFERENCE", halves, [sqd])
    ab = b.tensor("abs", (1, 4, 3, 4))
    b.op("ABS", [halves[0]], [ab])
    b.op("POW", [ab, b.const("pow/e", np.full((1, 1, 1, 4), 1.5, np.float32))], [pw])
    unary = {}
    for name, op, opts, fields, src in [("exp", "EXP", None, {}, mn), ("log", "LOG", None, {}, pw),
                                        ("sqrt", "SQRT", None, {}, sqd), ("rsqrt", "RSQRT", None, {}, pw),
                                        ("neg", "NEG", None, {}, mx), ("square", "SQUARE", None, {}, mx),
                                        ("elu", "ELU", None, {}, mn), ("gelu", "GELU", "GeluOptions",
                                                                       {"Approximate": False}, mx),
                                        ("gelu_tanh", "GELU", "GeluOptions", {"Approximate": True}, mn),
                                        ("relu_n1", "RELU_N1_TO_1", None, {}, mx),
                                        ("relu01", "RELU_0_TO_1", None, {}, mn),
                                        ("logsm", "LOG_SOFTMAX", "LogSoftmaxOptions", {}, mn)]:
        unary[name] = b.tensor(name, (1, 4, 3, 4))
        b.op(op, [src], [unary[name]], opts, **fields)
    stacked = b.tensor("pack", (12, 1, 4, 3, 4))
    b.op("PACK", list(unary.values()), [stacked], "PackOptions", ValuesCount=12, Axis=0)
    rows = [b.tensor(f"unpack{k}", (12, 1, 3, 4)) for k in range(4)]
    b.op("UNPACK", [stacked], rows, "UnpackOptions", Num=4, Axis=2)
    red = []
    for name, op in [("sum", "SUM"), ("rmax", "REDUCE_MAX"), ("rmin", "REDUCE_MIN"), ("rprod", "REDUCE_PROD")]:
        t = b.tensor(name, (12, 1, 1, 4))
        b.op(op, [rows[len(red)], b.const(f"{name}/axes", np.array([-2], np.int32))], [t], "ReducerOptions",
             KeepDims=True)
        red.append(t)
    sl = b.tensor("slice", (1, 2, 6, 3))
    b.op("SLICE", [parts[1], b.const("slice/begin", np.array([0, 1, 0, 0], np.int32)),
                   b.const("slice/size", np.array([-1, 2, -1, 3], np.int32))], [sl])
    s2d = b.tensor("s2d", (1, 1, 3, 12))
    b.op("SPACE_TO_DEPTH", [sl], [s2d], "SpaceToDepthOptions", BlockSize=2)
    ed = b.tensor("expand", (1, 1, 3, 1, 12))
    b.op("EXPAND_DIMS", [s2d, b.const("expand/axis", np.array([3], np.int32))], [ed])
    pv = b.tensor("padv2", (1, 2, 3, 2, 12))
    b.op("PADV2", [ed, b.const("padv2/p", np.array([[0, 0], [1, 0], [0, 0], [0, 1], [0, 0]], np.int32)),
                   b.const("padv2/v", np.array([-2.5], np.float32))], [pv])
    for t in red + [pv, parts[0]]:
        b.output(t)
    return b.build(), [_rand(rng, 1, 4, 6, 4)]


def test_misc_ops_match_litert(tmp_path):
    top, data, inputs = imported(misc_model, tmp_path)
    check_against_litert(top, data, inputs, min_named=20)


def test_mediapipe_transpose_conv_bias_equals_litert_transpose_conv(tmp_path):
    """CUSTOM:Convolution2DTransposeBias (which LiteRT lacks) against LiteRT's TRANSPOSE_CONV + bias."""
    rng = np.random.default_rng(4)
    w, bias, x_np = _rand(rng, 5, 4, 4, 3), _rand(rng, 5), _rand(rng, 1, 6, 7, 3)
    ref = TFLiteWriter()
    x = ref.input("x", (1, 6, 7, 3))
    y = ref.tensor("y", (1, 12, 14, 5))
    ref.op("TRANSPOSE_CONV", [ref.const("shape", np.array([1, 12, 14, 5], np.int32)), ref.const("w", w), x,
                              ref.const("b", bias)], [y], "TransposeConvOptions", Padding=SAME, StrideW=2, StrideH=2)
    ref.output(y)
    (want,), _ = run_litert(ref.build(), [x_np])
    custom = TFLiteWriter()
    x = custom.input("x", (1, 6, 7, 3))
    y = custom.tensor("y", (1, 12, 14, 5))
    options = np.array([1, 2, 2], np.int32).tobytes()  # {padding SAME, stride_w, stride_h}
    custom.op("CUSTOM:Convolution2DTransposeBias", [x, custom.const("w", w), custom.const("b", bias)], [y],
              custom_options=options)
    custom.output(y)
    path = tmp_path / "custom.tflite"
    path.write_bytes(custom.build())
    got = load_tflite(path).run_flat(torch.from_numpy(x_np))[0].numpy()
    assert float(np.abs(got - want).max()) <= 1e-5 * float(np.abs(want).max())

"""The float-output INT8 MACs end to end: the lowering picks ``tpu.*_int8_f32`` for a conv / linear / matmul
read only in float (no int8 requant of the graph output), codegen runs them as ``conv2d`` / ``matmul`` (int32)
-> ``cast`` -> ``eltwise mul`` by the per-channel f32 scale [-> f32 ``relu`` / ``clip``], bit-identical to the
TPU graph's reference ops on the C and reference kernel sets."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import torch_tpu
from torch_tpu.cmodel import isa, run_program
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.codegen import codegen
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.int8_driver import float_value_names

from test_codegen_int8 import KERNELS, OpGraph, of, q8


def f32_scales(n: int) -> torch.Tensor:
    return torch.empty(n).uniform_(1e-4, 3e-3)


BOUNDS = {"none": (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0), "clip": (-0.75, 1.5)}


@pytest.mark.parametrize("x_zp,bounds", [(0, "none"), (-128, "relu"), (5, "relu6"), (-3, "clip")])
def test_conv2d_int8_f32_codegen_is_bit_exact(x_zp, bounds):
    torch.manual_seed(1)
    g = OpGraph()
    x = g.input("x", q8(2, 6, 9, 11))
    # biases beyond 2^24: the int32 -> f32 conversion rounds before the product (the reference's order)
    b = g.const(torch.randint(-2 ** 28, 2 ** 28, (8,), dtype=torch.int32), "b")
    y = g.op("conv2d_int8_f32", x, g.const(q8(8, 6, 3, 3), "w"), b, [1, 2], [1, 1, 0, 2], [1, 1], 1,
             g.const(f32_scales(8), "scale"), x_zp, *BOUNDS[bounds])
    prog = g.check(y)
    conv = of(prog, isa.Conv2d)
    assert conv and all(c.out.dtype.label == "int32" and not c.multiplier and c.pad_value == x_zp for c in conv)
    assert not of(prog, isa.Requant)
    (mul,) = {(i.b.shape, i.out.dtype.label) for i in of(prog, isa.Eltwise)}
    assert mul == ((1, 8, 1, 1), "f32")                                 # the per-channel scale tile
    acts = {i.op for i in of(prog, isa.Activation)}
    assert acts == {"none": set(), "relu": {"relu"}}.get(bounds, {"clip"})


@pytest.mark.parametrize("rows", [1, 15, 128])
def test_linear_int8_f32_codegen_is_bit_exact(rows):
    """Both linear forms (one row: 1x1 conv; more: matmul with the scale per output column)."""
    torch.manual_seed(2)
    g = OpGraph()
    x = g.input("x", q8(rows, 40))
    y = g.op("linear_int8_f32", x, g.const(q8(24, 40), "w"), g.const(torch.randint(-2 ** 27, 2 ** 27, (24,),
             dtype=torch.int32), "b"), g.const(f32_scales(24), "scale"), 3, 0.0, None)
    prog = g.check(y)
    mac = [i for i in prog.instructions if isinstance(i, (isa.Conv2d, isa.MatMul))]
    assert all(i.out.dtype.label == "int32" and not i.multiplier for i in mac)
    assert all(c.out.dtype.label == "f32" for c in of(prog, isa.Cast))


def test_linear_int8_f32_one_scale_rides_on_the_cast():
    g = OpGraph()
    x = g.input("x", q8(4, 16))
    prog = g.check(g.op("linear_int8_f32", x, g.const(q8(8, 16), "w"), None, g.const(torch.full((8,), 3e-3), "s"),
                        0, None, None))
    assert not of(prog, isa.Eltwise) and {c.scale for c in of(prog, isa.Cast)} == {float(torch.tensor(3e-3))}


@pytest.mark.parametrize("a_zp,b_zp", [(0, 0), (5, -3)])
def test_matmul_int8_f32_codegen_is_bit_exact(a_zp, b_zp):
    g = OpGraph()
    a, b = g.input("a", q8(2, 3, 6, 20)), g.input("b", q8(2, 3, 20, 7))
    prog = g.check(g.op("matmul_int8_f32", a, b, 1.25e-4, a_zp, b_zp, -0.5, 0.5))
    assert not of(prog, isa.Requant) and all(not m.multiplier for m in of(prog, isa.MatMul))


class Net(nn.Module):
    """conv -> relu -> conv (fused relu: the graph output) and a pooled linear head (graph output too)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        z = torch.relu(self.c2(y))
        return z, self.fc(y.mean((2, 3)))


def test_graph_output_layers_are_not_requantized():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    top = torch_tpu.transform(model, (x,))
    table = torch_tpu.calibrate(top, [x, torch.randn_like(x)], method="max", tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    ops = {n.meta["stable_name"]: n.target._schema.name.split("::")[-1] for n in tpu.graph.nodes
           if n.op == "call_function"}
    # c2 + relu (fused, its output the graph output) and fc: float output, no requant, no dequantize
    assert ops["relu_1"] == "conv2d_int8_f32" and ops["fc"] == "linear_int8_f32" and ops["relu"] == "conv2d_int8"
    assert "dequantize_int8" not in ops.values()
    relu_1 = next(n for n in tpu.graph.nodes if n.meta.get("stable_name") == "relu_1")
    assert relu_1.args[-2:] == (0.0, None)
    assert {"relu_1", "c2", "fc"} <= float_value_names(top.gm, "bm1684x")
    # the fc's scale is s_x * s_w[o] rounded to f32: the output is the int32 accumulator times it
    with torch.no_grad():
        out = tpu(x)
        eager = model(x)
    for o, e in zip(out, eager):
        assert torch.nn.functional.cosine_similarity(o.flatten(), e.flatten(), 0) > 0.999
    prog = codegen(tpu, "bm1684x")
    for k in KERNELS:
        got = run_program(prog, {prog.inputs[0].name: x}, kernels=k)
        assert torch.equal(got["output0"], out[0]) and torch.equal(got["output1"], out[1]), k


def test_float_consumer_gets_the_f32_form_and_int8_consumer_does_not():
    """A linear read by softmax (no int8 rule: f32) -> linear_int8_f32 feeding softmax without a dequantize; a
    conv read by another conv stays int8; the qtable's F32 layer reads the f32 value too."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)
            self.fc = nn.Linear(4, 6)

        def forward(self, x):
            return torch.softmax(self.fc(self.c2(self.c1(x)).mean((2, 3))), -1)

    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 4)
    top = torch_tpu.transform(M().eval(), (x,))
    table = torch_tpu.calibrate(top, [x], method="max", tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    ops = [n.target._schema.name.split("::")[-1] for n in tpu.graph.nodes if n.op == "call_function"]
    assert ops.count("conv2d_int8") == 2 and "linear_int8_f32" in ops and "dequantize_int8" not in ops
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table, qtable={"fc": "F32"})
    ops = [n.target._schema.name.split("::")[-1] for n in tpu.graph.nodes if n.op == "call_function"]
    assert "conv2d_int8_f32" not in ops          # c2's consumer (the mean) is int8

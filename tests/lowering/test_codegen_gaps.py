"""Codegen gaps of issue 3 closed: int8 concat inputs written in place, the int8 average pool and conv tiled
along W, and reductions of any size and any pattern of dims (chunks of the reduction combined in local memory;
more than 4 runs of reduced / kept dims transposed through DDR first).

Every Program is checked against the TPU graph: outputs, and every op on the Program's own probed inputs (integers
bit for bit; f32 within 1e-6, sums and means within the K-term summation bound; bf16 within one rounding step),
C and reference kernels. Tiling is forced on ``tiny`` (8 lanes x 2 KiB); a few shapes run on bm1684x."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _codegen_local import check_layers
from test_codegen_wtiling import OpGraph, assert_w_tiled, of
import torch_tpu
from torch_tpu.cmodel import isa, run_program
from torch_tpu.fixed_point import quantize_multiplier
from torch_tpu.lowering.codegen import codegen, ddr_plan
from torch_tpu.lowering.codegen.ddr_plan import op_name, stable_name
from torch_tpu.lowering.driver import lower
from torch_tpu.targets import PRESETS


@pytest.fixture
def tiny(monkeypatch) -> str:
    """bm1684x with 8 lanes of 2 KiB (align 16), registered for the test only."""
    t = dataclasses.replace(PRESETS["bm1684x"], name="tiny", lanes=8, local_mem_bytes=2048, align_bytes=16)
    monkeypatch.setitem(PRESETS, "tiny", t)
    return "tiny"


def check_sums(g: OpGraph, target: str, kernels=("c", "reference")):
    """Codegen ``g`` (its output already set) and check every op on the Program's probes (``check_layers``: a
    float sum or mean within the K-term summation bound, which an f32 sum of thousands of terms in another order
    needs: ``OpGraph.check``'s 1e-6 of the result is not a bound for a sum with cancellation), the outputs
    equal to their probes."""
    gm = g.b.finish()
    prog = codegen(gm, target)
    for k in kernels:
        check_layers(gm, prog, g.feeds, g.precision, k)
        res = run_program(prog, {io.name: t.to(io.dtype.torch) for io, t in zip(prog.inputs, g.feeds)}, kernels=k,
                          debug=True)
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        assert torch.equal(res.outputs["output0"], res.tensors[stable_name(out)])
    return prog


def scalar(real: float) -> tuple[int, int]:
    m, s = quantize_multiplier(real)
    return int(m), int(s)


# ---- int8 concat in place ----------------------------------------------------------------------------------

class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expands concatenated on C."""

    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.e1 = nn.Conv2d(squeeze, expand, 1)
        self.e3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


class SqueezeLike(nn.Module):
    """A small squeezenet1_1 (stem, ceil-mode max pool, three fire modules, 1x1 head, global average)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2)
        self.f1, self.f2, self.f3 = Fire(8, 4, 8), Fire(16, 4, 8), Fire(16, 6, 12)
        self.head = nn.Conv2d(24, 10, 1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.f2(self.f1(x)), 3, 2, ceil_mode=True)
        return F.adaptive_avg_pool2d(F.relu(self.head(self.f3(x))), 1).flatten(1)


def _copies(prog) -> int:
    return sum(isinstance(i, isa.DmaCopy) for i in prog.instructions)


def test_int8_fire_concats_written_in_place(monkeypatch):
    """Calibration gives each concat's inputs the concat's scale, so every int8 concat is a pure copy: the expand
    convs store straight into their blocks (dma_copy 6 -> 0) and the Program stays bit-exact, op by op."""
    torch.manual_seed(0)
    model, x = SqueezeLike().eval(), torch.randn(1, 3, 32, 32)
    top = torch_tpu.transform(model, (x,))
    table = torch_tpu.calibrate(top, [x, torch.randn_like(x)], method="max", tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    cats = [n for n in tpu.graph.nodes if n.op == "call_function" and op_name(n) == "concat_int8"]
    assert len(cats) == 3
    prog, plan = codegen(tpu, "bm1684x", return_plan=True)
    assert all(plan.in_place(a, c) for c in cats for a in c.args[0])
    assert _copies(prog) == 0 and not [i for i in prog.instructions if i.layer in {stable_name(c) for c in cats}]
    with torch.no_grad():
        ref = tpu(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    for k in ("c", "reference"):
        assert torch.equal(run_program(prog, {prog.inputs[0].name: x}, kernels=k)["output0"], ref), k
    check_layers(tpu, prog, [x], "f32")  # int8 ops exactly, the final dequantize within 1e-6
    with monkeypatch.context() as m:
        m.setattr(ddr_plan, "IN_PLACE_OPS", ("concat",))  # the plan before: int8 concats copy every input
        old_prog, old_plan = codegen(tpu, "bm1684x", return_plan=True)
    assert _copies(old_prog) == 6 and plan.size <= old_plan.size
    dmas = [sum(i.ENGINE == "dma" for i in p.instructions) for p in (old_prog, prog)]
    assert dmas[1] == dmas[0] - 6


def test_int8_concat_rescaled_input_stays_an_op():
    """Of two computed inputs, the one with the output's scale and zero point is written in place; the one that
    needs a rescale (and the graph input) is requantized / copied by the concat itself."""
    torch.manual_seed(1)
    g = OpGraph("int8")
    a, b, c = g.input("a", 1, 3, 4, 5), g.input("b", 1, 2, 4, 5), g.input("c", 1, 1, 4, 5)
    ra = g.op("requant_int8", a, *scalar(0.5), 0, 4, layer="ra")
    rb = g.op("requant_int8", b, *scalar(0.7), 3, -2, layer="rb")
    ms, ss = zip(scalar(1.0), scalar(0.8), scalar(1.0))
    y = g.op("concat_int8", [ra, rb, c], 1, list(ms), list(ss), [4, -2, 4], 4, layer="cat")
    y = g.op("requant_int8", y, *scalar(0.9), 4, 0, layer="after")   # keep the concat an intermediate
    g.b.graph.output(y)
    gm = g.b.finish()
    prog, plan = codegen(gm, "bm1684x", return_plan=True)
    cat = next(n for n in gm.graph.nodes if stable_name(n) == "cat")
    assert plan.in_place(ra, cat) and not plan.in_place(rb, cat)
    cat_insts = [i for i in prog.instructions if i.layer == "cat"]
    assert sum(isinstance(i, isa.Requant) for i in cat_insts) >= 1 and sum(isinstance(i, isa.DmaCopy)
                                                                          for i in cat_insts) == 1
    with torch.no_grad():
        ref = gm(*g.feeds)
    for k in ("c", "reference"):
        out = run_program(prog, {io.name: t for io, t in zip(prog.inputs, g.feeds)}, kernels=k)["output0"]
        assert torch.equal(out, ref), k
    check_layers(gm, prog, g.feeds, "int8")


# ---- int8 average pool along W ------------------------------------------------------------------------------

AVG_CASES = {  # name: (x shape, kernel, stride, pad [t, b, l, r], x_zp, out_zp)
    "plain": ((1, 8, 2, 1501), (2, 3), (1, 2), (1, 0, 1, 1), 0, 0),
    "zero_points": ((2, 3, 3, 1203), (3, 3), (1, 1), (1, 1, 1, 1), -128, 5),
    "stride3_asym": ((1, 5, 2, 907), (2, 4), (2, 3), (0, 1, 2, 1), 17, -9),
}


@pytest.mark.parametrize("case", sorted(AVG_CASES))
def test_int8_avg_pool_w_tiles_exact(tiny, case):
    """Zero points need an int32 copy of the input and int32 sums per tile (4x the int8 bytes): long rows are cut
    along W, padded only at the image's borders, bit-exact with count_include_pad's fixed divisor."""
    xs, k, stride, pad, x_zp, out_zp = AVG_CASES[case]
    torch.manual_seed(2)
    g = OpGraph("int8")
    x = g.input("x", *xs)
    y = g.op("avg_pool2d_int8", x, list(k), list(stride), list(pad), *scalar(0.9 / (k[0] * k[1])), x_zp, out_zp,
             layer="pool")
    prog = g.check(y, tiny)
    pools = of(prog, isa.Pool2d)
    assert_w_tiled(pools, tuple(y.meta["val"].shape), k[1], stride[1], 1, pad[2], pad[3])
    assert all(p.x.dtype.label == ("int8" if (x_zp, out_zp) == (0, 0) else "int32") for p in pools)


def test_int8_avg_pool_long_row_on_bm1684x():
    """1x8x2x20000 with zero points: the int32 tiles of one full row (x - x_zp and the sums) exceed a lane."""
    torch.manual_seed(3)
    g = OpGraph("int8")
    x = g.input("x", 1, 8, 2, 20000)
    y = g.op("avg_pool2d_int8", x, [2, 3], [1, 2], [1, 0, 1, 1], *scalar(1 / 6), -7, 3, layer="pool")
    prog = g.check(y, "bm1684x")
    assert_w_tiled(of(prog, isa.Pool2d), (1, 8, 2, 10000), 3, 2, 1, 1, 1)


INT8_CONV_CASES = {  # name: (x shape, cout, kernel, stride, pad [t, b, l, r], dilation, groups, x_zp, out_zp)
    "odd_w": ((1, 4, 3, 1201), 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, -128, 5),
    "stride2_asym": ((2, 3, 4, 1029), 5, (2, 3), (2, 2), (0, 1, 2, 1), (1, 1), 1, 17, -3),
    "dilation2": ((1, 4, 3, 799), 4, (3, 3), (1, 1), (2, 2, 2, 0), (2, 2), 1, 0, 0),
    "depthwise": ((1, 8, 5, 845), 8, (3, 5), (1, 2), (1, 1, 0, 2), (1, 1), 8, -20, 7),
}


@pytest.mark.parametrize("case", sorted(INT8_CONV_CASES))
def test_int8_conv_w_tiles_exact(tiny, case):
    """The int8 conv through the same W tiling: border tiles pad with x_zp (``pad_value``), inner tiles read only
    real columns, so the folded bias ``bias - x_zp * sum(w)`` is exact everywhere."""
    xs, cout, k, stride, pad, dil, groups, x_zp, out_zp = INT8_CONV_CASES[case]
    torch.manual_seed(8)
    g = OpGraph("int8")
    x = g.input("x", *xs)
    w = g.b.add_const(torch.randint(-128, 128, (cout, xs[1] // groups, *k), dtype=torch.int8), "w")
    b = g.b.add_const(torch.randint(-999, 999, (cout,), dtype=torch.int32), "b")
    m, s = quantize_multiplier(torch.empty(cout, dtype=torch.float64).uniform_(1e-3, 4e-3))
    y = g.op("conv2d_int8", x, w, b, list(stride), list(pad), list(dil), groups, g.b.add_const(m, "m"),
             g.b.add_const(s, "s"), x_zp, out_zp, -128, 127, layer="conv")
    prog = g.check(y, tiny)
    convs = of(prog, isa.Conv2d)
    assert_w_tiled(convs, tuple(y.meta["val"].shape), k[1], stride[1], dil[1], pad[2], pad[3])
    assert all(c.pad_value == x_zp for c in convs)


# ---- reductions --------------------------------------------------------------------------------------------

RED_CASES = {  # name: (shape, dims); on tiny every one but the small >4-run ones is cut into chunks
    "over_n_4runs": ((40, 6, 30, 5), [0, 2]),
    "5runs": ((2, 3, 4, 5, 6), [1, 3]),
    "6runs": ((2, 3, 2, 3, 2, 3), [1, 3, 5]),
    "6runs_chunked": ((3, 5, 2, 40, 3, 7), [1, 3, 5]),
    "long_rows": ((3, 7001), [1]),
    "all": ((7001,), [0]),
    "all_spread": ((24000,), [0]),   # 8 | 24000: the row is spread over the 8 lanes, then chunked
    "over_n_2runs": ((600, 21), [0]),
}


CHUNKED = ("over_n_4runs", "long_rows", "all", "all_spread", "6runs_chunked", "over_n_2runs")


@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("case", sorted(RED_CASES))
def test_reduce_any_size_any_dims(tiny, case, op, precision):
    shape, dims = RED_CASES[case]
    torch.manual_seed(4)
    g = OpGraph(precision)
    x = g.input("x", *shape)
    g.b.graph.output(g.op(f"reduce_{op}", x, dims, case == "5runs", layer="red"))
    prog = check_sums(g, tiny, kernels=("c", "reference") if precision == "f32" else ("c",))
    reduces = of(prog, isa.Reduce)
    if case.startswith(("5runs", "6runs")):
        copies = of(prog, isa.DmaCopy)
        assert copies and all(c.layer == "red" for c in copies)   # the transposition through the DDR scratch
    if case == "all_spread":
        assert all(r.x.shape[:2] == (1, 8) and r.axes == (1, 3) for r in reduces)
    if case in CHUNKED:
        assert len(reduces) > 1   # chunks of the reduction ...
        combine = [e for e in of(prog, isa.Eltwise) if e.op != "div"]
        assert combine and all(e.op == {"sum": "add", "mean": "add"}.get(op, op) for e in combine)  # ... combined
        if precision == "bf16" and op in ("sum", "mean"):
            assert all(r.out.dtype.label == "f32" for r in reduces)   # f32 partials, one rounding at the end


def test_reduce_over_n_on_bm1684x():
    """sum over dim 0 of a 2048 x 2048 f32 matrix (16 MiB, all of local memory): the reduced dim on the lanes,
    cut into balanced blocks of lane groups whose partial sums are added."""
    torch.manual_seed(5)
    g = OpGraph("f32")
    x = g.input("x", 2048, 2048)
    g.b.graph.output(g.op("reduce_sum", x, [0], False, layer="red"))
    prog = check_sums(g, "bm1684x", kernels=("c",))
    reduces = of(prog, isa.Reduce)
    assert len(reduces) == 3 and sum(r.x.shape[1] for r in reduces) == 2048
    assert all(r.x.shape[1] % 64 == 0 for r in reduces)


@pytest.mark.parametrize("case", sorted(RED_CASES))
def test_reduce_sum_int8_any_size_any_dims(tiny, case):
    """int32 partial sums added exactly, then the zero-point term and the requant: bit-exact."""
    shape, dims = RED_CASES[case]
    torch.manual_seed(6)
    g = OpGraph("int8")
    x = g.input("x", *shape)
    n = 1
    for d in dims:
        n *= shape[d]
    y = g.op("reduce_sum_int8", x, dims, False, *scalar(0.5 / n ** 0.5), -5, 3, layer="red")
    prog = g.check(y, tiny)
    reduces = of(prog, isa.Reduce)
    assert all(r.out.dtype.label == "int32" for r in reduces)
    if case in CHUNKED:
        assert len(reduces) > 1


def test_reduce_any_mask_chunked(tiny):
    """reduce_any (a uint8 max) over a mask too big for a lane: chunk maxima combined by eltwise max."""
    torch.manual_seed(7)
    g = OpGraph("f32")
    x = g.input("x", 5, 3001)
    y = g.op("reduce_any", g.op("gt_const", x, 3.2, layer="gt"), [1], False, layer="any")
    prog = g.check(y, tiny)
    assert len([r for r in of(prog, isa.Reduce) if r.layer == "any"]) > 1

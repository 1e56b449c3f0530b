"""Codegen of the INT8 TPU ops: every op alone (zero points, per-channel multipliers, saturation bounds,
tiling with halos) and whole int8 models, run on the cmodel and compared EXACTLY with the TPU graph's
reference ops (C and reference kernel sets); intermediates by stable name; eager by cosine."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_tpu
from torch_tpu.cmodel import Program, isa, run_program
from torch_tpu.cmodel.operands import DType, LocalTensor
from torch_tpu.cmodel.timing import instruction_cost
from torch_tpu.errors import UnsupportedOpError
from torch_tpu.fixed_point import quantize_multiplier
from torch_tpu.graph.meta import run_named
from torch_tpu.graph.names import STABLE_NAME
from torch_tpu.lowering.builder import GraphBuilder
from torch_tpu.lowering.codegen import codegen
from torch_tpu.lowering.driver import lower
from torch_tpu.targets import get_target

KERNELS = ("c", "reference")


class OpGraph:
    """A hand-built TPU graph of int8 ops (exact control of zero points, multipliers and bounds)."""

    def __init__(self):
        self.b = GraphBuilder()
        self.feeds: list[torch.Tensor] = []

    def input(self, name: str, t: torch.Tensor):
        node = self.b.graph.placeholder(name)
        with self.b.mode:
            node.meta["val"] = torch.empty(tuple(t.shape), dtype=t.dtype)
        node.meta[STABLE_NAME] = name
        self.feeds.append(t)
        return node

    def const(self, t: torch.Tensor, name: str):
        return self.b.add_const(t, name)

    def op(self, name: str, *args):
        return self.b.emit(name, args, None, name, None)

    def check(self, *outs, kernels=KERNELS):
        """Codegen, run each kernel set and compare every output bit for bit; returns the Program."""
        self.b.graph.output(outs[0] if len(outs) == 1 else tuple(outs))
        gm = self.b.finish()
        with torch.no_grad():
            ref = gm(*self.feeds)
        ref = ref if isinstance(ref, tuple) else (ref,)
        prog = codegen(gm, "bm1684x")
        for k in kernels:
            got = run_program(prog, {io.name: t for io, t in zip(prog.inputs, self.feeds)}, kernels=k)
            for i, r in enumerate(ref):
                g = got[f"output{i}"]
                assert g.dtype == r.dtype and torch.equal(g, r), (k, i, int((g.long() - r.long()).abs().max()),
                                                                   int((g != r).sum()))
        return prog


def q8(*shape) -> torch.Tensor:
    return torch.randint(-128, 128, shape, dtype=torch.int8)


def multipliers(n: int, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (multiplier int32, shift int64) for real factors uniform in [lo, hi)."""
    return quantize_multiplier(torch.empty(n, dtype=torch.float64).uniform_(lo, hi))


def scalar(real: float) -> tuple[int, int]:
    m, s = quantize_multiplier(real)
    return int(m), int(s)


def of(prog, cls) -> list:
    return [i for i in prog.instructions if isinstance(i, cls)]


# ---- MAC ops ----------------------------------------------------------------------------------------------

CONV_CASES = {  # name: (x shape, cout, kernel, stride, pad, dilation, groups, x_zp, out_zp, qmin, qmax, bias)
    "sym": ((2, 6, 9, 11), 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 0, 0, -128, 127, True),
    "asym_pads": ((1, 6, 9, 11), 8, (3, 3), (2, 1), (2, 0, 1, 2), (1, 1), 1, -128, 5, -128, 127, True),
    "relu_zp": ((1, 4, 7, 7), 10, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, 17, -128, -128, 127, False),
    "relu6": ((1, 8, 8, 6), 8, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 8, -3, -20, -20, 90, True),
    "fused_relu": ((1, 5, 6, 6), 7, (1, 3), (1, 1), (0, 0, 1, 1), (1, 1), 1, 0, -4, -4, 127, True),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv2d_int8(case):
    xs, cout, k, stride, pad, dil, groups, x_zp, out_zp, qmin, qmax, has_bias = CONV_CASES[case]
    g = OpGraph()
    x = g.input("x", q8(*xs))
    w = g.const(q8(cout, xs[1] // groups, *k), "w")
    b = g.const(torch.randint(-3000, 3000, (cout,), dtype=torch.int32), "b") if has_bias else None
    m, s = multipliers(cout, 1e-3, 6e-3)
    y = g.op("conv2d_int8", x, w, b, list(stride), list(pad), list(dil), groups, g.const(m, "m"), g.const(s, "s"),
             x_zp, out_zp, qmin, qmax)
    prog = g.check(y)
    conv = of(prog, isa.Conv2d)
    # one instruction per slice: padded with x_zp (no border map), the requant and the bounds fused
    assert all(c.x.dtype.label == "int8" and c.out.dtype.label == "int8" and c.pad_value == x_zp for c in conv)
    assert all((c.zero_point, c.qmin, c.qmax, c.act) == (out_zp, qmin, qmax, "none") for c in conv)
    assert all(len(c.multiplier) == cout for c in conv)
    assert [type(i) for i in prog.instructions if i.ENGINE == "compute"] == [isa.Conv2d] * len(conv)


def test_conv2d_int8_tiled_with_halos_and_zero_points():
    """1x4x384x384: input and output exceed a lane -> H slices with halos, each padded with x_zp only where it
    touches the image border."""
    g = OpGraph()
    x = g.input("x", q8(1, 4, 384, 384))
    m, s = multipliers(16, 1e-3, 4e-3)
    y = g.op("conv2d_int8", x, g.const(q8(16, 4, 3, 3), "w"), g.const(torch.randint(-999, 999, (16,),
             dtype=torch.int32), "b"), [1, 1], [1, 1, 1, 1], [1, 1], 1, g.const(m, "m"), g.const(s, "s"), -128, 3,
             3, 127)
    prog = g.check(y, kernels=("c",))
    conv = of(prog, isa.Conv2d)
    assert len(conv) > 2 and sum(c.out.shape[2] for c in conv) == 384 and all(c.pad_value == -128 for c in conv)
    assert conv[0].pad[:2] == (1, 0) and conv[-1].pad[:2] == (0, 1)
    assert all(c.pad[:2] == (0, 0) and c.x.shape[2] == c.out.shape[2] + 2 for c in conv[1:-1])
    assert conv[0].x.addr != conv[1].x.addr                                            # double-buffered


@pytest.mark.parametrize("x_zp,out_zp,bounds", [(0, 0, (-128, 127)), (-128, 9, (9, 127)), (6, -2, (-50, 60))])
def test_linear_int8(x_zp, out_zp, bounds):
    g = OpGraph()
    x = g.input("x", q8(3, 5, 40))
    m, s = multipliers(24, 2e-3, 8e-3)
    y = g.op("linear_int8", x, g.const(q8(24, 40), "w"), g.const(torch.randint(-5000, 5000, (24,),
             dtype=torch.int32), "b"), g.const(m, "m"), g.const(s, "s"), x_zp, out_zp, *bounds)
    prog = g.check(y)
    (mm,) = of(prog, isa.MatMul)          # 15 rows: a matmul with the requant per output column, nothing else
    assert mm.a.shape == (1, 15, 1, 40) and mm.b.shape == (1, 40, 1, 24) and len(mm.multiplier) == 24
    assert (mm.zero_point, mm.qmin, mm.qmax) == (out_zp, *bounds)
    assert [i for i in prog.instructions if i.ENGINE == "compute"] == [mm]


@pytest.mark.parametrize("rows", [1, 128])
def test_linear_int8_forms(rows):
    """One row: a 1x1 conv (features on the lanes); 128 rows: a matmul viewed (2, 64, 1, K), sliced along N,
    charged ~16x less than the 1x1 conv form (whose output row of one element pads to the alignment)."""
    g = OpGraph()
    x = g.input("x", q8(rows, 96))
    m, s = multipliers(80, 2e-3, 8e-3)
    prog = g.check(g.op("linear_int8", x, g.const(q8(80, 96), "w"), None, g.const(m, "m"), g.const(s, "s"), 3, -2,
                        -128, 127))
    target = get_target("bm1684x")
    mac = [i for i in prog.instructions if isinstance(i, (isa.Conv2d, isa.MatMul))]
    if rows == 1:
        assert len(mac) == 1 and isinstance(mac[0], isa.Conv2d) and mac[0].x.shape == (1, 96, 1, 1)
        return
    assert all(isinstance(i, isa.MatMul) and i.a.shape[1:] == (64, 1, 96) for i in mac)
    conv_form = isa.Conv2d(id=0, x=LocalTensor(0, 0, (rows, 96, 1, 1), DType.INT8),
                           w=LocalTensor(0, 0, (1, 80, 1, 96), DType.INT8),
                           out=LocalTensor(0, 0, (rows, 80, 1, 1), DType.INT8), kernel=(1, 1),
                           multiplier=(1,), shift=(0,))
    mm_cycles = sum(instruction_cost(i, target).cycles for i in mac)
    assert instruction_cost(conv_form, target).cycles > 12 * mm_cycles


@pytest.mark.parametrize("a_zp,b_zp,out_zp", [(0, 0, 0), (5, -3, 7), (0, 4, -1), (-7, 0, 0)])
def test_matmul_int8(a_zp, b_zp, out_zp):
    g = OpGraph()
    a, b = g.input("a", q8(2, 3, 6, 20)), g.input("b", q8(2, 3, 20, 7))
    y = g.op("matmul_int8", a, b, *scalar(4e-3), a_zp, b_zp, out_zp, -100 if out_zp else -128, 127)
    prog = g.check(y)
    fused = not a_zp and not b_zp            # no zero-point terms: the requant rides in the matmul's epilogue
    assert bool(of(prog, isa.Requant)) != fused and all(bool(i.multiplier) == fused for i in of(prog, isa.MatMul))


def test_int8_conv_is_charged_at_the_int8_mac_rate():
    """3x3 conv 64->64 on 56x56: 20 + 3136 * 576 / 256 MACs per lane = 7076 cycles (bf16: 14132, f32: 112916,
    cmodel README), and its fused requant an epilogue of 3136 / 64 (the int8 element rate) = 49 cycles, not a
    Requant instruction of 20 + 3136 / 16 (int32 input: the f32 element rate) = 216."""
    g = OpGraph()
    x = g.input("x", q8(1, 64, 56, 56))
    m, s = multipliers(64, 1e-3, 4e-3)
    g.b.graph.output(g.op("conv2d_int8", x, g.const(q8(64, 64, 3, 3), "w"), None, [1, 1], [1, 1, 1, 1], [1, 1], 1,
                          g.const(m, "m"), g.const(s, "s")))
    prog = codegen(g.b.finish(), "bm1684x")
    target = get_target("bm1684x")
    (conv,) = of(prog, isa.Conv2d)
    assert not of(prog, isa.Requant) and instruction_cost(conv, target).cycles == 7076 + 49


# ---- pools and reductions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("x_zp,out_zp", [(0, 0), (-128, 0), (0, 11), (20, -6)])
def test_avg_pool2d_int8(x_zp, out_zp):
    g = OpGraph()
    x = g.input("x", q8(2, 6, 9, 10))
    y1 = g.op("avg_pool2d_int8", x, [3, 3], [2, 2], [1, 1, 1, 1], *scalar(1 / 9 * 0.9), x_zp, out_zp)
    y2 = g.op("avg_pool2d_int8", x, [2, 3], [1, 2], [0, 1, 1, 0], *scalar(1 / 6), x_zp, out_zp)
    g.check(y1, y2)


def test_pools_tiled_with_halos():
    """1x3x640x384 int8: a channel is 240 KiB, so both pools (avg: + int32 copy and sums) are cut in H slices."""
    g = OpGraph()
    x = g.input("x", q8(1, 3, 640, 384))
    y1 = g.op("avg_pool2d_int8", x, [3, 3], [1, 1], [1, 1, 1, 1], *scalar(1 / 9), -128, 4)
    y2 = g.op("max_pool2d_int8", x, [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], False)
    prog = g.check(y1, y2, kernels=("c",))
    pools = of(prog, isa.Pool2d)
    assert sum(1 for p in pools if p.mode == "avg") > 2 and sum(1 for p in pools if p.mode == "max") > 1


@pytest.mark.parametrize("dims,keepdim,x_zp", [([2, 3], True, 0), ([2, 3], False, -128), ([3], False, 9),
                                               ([1, 2, 3], True, -5)])
def test_reduce_sum_int8(dims, keepdim, x_zp):
    g = OpGraph()
    x = g.input("x", q8(2, 5, 6, 7))
    n = 1
    for d in dims:
        n *= (2, 5, 6, 7)[d]
    y = g.op("reduce_sum_int8", x, dims, keepdim, *scalar(0.5 / n), x_zp, 3)
    g.check(y)


# ---- element-wise ops -------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["add_int8", "sub_int8"])
@pytest.mark.parametrize("zps,bshape", [((0, 0, 0), (2, 8, 12, 10)), ((-128, 5, -3), (2, 8, 1, 1)),
                                        ((7, -128, 0), (1, 8, 12, 10))])
def test_add_sub_int8(op, zps, bshape):
    g = OpGraph()
    a, b = g.input("a", q8(2, 8, 12, 10)), g.input("b", q8(*bshape))
    ma, sa = scalar(0.7 * 256)
    mb, sb = scalar(1.3 * 256)
    y = g.op(op, a, b, ma, sa, mb, sb, *scalar(2.0 ** -8), *zps, -128 if zps[2] == 0 else zps[2], 127)
    g.check(y)


def test_common_scale_keeps_the_rescaled_sum_in_int32():
    """The add's common scale leaves the qadd's int32 accumulator room for both rescaled inputs together."""
    from torch_tpu.lowering.rules.int8_eltwise import common_scale_bits
    assert common_scale_bits(1.0, 0.5) == 8
    for ra, rb in [(2.0 ** 14, 2.0 ** 14), (2.0 ** 15, 1.0), (3000.0, 29000.0)]:
        k = common_scale_bits(ra, rb)
        assert 256 * (ra + rb) * 2.0 ** k < 2 ** 31 <= 256 * (ra + rb) * 2.0 ** (k + 1)
    assert common_scale_bits(2.0 ** 22, 2.0 ** 22) == 0      # cannot fit at all: codegen refuses the add


def test_add_int8_tiled():
    """1x64x320x320 int8: three 100 KiB tiles per lane exceed it -> H slices, one qadd each, nothing else."""
    g = OpGraph()
    a, b = g.input("a", q8(1, 64, 320, 320)), g.input("b", q8(1, 64, 320, 320))
    y = g.op("add_int8", a, b, *scalar(256.0), *scalar(200.0), *scalar(2.0 ** -8), -128, 3, -128, -128, 127)
    prog = g.check(y, kernels=("c",))
    assert len(of(prog, isa.QAdd)) > 2
    assert {i.OPCODE for i in prog.instructions} == {"dma_load", "qadd", "dma_store"}


@pytest.mark.parametrize("zps,bshape", [((0, 0, 0), (2, 4, 5, 6)), ((-128, -128, 4), (2, 4, 1, 1)),
                                        ((3, 0, -128), (1, 1, 5, 6))])
def test_mul_int8(zps, bshape):
    g = OpGraph()
    a, b = g.input("a", q8(2, 4, 5, 6)), g.input("b", q8(*bshape))
    y = g.op("mul_int8", a, b, *scalar(1 / 180), *zps, -128, 100)
    g.check(y)


@pytest.mark.parametrize("dim", [1, 2])
def test_concat_int8(dim):
    g = OpGraph()
    shapes = [(2, 3, 4, 5), (2, 2, 4, 5), (2, 4, 4, 5)] if dim == 1 else [(2, 3, 4, 5), (2, 3, 2, 5), (2, 3, 1, 5)]
    xs = [g.input(f"x{i}", q8(*s)) for i, s in enumerate(shapes)]
    ident = scalar(1.0)
    ms, ss = zip(ident, scalar(0.6), scalar(1.7))
    y = g.op("concat_int8", xs, dim, list(ms), list(ss), [4, 0, -128], 4)
    prog = g.check(y)
    assert len(of(prog, isa.DmaCopy)) == 1 and len(of(prog, isa.Requant)) == 2  # the identity part is a copy


@pytest.mark.parametrize("x_zp,out_zp,bounds", [(0, 0, (-128, 127)), (-128, 3, (3, 127)), (12, -7, (-60, 70))])
def test_requant_int8(x_zp, out_zp, bounds):
    g = OpGraph()
    x = g.input("x", q8(3, 7, 9))
    g.check(g.op("requant_int8", x, *scalar(0.37), x_zp, out_zp, *bounds))


def test_lut_int8():
    g = OpGraph()
    x = g.input("x", q8(2, 3, 17, 5))
    g.check(g.op("lut_int8", x, g.const(q8(256), "table")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_dequantize_int8(dtype):
    """Quantize rounds half away from zero exactly (f32 0.49999997 -> 0, 2.5 -> 3), then dequantizes."""
    g = OpGraph()
    v = torch.cat([torch.randn(200) * 3, torch.tensor([0.49999997, -0.49999997, 2.5, -2.5, 1e9, -1e9])])
    x = g.input("x", v.reshape(2, 103).to(dtype))
    q = g.op("quantize_int8", x, 0.05 if dtype == torch.float32 else 1.0, -3)
    qc = g.op("quantize_int8", x, 0.02, 10, -20, 100)
    g.check(q, qc, g.op("dequantize_int8", q, 0.05, -3, dtype), g.op("dequantize_int8", qc, 0.02, 10, torch.float32))


def test_unsupported_int8_forms_are_named():
    g = OpGraph()
    a, b = g.input("a", q8(2, 3, 4)), g.input("b", q8(1, 4, 5))        # broadcast batch dims
    g.b.graph.output(g.op("matmul_int8", a, b, *scalar(0.01)))
    with pytest.raises(UnsupportedOpError, match="tpu.matmul_int8.*matmul_int8"):
        codegen(g.b.finish(), "bm1684x")
    g = OpGraph()
    a = g.input("a", q8(1, 4, 4, 4))
    g.b.graph.output(g.op("add_int8", a, a, 2 ** 31 - 1, 0, *scalar(1.0), *scalar(1.0)))  # a * (2^31 - 1)
    with pytest.raises(UnsupportedOpError, match="could sum past int32"):
        codegen(g.b.finish(), "bm1684x")
    g = OpGraph()
    a = g.input("a", q8(1, 4, 4, 4))                           # each side fits int32, their sum does not
    g.b.graph.output(g.op("sub_int8", a, a, 8_000_000, 0, 8_000_000, 0, *scalar(1.0), -128, -128))
    with pytest.raises(UnsupportedOpError, match="tpu.sub_int8.*could sum past int32"):
        codegen(g.b.finish(), "bm1684x")


# ---- whole models -----------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    """conv/bn/relu, relu6, residual add, max/avg pool, SE-style mul with a sigmoid LUT, cat, mean, fc."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16), nn.ReLU())
        self.c3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        y = self.c1(x)
        y = F.max_pool2d(y + self.c2(y), 2)
        z = F.avg_pool2d(F.relu6(self.c3(y)), 3, 1, 1)
        z = z * torch.sigmoid(z.mean((2, 3), keepdim=True))
        return self.fc(torch.cat([z, F.silu(z)], 1).mean((2, 3)))


def int8_program(model: nn.Module, x: torch.Tensor, asymmetric: bool = False, via_deploy: bool = True):
    """(TPU graph, Program) at int8, calibrated on two samples (max); the Program from ``torch_tpu.deploy``
    (which lowers again) or straight from ``codegen`` of the same TPU graph."""
    top = torch_tpu.transform(model.eval(), (x,))
    table = torch_tpu.calibrate(top, [x, torch.randn_like(x)], method="max", tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table, asymmetric=asymmetric)
    if not via_deploy:
        return tpu, codegen(tpu, "bm1684x")
    return tpu, torch_tpu.deploy(top, precision="int8", calibration_table=table, asymmetric=asymmetric)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


@pytest.mark.parametrize("asymmetric", [False, True])
def test_small_cnn_int8_end_to_end_and_intermediates(asymmetric, tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    tpu, prog = int8_program(model, x, asymmetric)
    prog = Program.load(prog.save(tmp_path / "small_int8.tpu"))       # requant tuples etc. survive the file
    ref, named = run_named(tpu, x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    for k in KERNELS:
        res = run_program(prog, {prog.inputs[0].name: x}, kernels=k, debug=True)
        assert torch.equal(res.outputs["output0"], ref), k
        int8_names = [n for n, v in named.items() if v.dtype == torch.int8 and n in res.tensors]
        assert len(int8_names) >= 12
        for n in int8_names:
            assert torch.equal(res.tensors[n], named[n]), (k, n)
    with torch.no_grad():
        assert cosine(ref, model(x)) > 0.98


def test_int8_graph_with_float_layers_from_the_qtable():
    """F32 / BF16 layers between int8 ones (quantize / dequantize at the boundaries, bf16 weights converted once,
    not by a cast op): the program follows the TPU graph up to float summation order."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(2, 3, 16, 16)
    top = torch_tpu.transform(model, (x,))
    table = torch_tpu.calibrate(top, [x, torch.randn_like(x)], method="max", tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table, qtable={"c2.1": "F32", "c3": "BF16"})
    prog = codegen(tpu, "bm1684x")
    assert {c.x.dtype.label for c in of(prog, isa.Conv2d)} == {"int8", "f32", "bf16"}
    with torch.no_grad():
        ref = tpu(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    assert cosine(run_program(prog, {prog.inputs[0].name: x}, kernels="c")["output0"], ref) > 0.9999


def test_resnet18_32x32_int8():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    tpu, prog = int8_program(model, x, via_deploy=False)
    with torch.no_grad():
        ref, eager = tpu(x), model(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    res = run_program(prog, {prog.inputs[0].name: x}, kernels="c", profile=True)
    assert torch.equal(res.outputs["output0"], ref)
    assert cosine(ref, eager) > 0.98
    convs = [i for i in prog.instructions if isinstance(i, isa.Conv2d)]
    assert len({c.layer for c in convs}) == 21 and all(c.x.dtype.label == "int8" for c in convs)
    assert res.profile.total_cycles > 0

"""``tpu.conv2d_lut_int8``: a convolution fused with a curved activation (silu, sigmoid, hardswish ...) whose
pre-activation lives on a 16-bit grid and goes through a 257-knot interpolated table.

* the reference op against a pure-Python integer model of its formula;
* its codegen, bit for bit against the reference op (C and reference kernel sets), knots and the grid ends
  included;
* the lowering: which pairs fuse, and the fused output against the activation of the exact (float64)
  pre-activation: within one int8 step, and closer than the separate conv (int8 pre-activation) + table;
* a small squeeze-excite network end to end on the cmodel, exact against the TPU graph.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
import torch.nn as nn
import torch.nn.functional as F

import torch_tpu
import torch_tpu.quant.simulate as simulate
from torch_tpu.cmodel import isa, run_program
from torch_tpu.fixed_point import quantize
from torch_tpu.graph.meta import run_named
from torch_tpu.lowering.codegen import codegen
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.qparams import QParams
from torch_tpu.lowering.rules.int8_eltwise import LUT_FRAC_BITS, lut_domain
from torch_tpu.quant.qscheme import activation_qparams
from torch_tpu.quant.simulate import cosine
from torch_tpu.tpu_ops.int8_eltwise import FINE_MAX

from tests.lowering.test_codegen_int8 import KERNELS, OpGraph, multipliers, of, q8

tpu = torch.ops.tpu


def _tables(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random int32 (base, slope) tables of 257 knots ``t[k]`` (k = -128..128, up to +-1024 steps, as the
    lowering's), ordered by ``k & 0xff``: a continuous interpolant, so a knot reached from either side (the
    codegen's ``lo = 256`` at ``u = 256 j <= 0``) gives the same value."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(-(1024 << LUT_FRAC_BITS), 1024 << LUT_FRAC_BITS, (257,), generator=g, dtype=torch.int64)
    order = torch.cat([torch.arange(128, 256), torch.arange(0, 128)])
    return (256 * t[:-1])[order].to(torch.int32), (t[1:] - t[:-1])[order].to(torch.int32)


def _python_model(acc: int, m: int, s: int, u_zp: int, base: list[int], slope: list[int], out_shift: int,
                  out_zp: int, qmin: int, qmax: int) -> int:
    """The op's formula on one accumulator, in Python integers."""
    def round_shift(v: int, sh: int) -> int:
        if sh == 0:
            return v
        mag = (abs(v) + (1 << (sh - 1))) >> sh
        return mag if v >= 0 else -mag

    u = max(-FINE_MAX, min(FINE_MAX, round_shift(acc * m, s) + u_zp))
    hi = u // 256                                  # floor
    lo = u - 256 * hi
    k = hi & 0xFF
    return max(qmin, min(qmax, round_shift(base[k] + slope[k] * lo, out_shift) + out_zp))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 16), x_zp=st.integers(-128, 127), u_zp=st.integers(-40000, 40000),
       out_zp=st.integers(-128, 127), lo_hi=st.tuples(st.integers(-128, 0), st.integers(0, 127)),
       factor=st.sampled_from([1e-3, 3e-2, 0.5, 8.0]))
def test_reference_op_matches_a_python_integer_model(seed, x_zp, u_zp, out_zp, lo_hi, factor):
    """Any zero points, bounds and grid factors (u saturating at +-32767 for the large ones)."""
    torch.manual_seed(seed)
    x, w = q8(1, 3, 4, 4), q8(4, 3, 3, 3)
    bias = torch.randint(-4000, 4000, (4,), dtype=torch.int32)
    m, s = multipliers(4, factor, 2 * factor)
    base, slope = _tables(seed)
    qmin, qmax = lo_hi
    y = tpu.conv2d_lut_int8(x, w, bias, [1, 1], [1, 1, 1, 1], [1, 1], 1, m, s, x_zp, u_zp, base, slope, 16, out_zp,
                            qmin, qmax)
    xp = F.pad(x.double() - x_zp, [1, 1, 1, 1])
    acc = (F.conv2d(xp, w.double()) + bias.double().reshape(1, -1, 1, 1)).round().long()
    bl, sl = base.tolist(), slope.tolist()
    want = torch.tensor([[[[_python_model(int(acc[0, c, i, j]), int(m[c]), int(s[c]), u_zp, bl, sl, 16, out_zp,
                                          qmin, qmax) for j in range(4)] for i in range(4)] for c in range(4)]])
    assert y.dtype == torch.int8 and torch.equal(y.long(), want)


@pytest.mark.parametrize("case", ["plain", "grouped_stride_zps", "saturating"])
def test_codegen_bit_exact(case):
    """Per-channel multipliers, zero points, strides/groups, a fine grid that saturates (u = +-32767) and
    accumulators that land exactly on knots (u = 256 j, where the codegen's knot index is j - 1)."""
    torch.manual_seed(1)
    g = OpGraph()
    if case == "plain":
        xs, cout, k, stride, pad, groups, x_zp, u_zp, out_zp, lo, hi = (2, 6, 7, 9), 8, 3, 1, 1, 1, 0, 0, 0, -128, 127
        m, s = multipliers(cout, 1e-2, 4e-2)
    elif case == "grouped_stride_zps":
        xs, cout, k, stride, pad, groups, x_zp, u_zp, out_zp, lo, hi = (1, 8, 9, 9), 8, 3, 2, 1, 8, -128, 9000, 17, \
            -60, 100
        m, s = multipliers(cout, 1e-2, 3e-1)
    else:
        xs, cout, k, stride, pad, groups, x_zp, u_zp, out_zp, lo, hi = (1, 4, 6, 6), 6, 1, 1, 0, 1, 5, -3000, -128, \
            -128, 127
        m, s = multipliers(cout, 2.0, 40.0)
    x = g.input("x", q8(*xs))
    wt = q8(cout, xs[1] // groups, k, k)
    if case == "plain":                            # exact multiples of 256 on the fine grid: 256 * acc
        m, s = torch.full((cout,), 1 << 30, dtype=torch.int32), torch.full((cout,), 22, dtype=torch.int64)
    base, slope = _tables(2)
    y = g.op("conv2d_lut_int8", x, g.const(wt, "w"), g.const(torch.randint(-999, 999, (cout,), dtype=torch.int32),
             "b"), [stride, stride], [pad] * 4, [1, 1], groups, g.const(m, "m"), g.const(s, "s"), x_zp, u_zp,
             g.const(base, "base"), g.const(slope, "slope"), 16, out_zp, lo, hi)
    prog = g.check(y)
    assert len(of(prog, isa.Lut)) == 2 * len(of(prog, isa.Conv2d))     # two table lookups per slice
    assert all(c.out.dtype.label == "int32" for c in of(prog, isa.Conv2d))


def test_codegen_tiled_with_halos():
    """An output larger than a lane: H slices with halos, each with its own int32 scratch tiles."""
    torch.manual_seed(3)
    g = OpGraph()
    x = g.input("x", q8(1, 4, 256, 256))
    m, s = multipliers(8, 5e-2, 2e-1)
    base, slope = _tables(4)
    y = g.op("conv2d_lut_int8", x, g.const(q8(8, 4, 3, 3), "w"), None, [1, 1], [1, 1, 1, 1], [1, 1], 1,
             g.const(m, "m"), g.const(s, "s"), -128, 100, g.const(base, "base"), g.const(slope, "slope"), 16, 3)
    prog = g.check(y, kernels=("c",))
    assert len(of(prog, isa.Conv2d)) > 2


class ConvActs(nn.Module):
    """Conv + a curved activation (fused as a table), and conv + relu + the activation (relu fused as bounds,
    the activation a separate 256-entry table)."""

    def __init__(self, act):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.act = act

    def forward(self, x):
        return self.act(F.relu(self.c1(x))) + self.act(self.c2(x))


@pytest.mark.parametrize("act", [F.silu, torch.sigmoid, F.hardswish, F.hardsigmoid, F.gelu, torch.tanh])
def test_fused_output_within_one_step_of_the_exact_activation(act):
    """The fused op's int8 output vs ``quantize(f(exact pre-activation))`` (the pre-activation from the same
    int8 operands in float64): at most one step apart, equal on most elements; the separate form (the
    pre-activation rounded to its calibrated int8 grid, then the table) is off on more elements."""
    torch.manual_seed(0)
    model = ConvActs(act).eval()
    data = [torch.randn(2, 3, 10, 10) for _ in range(4)]
    top = torch_tpu.transform(model, (data[0],))
    table = torch_tpu.calibrate(top, data[:3], method="kl", num_samples=3, tune_num=0, progress=False)
    g = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    calls = [n for n in g.graph.nodes if n.op == "call_function"]
    fused = [n for n in calls if n.target == tpu.conv2d_lut_int8.default]
    assert len(fused) == 1 and sum(n.target == tpu.lut_int8.default for n in calls) == 1
    (fused,) = fused
    _, named = run_named(g, data[3])
    y = named[fused.meta["stable_name"]].long()
    xq = named[fused.args[0].meta["stable_name"]].double()
    quant_x = fused.args[0]                        # tpu.quantize_int8(x, scale, zero_point)
    assert quant_x.target == tpu.quantize_int8.default
    s_x, x_zp = float(quant_x.args[1]), int(quant_x.args[2])
    w = getattr(g, fused.args[1].target).double()
    b = getattr(g, fused.args[2].target).double()
    s_w = model.c2.weight.detach().double().flatten(1).abs().amax(1) / 127
    acc = F.conv2d(F.pad(xq - x_zp, [1, 1, 1, 1]), w) + b.reshape(1, -1, 1, 1)
    pre = acc * (s_x * s_w).reshape(1, -1, 1, 1)
    s_y, zp_y = fused.meta["qparams"]
    exact = quantize(act(pre), s_y, zp_y, dtype=torch.int8).long()
    diff = (y - exact).abs()
    assert int(diff.max()) <= 1 and float((diff == 0).double().mean()) > 0.95
    s_pre, zp_pre = activation_qparams(table["c2"])
    pre8 = (quantize(pre, s_pre, zp_pre, dtype=torch.int8).double() - zp_pre) * s_pre
    separate = quantize(act(pre8), s_y, zp_y, dtype=torch.int8).long()
    assert int((separate != exact).sum()) > int((y != exact).sum())


def test_lut_domain_cuts_the_flat_ends():
    """silu on its one-sided output grid [-0.278, 6]: the table spans from where silu's code stops changing
    on the left (silu(x) within half a step of 0: x below about -6.5) to where the output saturates (6), not
    the whole window [-40, 40]; on an unsigned grid [0, 6] the whole negative side is one code."""
    s = 6.278 / 255
    a, b = lut_domain(F.silu, QParams(s, -128 + round(0.278 / s)), 40.0)
    assert -9.0 < a < -5.0 and 5.9 < b < 6.2
    a, b = lut_domain(F.silu, QParams(6.0 / 255, -128), 40.0)
    assert -0.1 < a < 0.1 and 5.9 < b < 6.2
    # sigmoid changes code every ~0.016 in x around 0: the whole window [-0.5, 0.5] up to one code's width
    assert lut_domain(torch.sigmoid, QParams(1.0 / 255, -128), 0.5) == pytest.approx((-0.5, 0.5), abs=0.02)


def test_fusible_pair_rules():
    """Conv + silu fuses as a table (curved), conv + relu as bounds; linear + silu and a conv with two users
    do not fuse."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.d, self.fc = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Linear(3, 4)

        def forward(self, x):
            a = self.d(x)
            return F.silu(self.c(x)).mean() + F.silu(self.fc(x.mean((2, 3)))).sum() + (F.silu(a) + a).sum()

    top = torch_tpu.transform(M().eval(), (torch.randn(1, 3, 4, 4),))
    pairs = {n.meta["stable_name"]: simulate.fusible_pair(n) for n in top.gm.graph.nodes if n.op == "call_function"}
    fused = {k: v.target for k, v in pairs.items() if v is not None}
    assert fused == {"c": torch.ops.aten.silu.default}


class TinySE(nn.Module):
    """efficientnet's block in miniature: conv + silu, depthwise conv + silu, squeeze-excite (conv + silu,
    conv + sigmoid, mul), projection."""

    def __init__(self):
        super().__init__()
        self.expand, self.dw = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc1, self.fc2, self.proj = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1), nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = F.silu(self.dw(F.silu(self.expand(x))))
        g = torch.sigmoid(self.fc2(F.silu(self.fc1(y.mean((2, 3), keepdim=True)))))
        return self.proj(y * g)


def test_squeeze_excite_block_end_to_end_exact_on_the_cmodel():
    torch.manual_seed(0)
    model = TinySE().eval()
    data = [torch.randn(2, 3, 12, 12) for _ in range(4)]
    top = torch_tpu.transform(model, (data[0],))
    table = torch_tpu.calibrate(top, data[:3], method="kl", num_samples=3, tune_num=0, progress=False)
    g = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    targets = [n.target for n in g.graph.nodes if n.op == "call_function"]
    assert targets.count(tpu.conv2d_lut_int8.default) == 4 and tpu.lut_int8.default not in targets
    prog = codegen(g, "bm1684x")
    x = data[3]
    with torch.no_grad():
        ref = g(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    for k in KERNELS:
        assert torch.equal(run_program(prog, {prog.inputs[0].name: x}, kernels=k)["output0"], ref), k
    with torch.no_grad():
        assert cosine(ref, model(x)) > 0.999

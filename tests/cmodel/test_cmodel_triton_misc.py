"""Triton kernels of pool2d, lut, requant, cast, reduce, softmax, layernorm, compare, select and gather (interpreter
on CPU, or a GPU) against the torch reference (the definition) and the C kernels, on random small instructions.

Integer outputs, bit copies and single-operation float results must be bit-exact; sums (avg pool, sum/mean) are held
to the f32 summation bound of test_cmodel_kernels.check, softmax to 1e-5 and layernorm to 1e-5 relative, each plus
one rounding step of a bf16/f16 output.
"""

import dataclasses
import inspect
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cmodel_testutil import L, rand
from test_cmodel_kernels import EXACT, FUNC, SUM, check

from torch_tpu.cmodel import isa, kernels_c, kernels_ref, kernels_triton, kernels_triton_misc
from torch_tpu.cmodel.builder import ProgramBuilder
from torch_tpu.cmodel.kernels import get_kernel_set
from torch_tpu.cmodel.kernels_ref import from_torch
from torch_tpu.cmodel.operands import DType
from torch_tpu.cmodel.simulator import run_program
from torch_tpu.errors import ProgramError
from torch_tpu.targets import get_target

pytestmark = [pytest.mark.skipif(not kernels_triton.available(), reason="triton is not installed"),
              # the interpreter's numpy warns where a kernel overflows to inf or computes NaN on purpose
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]

T = get_target("bm1684x")
FLOATS = ["f32", "bf16", "f16"]
INTS = ["int8", "int32", "uint8"]
SEEDS = range(8)


def _shape(r: random.Random, lo: int = 1, hi: int = 5) -> tuple:
    return tuple(r.randint(lo, hi) for _ in range(4))


def _values(shape, dt: str, g: torch.Generator, special: bool = False) -> np.ndarray:
    """Random storage values; integers over their whole range (int32: +-2^31), floats N(0, 2) in steps of 0.5
    near zero (ties and equal pairs) with, when ``special``, inf, -inf and NaN mixed in."""
    d = DType.parse(dt)
    if not d.is_float:
        info = torch.iinfo(d.torch)
        return from_torch(torch.randint(info.min, info.max + 1, shape, generator=g, dtype=torch.int64), d)
    v = torch.randn(shape, generator=g) * 2
    v = torch.where(torch.rand(shape, generator=g) < 0.3, torch.round(v * 2) / 2, v)
    if special and v.numel() >= 3:
        v.view(-1)[:3] = torch.tensor([float("inf"), float("-inf"), float("nan")])
        v = v.reshape(-1)[torch.randperm(v.numel(), generator=g)].reshape(shape)
    return from_torch(v, d)


def _bcast(r: random.Random, out: tuple) -> tuple:
    return tuple(d if r.random() < 0.6 else 1 for d in out)


def gen_pool2d(r, g, v):
    dt = r.choice(FLOATS if v % 4 < 2 else INTS)
    mode = ("max", "avg")[v % 2]
    kernel = (r.randint(1, 3), r.randint(1, 3))
    stride = (r.randint(1, 3), r.randint(1, 3))
    pad = (r.randint(0, kernel[0] - 1), r.randint(0, kernel[0] - 1), r.randint(0, kernel[1] - 1),
           r.randint(0, kernel[1] - 1))
    x = (r.randint(1, 2), r.randint(1, 5), r.randint(kernel[0], 9), r.randint(kernel[1], 9))
    fields = dict(mode=mode, kernel=kernel, stride=stride, pad=pad, count_include_pad=r.random() < 0.5)
    if mode == "avg" and dt in INTS:
        fields.update(multiplier=r.randrange(1 << 31), shift=r.randint(20, 45))
    inst = isa.Pool2d(id=0, x=L(0, 0, x, dt), out=L(0, 0, (1, 1, 1, 1), dt), **fields)
    inst = dataclasses.replace(inst, out=L(0, 0, x[:2] + inst.out_hw(), dt))
    vals = _values(x, dt, g, special=mode == "max")
    if dt == "int32":   # keep the window sums times the multiplier inside int64, as the C and reference need
        vals = (vals // (1 << 8)).astype(np.int32)
    return inst, [vals], EXACT if mode == "max" or dt in INTS else SUM


def gen_lut(r, g, v):
    xdt, tdt = r.choice(["int8", "uint8"]), r.choice(FLOATS + INTS)
    x = _shape(r)
    inst = isa.Lut(id=0, x=L(0, 0, x, xdt), table=L(0, 0, (1, 1, 1, 256), tdt), out=L(0, 0, x, tdt))
    return inst, [_values(x, xdt, g), _values((1, 1, 1, 256), tdt, g, special=True)], EXACT


def gen_requant(r, g, v):
    xdt, odt = r.choice(INTS), r.choice(INTS)
    x = _shape(r)
    # a large multiplier with a shift of 31..63 (the usual scale), or a small one with a shift of 0..3 (ties at every
    # shift, results inside the output range)
    pairs = [(r.randrange(1 << 31), r.randint(31, 63)) if r.random() < 0.5 else (r.randint(0, 7), r.randint(0, 3))
             for _ in range(r.choice([1, x[1]]))]
    inst = isa.Requant(id=0, x=L(0, 0, x, xdt), out=L(0, 0, x, odt), multiplier=tuple(m for m, _ in pairs),
                       shift=tuple(s for _, s in pairs), zero_point=r.randint(-300, 300))
    return inst, [_values(x, xdt, g)], EXACT


def gen_qadd(r, g, v):
    x = _shape(r)
    dts = [r.choice(["int8", "uint8"]) for _ in range(3)]
    while True:   # the lowering's kind of scales (a common scale with extra fraction bits) and random zero points
        s_a, s_b = r.randint(8, 31), r.randint(0, 31)
        inst = isa.QAdd(id=0, a=L(0, 0, x, dts[0]), b=L(0, 0, x, dts[1]), out=L(0, 0, x, dts[2]),
                        op=r.choice(["add", "sub"]), a_zp=r.randint(-300, 300), b_zp=r.randint(-300, 300),
                        a_multiplier=r.randrange(1 << (s_a - 1), 1 << s_a), a_shift=s_a,
                        b_multiplier=r.randrange(0, 1 << s_b) if s_b else r.randint(0, 9), b_shift=s_b,
                        multiplier=r.randrange(1 << 31), shift=r.randint(0, 45), zero_point=r.randint(-200, 200),
                        qmin=0 if dts[2] == "uint8" else -128, qmax=r.randint(100, 255 if dts[2] == "uint8" else 127))
        try:
            inst.check(T)
            return inst, [_values(x, dts[0], g), _values(x, dts[1], g)], EXACT
        except ProgramError:
            continue


def gen_cast(r, g, v):
    # v % 4: float -> float, float -> int (quantize), int -> float (dequantize), int -> int
    src, dst = r.choice(FLOATS if v % 4 < 2 else INTS), r.choice(FLOATS if v % 2 == 0 else INTS)
    x = _shape(r)
    fields = {}
    sf, df = DType.parse(src).is_float, DType.parse(dst).is_float
    if sf != df:   # quantize with power-of-two scales (exact ties of x / scale), both rounding modes
        fields = dict(scale=r.choice([0.0078125, 0.25, 2.0] if sf else [0.0125, 0.037, 1 / 3, 2.0, 1e-3]),
                      zero_point=r.randint(-20, 20), round_mode=isa.ROUND_MODES[v // 4 % 2])
    inst = isa.Cast(id=0, x=L(0, 0, x, src), out=L(0, 0, x, dst), **fields)
    if sf and not df:   # exact ties of x / scale, out-of-range values, inf, NaN
        v = torch.randint(-600, 600, x, generator=g) * 0.5 * inst.scale
        v.view(-1)[:4] = torch.tensor([1e30, -1e9, float("-inf"), float("nan")])[:v.numel()]
        vals = from_torch(v, DType.parse(src))
    elif sf:   # magnitudes 1e-9 .. 1e6: f16 subnormals and overflow
        v = torch.randn(x, generator=g) * torch.pow(10.0, torch.randint(-9, 6, x, generator=g))
        v.view(-1)[:5] = torch.tensor([65519.0, 65520.0, float("nan"), 2.0 ** -25, -(2.0 ** -24) * 1.5])[:v.numel()]
        vals = from_torch(v, DType.parse(src))
    else:
        vals = _values(x, src, g)
    return inst, [vals], EXACT


def gen_reduce(r, g, v):
    op = isa.REDUCE_OPS[v % 4]
    dt = r.choice(FLOATS if op == "mean" or v % 8 < 4 else INTS)
    is_float = DType.parse(dt).is_float
    odt = r.choice(FLOATS if is_float else INTS) if op in ("sum", "mean") else dt
    x = _shape(r)
    axes = tuple(sorted(r.sample(range(4), r.randint(1, 4))))
    out = tuple(1 if d in axes else s for d, s in enumerate(x))
    inst = isa.Reduce(id=0, op=op, x=L(0, 0, x, dt), out=L(0, 0, out, odt), axes=axes)
    return inst, [_values(x, dt, g, special=op in ("max", "min"))], EXACT if op in ("max", "min") or not is_float \
        else SUM


def gen_softmax(r, g, v):
    dt, odt = r.choice(FLOATS), r.choice(FLOATS)
    x = _shape(r, 1, 6)
    inst = isa.Softmax(id=0, x=L(0, 0, x, dt), out=L(0, 0, x, odt), axis=v % 4, log=v >= 4)
    return inst, [_values(x, dt, g)], FUNC * 10


def gen_layernorm(r, g, v):
    dt, odt = r.choice(FLOATS), r.choice(FLOATS)
    x = _shape(r, 1, 6)
    axis = v % 4
    inner = math.prod(x[axis:])
    w = L(0, 0, (1, 1, 1, inner), r.choice(FLOATS)) if r.random() < 0.7 else None
    b = L(0, 0, (1, 1, 1, inner), r.choice(FLOATS)) if r.random() < 0.7 else None
    inst = isa.LayerNorm(id=0, x=L(0, 0, x, dt), weight=w, bias=b, out=L(0, 0, x, odt), axis=axis,
                         eps=r.choice([1e-5, 1e-6, 1e-3]))
    ops = [_values(x, dt, g)] + [None if t is None else _values(t.shape, t.dtype.label, g) for t in (w, b)]
    return inst, ops, SUM


SCALARS = [0.0, 0.5, -2.5, 3.0, 127.0, 128.5, -128.0, 255.0, 1e40, -1e40, float("inf"), float("-inf"), float("nan"),
           2.0 ** 31, -(2.0 ** 31) - 0.5, 1e-45]


def gen_compare(r, g, v):
    kind = (FLOATS, INTS)[v % 2]
    adt, bdt = r.choice(kind), r.choice(kind)
    out = _shape(r)
    a = _bcast(r, out)
    b = _bcast(r, out) if v % 4 < 2 else None
    inst = isa.Compare(id=0, op=r.choice(isa.COMPARE_OPS), a=L(0, 0, a, adt), b=None if b is None else L(0, 0, b, bdt),
                       scalar=r.choice(SCALARS), out=L(0, 0, out, "uint8"))
    small = lambda shape, dt: (rand(shape, DType.parse(dt), g, lo=-3, hi=4) if dt in INTS  # noqa: E731
                               else _values(shape, dt, g, special=True))
    return inst, [small(a, adt), None if b is None else small(b, bdt)], EXACT


def gen_select(r, g, v):
    dt = r.choice(FLOATS + INTS)
    out = _shape(r)
    c, a, b = _bcast(r, out), _bcast(r, out), _bcast(r, out)
    inst = isa.Select(id=0, cond=L(0, 0, c, "uint8"), a=L(0, 0, a, dt), b=L(0, 0, b, dt), out=L(0, 0, out, dt))
    cond = rand(c, DType.UINT8, g, lo=0, hi=4)
    cond[cond == 3] = 255
    return inst, [cond, _values(a, dt, g, special=True), _values(b, dt, g, special=True)], EXACT


def gen_gather(r, g, v):
    dt = r.choice(FLOATS + INTS)
    n, c, v, d = r.randint(1, 2), r.randint(1, 6), r.randint(1, 9), r.randint(1, 7)
    base = r.choice([0, r.randint(1, 100), 2 ** 31 - 1])   # the largest base (isa: base < 2^31): only index 2^31-1 can hit
    prev = L(0, 0, (n, c, 1, d), dt) if v % 2 else None
    inst = isa.Gather(id=0, table=L(0, 0, (1, v, 1, d), dt), index=L(0, 0, (n, c, 1, 1), "int32"), prev=prev,
                      out=L(0, 0, (n, c, 1, d), dt), base=base)
    lo = min(base - 3, 2 ** 31 - 10)
    idx = torch.randint(lo, min(2 ** 31 - 1, max(base + v + 3, lo + 5)), (n, c, 1, 1), generator=g)
    idx.view(-1)[0] = r.choice([-(2 ** 31), 2 ** 31 - 1, int(idx.view(-1)[0])])
    ops = [_values(inst.table.shape, dt, g, special=True), idx.to(torch.int32).numpy(),
           None if prev is None else _values(prev.shape, dt, g, special=True)]
    return inst, ops, EXACT


#: opcode -> gen(r, g, v) -> (instruction, operands, tolerance); r/g: python/torch RNGs, v: the seed index, which
#: picks the variant (mode, dtype family, axis ...) so that the seeds cover each
GENERATORS = {"pool2d": gen_pool2d, "lut": gen_lut, "requant": gen_requant, "qadd": gen_qadd, "cast": gen_cast, "reduce": gen_reduce,
              "softmax": gen_softmax, "layernorm": gen_layernorm, "compare": gen_compare, "select": gen_select,
              "gather": gen_gather}


def test_generators_cover_the_misc_table():
    assert set(GENERATORS) == set(kernels_triton_misc.KERNELS)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("opcode", sorted(GENERATORS))
def test_triton_matches_reference_and_c(opcode, seed):
    r = random.Random(f"{opcode}-{seed}")
    inst, ops, rtol = GENERATORS[opcode](r, torch.Generator().manual_seed(r.randrange(1 << 30)), seed)
    inst.check(T)
    want = kernels_ref.KERNELS[opcode](inst, ops)
    got = kernels_triton.KERNELS[opcode](inst, ops)
    check(inst, got, want, rtol, ops)
    check(inst, got, kernels_c.KERNELS[opcode](inst, ops), rtol, ops)


def _big_cases():
    """Shapes past one block: several programs, and rows longer than one chunk (softmax 1500 > 1024,
    reduce K = 1200 > 256, layernorm 1300 > 1024, gather D = 300 > 256)."""
    f = lambda shape, dt="f32": L(0, 0, shape, dt)  # noqa: E731
    return [
        ("softmax_long_row", isa.Softmax(id=0, x=f((1, 2, 1, 1500)), out=f((1, 2, 1, 1500), "bf16"), axis=3),
         FUNC * 10),
        ("log_softmax_strided", isa.Softmax(id=0, x=f((2, 1100, 2, 1)), out=f((2, 1100, 2, 1)), axis=1, log=True),
         FUNC * 10),
        ("reduce_sum_many_rows", isa.Reduce(id=0, op="sum", x=f((2, 40, 30, 40)), out=f((2, 1, 30, 1)), axes=(1, 3)),
         SUM),
        ("reduce_max_int", isa.Reduce(id=0, op="max", x=f((3, 7, 9, 50), "int8"), out=f((3, 1, 9, 1), "int8"),
                                      axes=(1, 3)), EXACT),
        ("layernorm_long", isa.LayerNorm(id=0, x=f((3, 1, 1, 1300), "f16"), weight=f((1, 1, 1, 1300)),
                                         out=f((3, 1, 1, 1300)), axis=3), SUM),
        ("pool_many", isa.Pool2d(id=0, mode="avg", x=f((2, 9, 20, 20), "int8"), out=f((2, 9, 19, 19), "int8"),
                                 kernel=(2, 2), multiplier=1 << 30, shift=32), EXACT),
        ("select_many", isa.Select(id=0, cond=f((2, 3, 20, 1), "uint8"), a=f((2, 3, 20, 30)), b=f((1, 3, 1, 30)),
                                   out=f((2, 3, 20, 30))), EXACT),
        ("gather_wide", isa.Gather(id=0, table=f((1, 50, 1, 300), "bf16"), index=f((2, 30, 1, 1), "int32"),
                                   prev=f((2, 30, 1, 300), "bf16"), out=f((2, 30, 1, 300), "bf16"), base=5), EXACT),
    ]


@pytest.mark.parametrize("name, inst, rtol", _big_cases(), ids=[c[0] for c in _big_cases()])
def test_shapes_past_one_block(name, inst, rtol):
    g = torch.Generator().manual_seed(len(name))
    ops = []
    for t in inst.inputs():
        if t is None:
            ops.append(None)
        elif isinstance(inst, isa.Gather) and t is inst.index:
            ops.append(torch.randint(0, 60, t.shape, generator=g).to(torch.int32).numpy())
        else:
            ops.append(rand(t.shape, t.dtype, g, lo=0, hi=2) if t.dtype == DType.UINT8
                       else _values(t.shape, t.dtype.label, g))
    inst.check(T)
    got = kernels_triton.KERNELS[inst.OPCODE](inst, ops)
    check(inst, got, kernels_ref.KERNELS[inst.OPCODE](inst, ops), rtol, ops)
    check(inst, got, kernels_c.KERNELS[inst.OPCODE](inst, ops), rtol, ops)


def test_bf16_rounding_matches_torch_on_random_bit_patterns():
    """The kernels' f32 -> bf16 rounding (an integer form of nearest even) is torch's, over sampled bit patterns
    (NaN, inf, subnormals, ties included); f16 likewise."""
    g = torch.Generator().manual_seed(5)
    bits = torch.randint(-2 ** 31, 2 ** 31 - 1, (1, 1, 1, 20_000), generator=g).to(torch.int32)
    bits.view(-1)[:4] = torch.tensor([0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x00008000], dtype=torch.int32)  # ties
    for dst in ("bf16", "f16"):
        inst = isa.Cast(id=0, x=L(0, 0, bits.shape, "f32"), out=L(0, 0, bits.shape, dst))
        ops = [bits.view(torch.float32).numpy()]
        check(inst, kernels_triton_misc.cast(inst, ops), kernels_ref.cast(inst, ops), EXACT)


def test_requant_ties_and_saturation_match_a_python_integer_model():
    """Every shift 0..3 with odd multipliers (ties at each shift), negative values, saturation to int8: the Triton
    requant equals ``sat(sign(v) * ((|v| + 2^(s-1)) >> s) + zp)`` computed on Python ints."""
    x = np.arange(-200, 200, dtype=np.int32).reshape(1, 4, 10, 10)
    mult, shift, zp = (1, 3, 5, 7), (0, 1, 2, 3), -3
    inst = isa.Requant(id=0, x=L(0, 0, x.shape, "int32"), out=L(0, 0, x.shape, "int8"), multiplier=mult,
                       shift=shift, zero_point=zp)

    def model(v: int, m: int, s: int) -> int:
        p = v * m
        q = (abs(p) + ((1 << s) >> 1)) >> s
        return max(-128, min(127, (q if p >= 0 else -q) + zp))

    want = np.array([[[[model(int(v), mult[c], shift[c]) for v in row] for row in x[0, c]] for c in range(4)]],
                    dtype=np.int8)
    assert np.array_equal(kernels_triton_misc.requant(inst, [x]), want)


@pytest.mark.parametrize("op", isa.COMPARE_OPS)
def test_int_interval_equals_f64_comparison(op):
    fn = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
          "ge": np.greater_equal}[op]
    xs = np.concatenate([np.arange(-300, 300), [-(2 ** 31), 2 ** 31 - 1, 2 ** 31 - 2, -(2 ** 31) + 1]])
    for s in SCALARS + [-0.0, 2.0 ** 31 - 1, 2.0 ** 31 - 0.5, 5e-324, 2.0 ** 40, -(2.0 ** 41)]:
        lo, hi, negate = kernels_triton_misc.int_interval(op, s)
        got = ((xs >= lo) & (xs <= hi)) != negate
        assert np.array_equal(got, fn(xs.astype(np.float64), s)), (op, s)


def test_triton_set_runs_the_misc_opcodes_in_triton():
    ks = get_kernel_set("triton")
    for opcode, gen in GENERATORS.items():
        inst = gen(random.Random(opcode), torch.Generator().manual_seed(0), 0)[0]
        assert kernels_triton.handles(inst) and ks.kernel(inst) is kernels_triton_misc.KERNELS[opcode]


def test_triton_program_matches_reference():
    """pool -> layernorm -> softmax -> compare -> select -> quantize -> requant through run_program."""
    gen = torch.Generator().manual_seed(3)
    b = ProgramBuilder("bm1684x")
    x = b.load(b.input("x", (1, 4, 8, 8), "f32"))
    p = b.compute(isa.Pool2d, (1, 4, 4, 4), "f32", layer="pool", mode="max", x=x, kernel=(2, 2), stride=(2, 2))
    n = b.compute(isa.LayerNorm, p.shape, "f32", layer="ln", x=p, axis=2)
    s = b.compute(isa.Softmax, p.shape, "f32", layer="sm", x=n, axis=3)
    m = b.compute(isa.Compare, p.shape, "uint8", layer="cmp", op="gt", a=s, scalar=0.25)
    y = b.compute(isa.Select, p.shape, "f32", layer="sel", cond=m, a=s, b=n)
    q = b.compute(isa.Cast, p.shape, "int8", layer="q", x=y, scale=0.02)
    r = b.compute(isa.Requant, p.shape, "int8", layer="rq", x=q, multiplier=(1 << 30,), shift=(31,), zero_point=1)
    b.output("y", b.store(y))
    b.output("r", b.store(r))
    prog = b.build()
    xin = torch.randn(1, 4, 8, 8, generator=gen)
    want = run_program(prog, {"x": xin}, kernels="reference")
    got = run_program(prog, {"x": xin}, kernels="triton")
    torch.testing.assert_close(got["y"], want["y"], rtol=1e-5, atol=1e-6)
    same_q = torch.round(got["y"] / 0.02) == torch.round(want["y"] / 0.02)
    assert same_q.float().mean() > 0.99 and torch.equal(got["r"][same_q], want["r"][same_q])


#: (kernel, pointer / float argument types, constexprs): one variant per kernel and branch family, f32 loads with
#: 1024-wide reductions among them (the case Triton's CUDA pipeline once failed on); the other int arguments are i32
CUDA_VARIANTS = [
    ("_pool_kernel", {"x_ptr": "*bf16", "o_ptr": "*i16", "area": "fp32"},
     dict(MAX=False, IS_FLOAT=True, INCLUDE_PAD=False, OUT_BF16=True, BLOCK=1024)),
    ("_pool_kernel", {"x_ptr": "*i8", "o_ptr": "*i8", "area": "fp32"},
     dict(MAX=False, IS_FLOAT=False, INCLUDE_PAD=True, OUT_BF16=False, BLOCK=1024)),
    ("_lut_kernel", {"x_ptr": "*i8", "t_ptr": "*i16", "o_ptr": "*i16"}, dict(BLOCK=1024)),
    ("_requant_kernel", {"x_ptr": "*i32", "o_ptr": "*u8", "m_ptr": "*i32", "s_ptr": "*i32"}, dict(BLOCK=1024)),
    ("_cast_kernel", {"x_ptr": "*fp32", "o_ptr": "*i8", "scale": "fp32", "fmax": "fp32"},
     dict(SRC_FLOAT=True, DST_FLOAT=False, HALF_EVEN=True, OUT_BF16=False, BLOCK=1024)),
    ("_cast_kernel", {"x_ptr": "*i8", "o_ptr": "*i16", "scale": "fp32", "fmax": "fp32"},
     dict(SRC_FLOAT=False, DST_FLOAT=True, HALF_EVEN=False, OUT_BF16=True, BLOCK=1024)),
    ("_reduce_kernel", {"x_ptr": "*fp16", "o_ptr": "*fp32", "count": "fp32"},
     dict(OP=2, IS_FLOAT=True, OUT_BF16=False, BM=16, BK=256)),
    ("_reduce_kernel", {"x_ptr": "*i8", "o_ptr": "*i32", "count": "fp32"},
     dict(OP=0, IS_FLOAT=False, OUT_BF16=False, BM=16, BK=256)),
    ("_softmax_kernel", {"x_ptr": "*bf16", "o_ptr": "*fp16"}, dict(LOG=True, OUT_BF16=False, BR=4, BL=1024)),
    ("_softmax_kernel", {"x_ptr": "*fp32", "o_ptr": "*fp32"}, dict(LOG=False, OUT_BF16=False, BR=4, BL=1024)),
    ("_layernorm_kernel", {"x_ptr": "*fp16", "w_ptr": "*bf16", "b_ptr": "*fp32", "o_ptr": "*i16", "kf": "fp32",
                           "eps": "fp32"}, dict(HAS_W=True, HAS_B=True, OUT_BF16=True, BR=4, BK=1024)),
    ("_layernorm_kernel", {"x_ptr": "*fp32", "w_ptr": "*fp32", "b_ptr": "*fp32", "o_ptr": "*fp32", "kf": "fp32",
                           "eps": "fp32"}, dict(HAS_W=False, HAS_B=True, OUT_BF16=False, BR=1, BK=1024)),
    ("_compare_kernel", {"a_ptr": "*u8", "b_ptr": "*u8", "o_ptr": "*u8", "scalar": "fp32", "lo": "i64", "hi": "i64"},
     dict(OP=1, IS_FLOAT=False, HAS_B=False, BLOCK=1024)),
    ("_compare_kernel", {"a_ptr": "*bf16", "b_ptr": "*fp16", "o_ptr": "*u8", "scalar": "fp32", "lo": "i64",
                         "hi": "i64"}, dict(OP=2, IS_FLOAT=True, HAS_B=True, BLOCK=1024)),
    ("_select_kernel", {"c_ptr": "*i8", "a_ptr": "*i16", "b_ptr": "*i16", "o_ptr": "*i16"}, dict(BLOCK=1024)),
    ("_gather_kernel", {"t_ptr": "*i32", "i_ptr": "*i32", "p_ptr": "*i32", "o_ptr": "*i32", "base": "i64"},
     dict(HAS_PREV=True, BR=8, BD=256)),
]


def compile_cuda_variants() -> list[str]:
    """Compile CUDA_VARIANTS for sm_90 (Triton's whole pipeline down to a cubin; no GPU needed). Runs in a process
    without TRITON_INTERPRET, where the kernels are real JIT functions. Returns the PTX of each."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    ptx = []
    for name, types, consts in CUDA_VARIANTS:
        fn = getattr(kernels_triton_misc, name)
        params = list(inspect.signature(fn.fn).parameters)
        sig = {p: "constexpr" if p in consts else types.get(p, "i32") for p in params}
        src = ASTSource(fn=fn, signature=sig, constexprs={(params.index(k),): v for k, v in consts.items()})
        ptx.append(triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"])
    return ptx


def test_kernels_compile_for_cuda_without_a_gpu():
    """The CUDA path compiles (the interpreter alone would not catch a compiled-mode error), and its float division
    and square root are the correctly rounded ones (a plain ``/`` is div.full.f32 on CUDA)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, test_cmodel_triton_misc as t\n"
            "ptx = t.compile_cuda_variants()\n"
            "print(json.dumps([sorted(set(__import__('re').findall(r'\\b(?:div|sqrt)\\.[a-z]+\\.f32', p))) "
            "for p in ptx]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, env=env, capture_output=True,
                         text=True, timeout=300)
    if run.returncode and "ptxas" in run.stderr and "not found" in run.stderr:
        pytest.skip("Triton's ptxas is not available")
    assert run.returncode == 0, run.stderr[-3000:]
    ops = __import__("json").loads(run.stdout.strip().splitlines()[-1])
    assert len(ops) == len(CUDA_VARIANTS)
    assert all(op in ("div.rn.f32", "sqrt.rn.f32") for found in ops for op in found), ops
    assert any("div.rn.f32" in found for found in ops) and any("sqrt.rn.f32" in found for found in ops)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("opcode", sorted(GENERATORS))
def test_triton_misc_on_gpu_many_seeds(opcode):
    for seed in range(40):
        r = random.Random(f"gpu-{opcode}-{seed}")
        inst, ops, rtol = GENERATORS[opcode](r, torch.Generator().manual_seed(seed), seed)
        check(inst, kernels_triton.KERNELS[opcode](inst, ops), kernels_ref.KERNELS[opcode](inst, ops), rtol, ops)

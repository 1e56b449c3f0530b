"""The fused int8 add / sub (isa.QAdd) in every kernel set against a pure-Python integer model and the TPU op."""

import dataclasses
import random

import numpy as np
import pytest
import torch
from cmodel_testutil import L
from test_cmodel_kernels import simd_levels

from torch_tpu.cmodel import isa, kernels_c, kernels_ref, kernels_triton
from torch_tpu.cmodel.memory import _cmodel
from torch_tpu.cmodel.timing import instruction_cost
from torch_tpu.errors import ProgramError
from torch_tpu.targets import get_target

TARGET = get_target("bm1684x")


def rshift(v: int, s: int) -> int:
    """Round half away from zero of v / 2^s, in Python's exact integers."""
    q, r = divmod(abs(v), 1 << s)
    q += 1 if s and 2 * r >= (1 << s) else 0
    return q if v >= 0 else -q


def py_qadd(inst: isa.QAdd, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sign = 1 if inst.op == "add" else -1
    out = [min(inst.qmax, max(inst.qmin, rshift((rshift((int(x) - inst.a_zp) * inst.a_multiplier, inst.a_shift)
                                                  + sign * rshift((int(y) - inst.b_zp) * inst.b_multiplier,
                                                                  inst.b_shift)) * inst.multiplier, inst.shift)
                                     + inst.zero_point)) for x, y in zip(a.ravel(), b.ravel())]
    return np.array(out, dtype=np.int64).reshape(a.shape)


def random_case(seed: int) -> tuple[isa.QAdd, np.ndarray, np.ndarray]:
    """A valid instruction with the lowering's kind of scales (inputs on a common scale with 8 extra fraction
    bits, an output shift that removes them) plus random zero points, dtypes, bounds and ties."""
    r = random.Random(seed)
    while True:
        shape = (1, r.randint(1, 70), r.randint(1, 5), r.choice([1, 3, 4, 7, 33, 257]))
        ad, bd, od = (r.choice(["int8", "uint8"]) for _ in range(3))
        s_a, s_b = r.randint(8, 31), r.randint(8, 31)
        lo, hi = (0, 255) if od == "uint8" else (-128, 127)
        qmin = r.randint(lo, lo + 20)
        inst = isa.QAdd(id=0, a=L(0, 0, shape, ad), b=L(0, 0, shape, bd), out=L(0, 0, shape, od),
                        op=r.choice(["add", "sub"]), a_zp=r.randint(-300, 300), b_zp=r.randint(-300, 300),
                        a_multiplier=r.randrange(1 << (s_a - 1), 1 << s_a) << r.randint(0, 8), a_shift=s_a,
                        b_multiplier=r.choice([1 << s_b, r.randrange(1, 1 << s_b)]), b_shift=s_b,
                        multiplier=r.randrange(1, 1 << 31), shift=r.randint(0, 45), zero_point=r.randint(-200, 200),
                        qmin=qmin, qmax=r.randint(qmin, hi))
        try:
            inst.check(TARGET)
        except ProgramError:
            continue
        g = np.random.default_rng(seed)
        ops = [g.integers(0 if t.dtype == isa.DType.UINT8 else -128, 256 if t.dtype == isa.DType.UINT8 else 128,
                          shape).astype(t.dtype.numpy) for t in (inst.a, inst.b)]
        return inst, ops[0], ops[1]


@pytest.mark.parametrize("seed", range(40))
def test_qadd_reference_and_c_equal_the_integer_model(seed):
    inst, a, b = random_case(seed)
    want = py_qadd(inst, a, b)
    assert np.array_equal(kernels_ref.qadd(inst, [a, b]).astype(np.int64), want)
    for level in simd_levels():           # the AVX2 path takes int8 / int8 -> int8 four at a time
        _cmodel.set_simd(level)
        assert np.array_equal(kernels_c.qadd(inst, [a, b]).astype(np.int64), want), level
    _cmodel.set_simd(simd_levels()[-1])


def test_qadd_large_threaded_tile_equals_reference():
    inst, a, b = random_case(7)
    shape = (1, 64, 40, 40)
    inst = dataclasses.replace(inst, a=L(0, 0, shape, "int8"), b=L(0, 0, shape, "int8"), out=L(0, 0, shape, "int8"),
                               qmin=-128, qmax=127)
    inst.check(TARGET)
    g = np.random.default_rng(1)
    a, b = (g.integers(-128, 128, shape).astype(np.int8) for _ in range(2))
    assert np.array_equal(kernels_c.qadd(inst, [a, b]), kernels_ref.qadd(inst, [a, b]))


def test_qadd_equals_the_tpu_add_op():
    """The instruction is the TPU graph's add_int8 / sub_int8 (what codegen lowers them to)."""
    from torch_tpu.tpu_ops.int8_eltwise import add_int8, sub_int8
    for seed in range(8):
        inst, a, b = random_case(100 + seed)
        if inst.a.dtype != isa.DType.INT8 or inst.b.dtype != isa.DType.INT8 or inst.out.dtype != isa.DType.INT8:
            continue
        fn = add_int8 if inst.op == "add" else sub_int8
        want = fn(torch.from_numpy(a), torch.from_numpy(b), inst.a_multiplier, inst.a_shift, inst.b_multiplier,
                  inst.b_shift, inst.multiplier, inst.shift, inst.a_zp, inst.b_zp, inst.zero_point, inst.qmin,
                  inst.qmax)
        assert np.array_equal(kernels_ref.qadd(inst, [a, b]), want.numpy())


@pytest.mark.skipif(not kernels_triton.available(), reason="triton is not installed")
def test_qadd_triton_equals_reference():
    for seed in range(4):
        inst, a, b = random_case(200 + seed)
        assert np.array_equal(kernels_triton.KERNELS["qadd"](inst, [a, b]), kernels_ref.qadd(inst, [a, b]))


@pytest.mark.parametrize("field, value, match", [
    ("op", "mul", "add or sub"),
    ("a_zp", 1 << 16, "zero point"),
    ("b_shift", 64, r"\[0, 63\]"),
    ("multiplier", 1 << 31, r"\[0, 2\^31\)"),
    ("qmax", 128, "qmin <= qmax"),
    ("a_multiplier", (1 << 31) - 1, "could leave int32"),
])
def test_qadd_fields_are_checked(field, value, match):
    inst, _, _ = random_case(3)
    inst = dataclasses.replace(inst, out=L(0, 0, inst.a.shape, "int8"), qmin=-128, qmax=127)
    bad = {field: value, "a_shift": 0} if field == "a_multiplier" else {field: value}
    with pytest.raises(ProgramError, match=match):
        dataclasses.replace(inst, **bad).check(TARGET)
    with pytest.raises(ProgramError, match="int8 / uint8"):
        dataclasses.replace(inst, a=L(0, 0, inst.a.shape, "int32")).check(TARGET)


def test_qadd_cost_golden():
    """3 ops per element at the int8 element rate: (1, 64, 56, 56) int8 on bm1684x = 20 + 3136 * 3 / 64."""
    t = L(0, 0, (1, 64, 56, 56), "int8")
    inst = isa.QAdd(id=0, a=t, b=t, out=t)
    assert instruction_cost(inst, TARGET).cycles == 20 + 3136 * 3 // 64

"""The fast paths of the C cmodel: threads, the packed GEMM's blocking edges, the plane copy, memory reuse.

Every result is compared with the torch reference kernels (the definition), and threaded results with
serial ones bit for bit: the GEMM splits its work over output tiles only, never over K, so the thread
count must not change a single bit.
"""

import numpy as np
import pytest
import torch
from cmodel_testutil import L
from test_cmodel_kernels import SUM, check, conv, mm, operands, simd_levels

from torch_tpu.cmodel import isa, kernels_c, kernels_ref
from torch_tpu.cmodel.builder import ProgramBuilder
from torch_tpu.cmodel.memory import _cmodel, dense_desc, numpy_copy
from torch_tpu.cmodel.simulator import run_program


@pytest.fixture
def threads():
    """Restore the default thread count after the test."""
    yield kernels_c.set_threads
    kernels_c.set_threads(0)


# shapes around the blocking: K past one f32 K block (256) / int8 pair block (512), M past a 144-row
# task and not a multiple of the 6-row strip, N not a multiple of the 16 / 32-column strip
SHAPES = [
    ("conv_wide_k", conv(cin=70, cout=13, hw=(9, 11), pad=(1, 1, 1, 1), bias_dt="f32", act="relu")),
    ("conv_many_cols", conv(cin=16, cout=24, hw=(40, 41), pad=(1, 1, 1, 1), bias_dt="f32")),
    ("conv_many_rows", conv(cin=5, cout=150, hw=(6, 5), kernel=(1, 1), bias_dt="f32", act="relu6")),
    ("conv_stride_dilation", conv(cin=9, cout=20, hw=(17, 13), kernel=(3, 2), stride=(2, 3), dilation=(2, 1),
                                  pad=(2, 0, 1, 2), act="clip", act_lo=-0.5, act_hi=0.25)),
    ("conv_1x1_direct_bf16", conv("bf16", cin=33, cout=40, hw=(7, 7), kernel=(1, 1), bias_dt="bf16")),
    ("conv_f16_groups", conv("f16", odt="f32", cin=12, cout=18, groups=3, hw=(8, 8), pad=(1, 1, 1, 1))),
    ("conv_depthwise_big", conv(cin=40, cout=40, groups=40, hw=(33, 31), pad=(1, 1, 1, 1), bias_dt="f32",
                                act="relu")),
    ("conv_int8_wide_k", conv("int8", odt="int32", cin=67, cout=29, hw=(9, 7), pad=(1, 1, 1, 1), bias_dt="int32",
                              act="relu")),
    # more than one 384-column panel: A is packed once for all of them (gemm.c pack_a_task)
    ("conv_int8_panels_wide_k", conv("int8", odt="int32", cin=67, cout=29, hw=(20, 25), pad=(1, 1, 1, 1),
                                     bias_dt="int32")),
    ("conv_int8_odd_k_int32", conv("int8", odt="int32", cin=3, cout=151, hw=(6, 9), kernel=(3, 3), stride=(2, 1))),
    ("conv_int8_depthwise_big", conv("int8", odt="int32", cin=32, cout=64, groups=32, hw=(31, 29),
                                     pad=(1, 1, 1, 1), bias_dt="int32", act="clip", act_lo=-900, act_hi=700)),
    ("pool_max_big", isa.Pool2d(id=0, mode="max", x=L(0, 0, (2, 24, 41, 40)), out=L(0, 0, (2, 24, 21, 20)),
                                kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1))),
    ("pool_avg_int8_big", isa.Pool2d(id=0, mode="avg", x=L(0, 0, (1, 70, 30, 30), "int8"),
                                     out=L(0, 0, (1, 70, 10, 10), "int8"), kernel=(3, 3), stride=(3, 3),
                                     multiplier=1908874354, shift=34)),
    ("requant_big", isa.Requant(id=0, x=L(0, 0, (2, 5, 80, 90), "int32"), out=L(0, 0, (2, 5, 80, 90), "int8"),
                                multiplier=(1 << 30, 1234567890, 7, 99, 1 << 20), shift=(24, 30, 0, 5, 40),
                                zero_point=-3)),
    ("requant_int8_to_uint8_big", isa.Requant(id=0, x=L(0, 0, (1, 3, 200, 200), "int8"),
                                              out=L(0, 0, (1, 3, 200, 200), "uint8"), multiplier=(1 << 30,),
                                              shift=(29,), zero_point=128)),
    ("eltwise_add_int8_big", isa.Eltwise(id=0, op="add", a=L(0, 0, (1, 16, 70, 70), "int8"),
                                         b=L(0, 0, (1, 16, 70, 70), "int8"), out=L(0, 0, (1, 16, 70, 70), "int8"))),
    ("eltwise_max_int32_scalar_big", isa.Eltwise(id=0, op="max", a=L(0, 0, (1, 16, 70, 70), "int32"), scalar=-5,
                                                 out=L(0, 0, (1, 16, 70, 70), "int8"))),
    ("eltwise_mul_f32_big", isa.Eltwise(id=0, op="mul", a=L(0, 0, (1, 32, 70, 70)), b=L(0, 0, (1, 32, 70, 70)),
                                        out=L(0, 0, (1, 32, 70, 70)))),
    ("act_sigmoid_big", isa.Activation(id=0, op="sigmoid", x=L(0, 0, (1, 32, 70, 70)), out=L(0, 0, (1, 32, 70, 70)))),
    ("act_clip_big", isa.Activation(id=0, op="clip", x=L(0, 0, (1, 32, 70, 70)), out=L(0, 0, (1, 32, 70, 70)),
                                    lo=-0.3, hi=0.7)),
    ("lut_int8_big", isa.Lut(id=0, x=L(0, 0, (1, 16, 70, 70), "int8"), table=L(0, 0, (1, 1, 1, 256), "int8"),
                             out=L(0, 0, (1, 16, 70, 70), "int8"))),
    ("matmul_f32_blocks", mm(b=2, bb=1, m=149, k=300, n=37, bias_dt="f32", act="relu")),
    ("matmul_bf16_to_f32", mm("bf16", odt="f32", b=1, m=7, k=513, n=70)),
    ("matmul_int8_panels", mm("int8", odt="int32", b=1, m=50, k=701, n=800)),
    ("matmul_int8_blocks", mm("int8", odt="int32", b=2, bb=2, m=150, k=1025, n=33, bias_dt="int32")),
]


@pytest.mark.parametrize("name, inst", SHAPES, ids=[s[0] for s in SHAPES])
def test_threaded_equals_serial_and_reference(name, inst, threads):
    inst.check(__import__("torch_tpu.targets", fromlist=["x"]).get_target("bm1684x"))
    ops = operands(inst, seed=len(name))
    want = kernels_ref.KERNELS[inst.OPCODE](inst, ops)
    levels = simd_levels()
    try:
        for lv in levels:
            _cmodel.set_simd(lv)
            threads(1)
            serial = kernels_c.KERNELS[inst.OPCODE](inst, ops)
            for n in (2, 3, 7):
                threads(n)
                got = kernels_c.KERNELS[inst.OPCODE](inst, ops)
                assert np.array_equal(got.view(np.uint8), serial.view(np.uint8)), f"{lv}: {n} threads != 1 thread"
            check(inst, serial, want, SUM, ops)
    finally:
        _cmodel.set_simd(levels[-1])


def test_int8_gemm_is_exact_at_the_extremes(threads):
    """All -128 / 127 operands (the largest int16 pair products) and K odd: int32 sums exact."""
    inst = mm("int8", odt="int32", b=1, m=13, k=777, n=45)
    a = np.full((1, 13, 1, 777), -128, np.int8)
    b = np.where(np.arange(777 * 45).reshape(1, 777, 1, 45) % 3 == 0, 127, -128).astype(np.int8)
    want = kernels_ref.matmul(inst, [a, b, None])
    for n in (1, 2):
        threads(n)
        for lv in simd_levels():
            _cmodel.set_simd(lv)
            assert np.array_equal(kernels_c.matmul(inst, [a, b, None]), want)


def test_set_threads_rejects_negative_and_reports_count(threads):
    threads(3)
    assert kernels_c.threads() == 3
    threads(0)
    assert kernels_c.threads() >= 1
    with pytest.raises(ValueError, match="thread count"):
        threads(-1)


COPY_CASES = [  # (dst desc, src desc, shape, esize): plane, row and element paths, broadcast, 2/1-byte elements
    ((0, 0, 512, 64, 8, 1), (0, 4096, 512, 64, 8, 1), (2, 8, 8, 8), 4),
    ((0, 0, 600, 70, 10, 1), (0, 3000, 512, 64, 8, 1), (2, 7, 7, 8), 2),
    ((0, 0, 96, 24, 4, 1), (0, 2000, 1, 4, 0, 2), (3, 4, 6, 4), 4),
    ((0, 0, 500, 50, 10, 2), (0, 3000, 64, 16, 4, 1), (2, 4, 4, 4), 1),
]


@pytest.mark.parametrize("case", COPY_CASES)
def test_copy_paths_match_numpy(case, threads):
    dd, sd, shape, es = case
    gen = np.random.default_rng(5)
    src = gen.integers(0, 255, 8192, dtype=np.uint8)
    for n in (1, 2):
        threads(n)
        a, b = np.zeros(8192, np.uint8), np.zeros(8192, np.uint8)
        _cmodel.copy(a, dd, src, sd, shape, es)
        numpy_copy(b, dd, src, sd, shape, es)
        assert np.array_equal(a, b)


def test_large_lane_copy_threaded_matches_numpy(threads):
    """Over the parallel threshold (1 MiB): tile of 70 channels into 64 lanes and back."""
    lanes, lane_bytes = 64, 1 << 16
    local = np.zeros(lanes * lane_bytes, np.uint8)
    shape = (1, 70, 64, 64)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    desc = (1, 5, 0, lanes, lane_bytes, 64)
    threads(2)
    _cmodel.copy(local, desc, x, dense_desc(shape), shape, 4)
    ref = np.zeros_like(local)
    numpy_copy(ref, desc, x, dense_desc(shape), shape, 4)
    assert np.array_equal(local, ref)
    back = np.empty_like(x)
    _cmodel.copy(back, dense_desc(shape), local, desc, shape, 4)
    assert np.array_equal(back, x)


def _copy_program(weight: torch.Tensor, read_unwritten: bool):
    b = ProgramBuilder("bm1684x")
    x = b.input("x", (1, 4, 4, 4), "f32")
    w = b.weight(weight, "f32")
    xl, wl = b.load(x), b.load(w)
    if read_unwritten:   # a DDR tensor nothing in this program writes (the first program's output address)
        junk = b.load(b.ddr((1, 4, 4, 4), "f32"))
        y = b.compute(isa.Eltwise, (1, 4, 4, 4), "f32", op="add", a=xl, b=junk)
    else:
        y = b.compute(isa.Eltwise, (1, 4, 4, 4), "f32", op="mul", a=xl, b=wl)
    b.output("y", b.store(y))
    return b.build()


def test_reused_memory_starts_zeroed_and_takes_new_weights():
    """Runs reuse the memory of earlier runs of the same size: it must look fresh every time."""
    x = torch.randn(1, 4, 4, 4)
    w1, w2 = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    p1, p2, p3 = _copy_program(w1, False), _copy_program(w2, False), _copy_program(w1, True)
    assert p1.ddr_bytes == p2.ddr_bytes == p3.ddr_bytes
    for _ in range(2):
        assert torch.equal(run_program(p1, {"x": x}, kernels="c")["y"], x * w1)
        assert torch.equal(run_program(p2, {"x": x}, kernels="c")["y"], x * w2)
        assert torch.equal(run_program(p3, {"x": x}, kernels="c")["y"], x)   # unwritten DDR reads as zeros


def test_reference_and_c_memories_are_not_mixed():
    x = torch.randn(1, 4, 4, 4)
    w = torch.randn(1, 4, 4, 4)
    p = _copy_program(w, False)
    for kernels in ("reference", "c", "reference"):
        assert torch.equal(run_program(p, {"x": x}, kernels=kernels)["y"], x * w)


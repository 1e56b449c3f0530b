"""Timing model: golden cycle counts of single instructions on bm1684x, and the two-engine schedule."""

import pytest

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.cmodel.timing import dma_bursts, instruction_cost, simulate_timing
from torch_tpu.targets import get_target

T = get_target("bm1684x")   # 1 GHz, 64 lanes, align 64, DDR 64 B/cycle, DMA latency 100, compute latency 20


def L(shape, dt="f32", lane=0, addr=0):
    return LocalTensor(lane, addr, shape, DType.parse(dt))


def test_bm1684x_numbers():
    assert (T.freq_ghz, T.ddr_gbps, T.lanes) == (1.0, 64.0, 64)
    assert [T.macs_per_cycle[p] for p in ("int8", "f16", "bf16", "f32")] == [256, 128, 128, 16]
    assert [T.elem_ops_per_cycle[p] for p in ("int8", "f16", "f32")] == [64, 32, 16]


def test_dma_contiguous_golden():
    shape = (1, 64, 56, 56)
    inst = isa.DmaLoad(id=0, src=DdrTensor.contiguous(0, shape, DType.F32), dst=L(shape))
    c = instruction_cost(inst, T)
    assert dma_bursts(inst.src, T) == (1, 12544)            # one 802816-byte run = 12544 bursts
    assert (c.engine, c.cycles, c.ddr_read, c.ddr_write) == ("dma", 100 + 12544, 802816, 0)


def test_dma_short_rows_cost_whole_bursts():
    # W slice of 8 f32 (32 B) out of rows of 56: 64 * 56 rows, each a full 64-byte burst
    src = DdrTensor(0, (1, 64, 56, 8), (64 * 56 * 56, 56 * 56, 56, 1), DType.F32)
    inst = isa.DmaLoad(id=0, src=src, dst=L((1, 64, 56, 8)))
    assert dma_bursts(src, T) == (3584, 3584)
    assert instruction_cost(inst, T).cycles == 100 + 3584
    # 100-byte rows (25 f32) cost 2 bursts each
    src2 = DdrTensor(0, (1, 2, 3, 25), (300, 100, 32, 1), DType.F32)
    assert dma_bursts(src2, T) == (6, 12)


def test_dma_copy_counts_both_sides():
    src = DdrTensor(0, (1, 4, 8, 16), (512, 1, 64, 4), DType.F32)   # permute-like: every element its own row
    dst = DdrTensor.contiguous(4096, (1, 4, 8, 16), DType.F32)
    c = instruction_cost(isa.DmaCopy(id=0, src=src, dst=dst), T)
    assert c.cycles == 100 + 512 + 32 and (c.ddr_read, c.ddr_write) == (2048, 2048)


@pytest.mark.parametrize("dt, cout, want", [
    # per lane: groups * eu(Ho*Wo) * Cin*kh*kw / rate ; eu(3136 f32) = 3136, K = 64*9 = 576
    ("f32", 64, 20 + 3136 * 576 // 16),                 # 112916
    ("bf16", 64, 20 + 3136 * 576 // 128),               # 14132
    ("f32", 65, 20 + 2 * 3136 * 576 // 16),             # lane waste: 65 channels take two groups
])
def test_conv_golden(dt, cout, want):
    odt = dt
    inst = isa.Conv2d(id=0, x=L((1, 64, 56, 56), dt), w=L((1, cout, 1, 576), dt), out=L((1, cout, 56, 56), odt),
                      kernel=(3, 3), pad=(1, 1, 1, 1))
    assert instruction_cost(inst, T).cycles == want


def test_conv_int8_golden_and_alignment_waste():
    # int8 in, int32 out 1x64x7x7: eu(49 int32 = 196 B -> 256 B) = 64 elements; K = 64 * 9
    inst = isa.Conv2d(id=0, x=L((1, 64, 7, 7), "int8"), w=L((1, 64, 1, 576), "int8"), out=L((1, 64, 7, 7), "int32"),
                      kernel=(3, 3), pad=(1, 1, 1, 1))
    assert instruction_cost(inst, T).cycles == 20 + 64 * 576 // 256    # 164


def test_matmul_golden():
    # M = 128 rows on lanes -> 2 groups; eu(512 bf16) = 512; K = 256; 128 MACs/cycle/lane
    inst = isa.MatMul(id=0, a=L((1, 128, 1, 256), "bf16"), b=L((1, 256, 1, 512), "bf16"),
                      out=L((1, 128, 1, 512), "bf16"))
    assert instruction_cost(inst, T).cycles == 20 + 2 * 512 * 256 // 128   # 2068


def test_elementwise_golden():
    t = L((1, 64, 7, 7))
    # eu(49 f32 = 196 B -> 256 B) = 64 elements / 16 per cycle
    assert instruction_cost(isa.Activation(id=0, op="relu", x=t, out=t), T).cycles == 20 + 4
    assert instruction_cost(isa.Activation(id=0, op="sigmoid", x=t, out=t), T).cycles == 20 + 16   # 4 ops
    t8 = L((1, 128, 16, 16), "int8")   # 2 groups * 256 elements / 64 per cycle
    assert instruction_cost(isa.Eltwise(id=0, op="add", a=t8, b=t8, out=t8), T).cycles == 20 + 8
    p = isa.Pool2d(id=0, mode="max", x=L((1, 64, 8, 8)), out=L((1, 64, 4, 4)), kernel=(2, 2), stride=(2, 2))
    assert instruction_cost(p, T).cycles == 20 + 16 * 4 // 16


def test_two_engines_overlap_subject_to_dependencies():
    shape = (1, 64, 16, 16)
    ddr = DdrTensor.contiguous(0, shape, DType.F32)           # 65536 B -> 1024 cycles + 100
    a, b_, out = L(shape), L(shape, addr=1024), L(shape, addr=2048)
    insts = [
        isa.DmaLoad(id=0, layer="l1", src=ddr, dst=a),
        isa.DmaLoad(id=1, layer="l2", src=ddr, dst=b_),
        isa.Activation(id=2, deps=(0,), layer="l1", op="exp", x=a, out=out),   # 20 + 256*4/16 = 84
        isa.Eltwise(id=3, deps=(1, 2), layer="l2", op="add", a=out, b=b_, out=out),   # 20 + 16 = 36
        isa.DmaStore(id=4, deps=(3,), layer="l2", src=out, dst=ddr),
    ]
    p = simulate_timing(insts, T, min_ddr_bytes=2 * 65536)
    starts = {e.id: (e.start, e.end) for e in p.events}
    assert starts[0] == (0, 1124) and starts[1] == (1124, 2248)
    assert starts[2] == (1124, 1208)            # overlaps the second load
    assert starts[3] == (2248, 2284)            # waits for load 1
    assert starts[4] == (2284, 3408)
    assert p.total_cycles == 3408
    assert p.dma_busy == 3 * 1124 and p.compute_busy == 84 + 36
    assert p.ddr_read_bytes == 2 * 65536 and p.ddr_write_bytes == 65536
    assert p.layers["l1"].dma_cycles == 1124 and p.layers["l1"].compute_cycles == 84
    assert p.layers["l2"].start == 1124 and p.layers["l2"].end == 3408
    assert p.roofline_cycles == 2048 and p.roofline_ratio == pytest.approx(3408 / 2048)
    assert p.latency_s == pytest.approx(3408e-9)
    d = p.as_dict()
    assert d["total_cycles"] == 3408 and d["layers"]["l2"]["end"] == 3408

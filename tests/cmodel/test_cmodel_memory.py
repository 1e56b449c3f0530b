"""Per-lane local memory and the checked copy: C == numpy reference, layout, bounds."""

import numpy as np
import pytest
import torch

from torch_tpu.cmodel.memory import Memory, _cmodel, numpy_copy
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.targets import get_target

T = get_target("bm1684x")
COPIES = [pytest.param(numpy_copy, id="numpy"), pytest.param(_cmodel.copy, id="c")]


@pytest.mark.parametrize("copy", COPIES)
def test_lane_layout_formula(copy):
    mem = Memory(T, 4096, use_c=False)
    t = LocalTensor(lane=61, addr=128, shape=(2, 5, 3, 3), dtype=DType.INT8)
    data = np.arange(90, dtype=np.int8).reshape(t.shape)
    copy(mem.local, mem.lane_desc(t), data, (0, 0, 45, 9, 3, 1), t.shape, 1)
    nstride = 2 * 64   # channels on lanes 61, 62, 63, 0, 1: two groups, cstride align_up(9, 64) = 64
    for n in range(2):
        for c in range(5):
            lane, group = (61 + c) % 64, (61 + c) // 64
            base = 128 + n * nstride + group * 64
            assert mem.local[lane, base:base + 9].view(np.int8).tolist() == data[n, c].reshape(-1).tolist()
    untouched = np.ones(64, bool)
    untouched[[61, 62, 63, 0, 1]] = False
    assert not mem.local[untouched].any()


def test_c_copy_matches_numpy_on_random_strided_views():
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        shape = tuple(int(v) for v in torch.randint(1, 6, (4,), generator=gen))
        esize = [1, 2, 4][trial % 3]
        strides = tuple(int(v) for v in torch.randint(0, 40, (4,), generator=gen))
        lane = int(torch.randint(0, 64, (1,), generator=gen))
        ddr = torch.randint(0, 256, (8192,), generator=gen, dtype=torch.uint8).numpy()
        ldesc = (1, lane, 64 * (trial % 4), 64, 4096, 64)   # small lanes keep the test fast
        results = []
        for copy in (numpy_copy, _cmodel.copy):
            local = np.zeros((64, 4096), np.uint8)
            copy(local, ldesc, ddr, (0, 3 * esize) + strides, shape, esize)
            back = np.zeros(8192, np.uint8)
            dense = (shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1)
            copy(back, (0, 100) + dense, local, ldesc, shape, esize)
            results.append((local, back))
        assert np.array_equal(results[0][0], results[1][0])
        assert np.array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("copy", COPIES)
@pytest.mark.parametrize("dst_desc, message", [
    ((1, 0, T.local_mem_bytes - 64, 64, T.local_mem_bytes, 64), "exceed the lane size"),
    ((1, 64, 0, 64, T.local_mem_bytes, 64), "lane 64 out of range"),
    ((1, 0, 32, 64, T.local_mem_bytes, 64), "not aligned"),
    ((0, 4000, 16, 4, 2, 1), "outside the memory"),
    ((0, 0, -1, 4, 2, 1), "negative stride"),
])
def test_out_of_range_copies_raise_before_writing(copy, dst_desc, message):
    src = np.arange(64, dtype=np.float32)
    dst = np.zeros((64, T.local_mem_bytes) if dst_desc[0] == 1 else 4096, np.uint8)
    with pytest.raises(ValueError, match=message):
        copy(dst, dst_desc, src, (0, 0, 16, 4, 2, 1), (2, 4, 2, 2), 4)   # 2 x 64 B per lane: past the end
    assert not dst.any()


def test_memory_read_write_round_trip_every_dtype():
    mem = Memory(T, 1024, use_c=True)
    for i, dt in enumerate(DType):
        t = LocalTensor(lane=(i * 13) % 64, addr=256 * i, shape=(1, 70, 2, 3), dtype=dt)
        data = np.arange(t.numel).astype(dt.numpy).reshape(t.shape)
        mem.write_local(t, data)
        assert np.array_equal(mem.read_local(t), data)


def test_dma_broadcast_with_zero_stride():
    mem = Memory(T, 1024, use_c=True)
    mem.write_ddr(0, np.array([1.5, 2.5], np.float32))
    t = LocalTensor(0, 0, (1, 64, 1, 2), DType.F32)
    mem.dma(DdrTensor(0, (1, 64, 1, 2), (0, 0, 0, 1), DType.F32), t)   # the same row on every lane
    assert np.array_equal(mem.local[:, :8].view(np.float32), np.tile([1.5, 2.5], (64, 1)).astype(np.float32))


def test_c_extension_is_built():
    from torch_tpu.cmodel.memory import c_available
    assert c_available(), "build it: pip install -e . (setup.py compiles torch_tpu/cmodel/csrc)"
    assert _cmodel.simd() in ("generic", "avx2", "avx512", "avx512vnni")

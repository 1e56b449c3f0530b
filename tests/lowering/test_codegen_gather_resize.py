"""Codegen of ``tpu.gather`` (torch.gather along any dim), nearest resizes by any factor and linears whose row
batch does not fit local memory, each against the TPU graph (outputs and every op on the Program's own probed
inputs); tiling is forced on ``tiny``, a made-up f32 target of 8 lanes x 2 KiB."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F

from _codegen_helpers import assert_close, compile_module
from _codegen_local import check_layers, program_feed
from torch_tpu.cmodel import isa, run_program
from torch_tpu.errors import UnsupportedOpError
from torch_tpu.lowering.codegen.ops_resize import _axis_groups
from torch_tpu.targets import PRESETS


@pytest.fixture
def tiny(monkeypatch) -> str:
    """An f32/bf16 target with 8 lanes of 2 KiB, registered for the test only."""
    t = dataclasses.replace(PRESETS["bm1684x"], name="tiny", lanes=8, local_mem_bytes=2048, align_bytes=16)
    monkeypatch.setitem(PRESETS, "tiny", t)
    return "tiny"


def check(model, inputs, precisions=("f32", "bf16"), target="bm1684x", exact=False):
    """Outputs (exactly equal when ``exact``) and every op of the Program vs the TPU graph, C and reference
    kernels; returns {precision: Program}."""
    progs = {}
    for p in precisions:
        tpu, prog, _ = compile_module(model.eval(), inputs, p, target)
        with torch.no_grad():
            ref = tpu(*inputs)
        ref = tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)
        for k in ("c", "reference"):
            out = run_program(prog, program_feed(prog, inputs), kernels=k)
            for i, r in enumerate(ref):
                o = out[f"output{i}"].to(r.dtype)
                if exact or not r.dtype.is_floating_point:
                    assert torch.equal(o, r), (p, k, i)
                else:
                    assert_close(o, r, p)
            check_layers(tpu, prog, inputs, p, k)
        progs[p] = prog
    return progs


def count(prog, cls) -> int:
    return sum(isinstance(i, cls) for i in prog.instructions)


# ---- gather ------------------------------------------------------------------------------------------------

class Gather(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x, idx):
        return torch.gather(x * 2.0, self.dim, idx)


@pytest.mark.parametrize("dim, ishape", [(0, (2, 4, 7)), (1, (3, 9, 5)), (2, (2, 5, 11)), (-1, (3, 1, 1))])
def test_gather_runtime_index(dim, ishape):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7)
    idx = torch.randint(0, x.shape[dim], ishape)
    prog = check(Gather(dim), [x, idx], exact=True)["f32"]
    assert count(prog, isa.Gather) >= 1 and count(prog, isa.Select) == 2


class GatherConst(torch.nn.Module):
    """Constant x with a run-time index, and a run-time x with a constant index."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.randn(4, 6))
        self.register_buffer("idx", torch.tensor([[5, 0, 3], [1, 1, 4]]))

    def forward(self, x, idx):
        return torch.gather(self.table, 1, idx), torch.gather(x + 1.0, 1, self.idx)


def test_gather_constant_operands():
    torch.manual_seed(0)
    check(GatherConst(), [torch.randn(2, 6), torch.randint(0, 6, (4, 3))], exact=True)


def test_gather_index_out_of_range_reads_zero():
    """The reference op raises; the Program gives 0 for an index outside [0, size) (like embedding)."""
    x, idx = torch.randn(2, 5), torch.tensor([[0, 4, 2], [1, 3, 3]])
    _, prog, _ = compile_module(Gather(1), [x, idx], "f32")
    bad = torch.tensor([[-1, 4, 5], [1, 2 ** 31 - 1, -7]], dtype=torch.int32)
    out = run_program(prog, {prog.inputs[0].name: x, prog.inputs[1].name: bad})["output0"]
    want = torch.tensor([[0.0, x[0, 4] * 2, 0.0], [x[1, 1] * 2, 0.0, 0.0]])
    assert torch.equal(out, want)


def test_gather_constant_index_out_of_range_is_refused():
    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("idx", torch.tensor([[0, 6]]))

        def forward(self, x):
            return torch.gather(x, 1, self.idx)

    with pytest.raises(UnsupportedOpError, match="tpu.gather.*outside"):
        compile_module(Bad(), [torch.randn(1, 6)], "f32")


def test_gather_tiled_in_chunks_and_blocks(tiny):
    """tiny: 400 gathered elements are cut into chunks, and the 2 x 300 x 3 source into blocks per chunk."""
    torch.manual_seed(0)
    x = torch.randn(2, 300, 3)
    idx = torch.randint(0, 300, (2, 200, 3))
    idx[0, 0, 0], idx[1, -1, -1] = 299, 0
    prog = check(Gather(1), [x, idx], target=tiny, exact=True)["f32"]
    gathers = [i for i in prog.instructions if isinstance(i, isa.Gather)]
    assert len({i.base for i in gathers}) > 2 and any(i.prev is not None for i in gathers)
    assert count(prog, isa.DmaStore) > 2 + 2  # several output chunks (the x * 2 op stores some too)


# ---- nearest resize ------------------------------------------------------------------------------------------

def _expand(groups, n_out: int) -> list[int | None]:
    src: list[int | None] = [None] * n_out
    for g in groups:
        for t in range(g.count):
            for j in range(g.run):
                o = g.o0 + g.step_o * t + j
                assert src[o] is None, "two groups write one output"
                src[o] = g.s0 + g.step_s * t
    return src


def test_axis_groups_cover_monotone_maps():
    """The groups reproduce the map exactly: torch's rule for many size pairs, and random monotone maps."""
    rng = random.Random(0)
    maps = [[(o * n_in) // n_out for o in range(n_out)] for n_in in range(1, 20) for n_out in range(1, 20)]
    for _ in range(200):
        n = rng.randint(1, 40)
        m = sorted(rng.randint(0, 30) for _ in range(n))
        maps.append(m)
    for m in maps:
        assert _expand(_axis_groups(m), len(m)) == m
    assert len(_axis_groups([o // 3 for o in range(12)])) == 1       # whole repeat
    assert len(_axis_groups([2 * o for o in range(6)])) == 1          # whole step
    assert len(_axis_groups([(o * 2) // 3 for o in range(9)])) == 2   # 2 -> 3: two phases


class Nearest(torch.nn.Module):
    def forward(self, x):
        return (F.interpolate(x, size=(5, 4), mode="nearest"),            # 3 -> 5 rows
                F.interpolate(x, scale_factor=1.5, mode="nearest"),       # 3x4 -> 4x6
                F.interpolate(x, size=(2, 3), mode="nearest"),            # non-integer down
                F.interpolate(x, scale_factor=(2.5, 0.75), mode="nearest", recompute_scale_factor=False),
                F.interpolate(x, size=(6, 8), mode="nearest"),            # whole factors
                F.interpolate(x, size=(13, 11), mode="nearest"))          # no period: through the scratch


def test_upsample_nearest_any_factor():
    torch.manual_seed(0)
    progs = check(Nearest(), [torch.randn(1, 5, 3, 4)], exact=True)
    assert count(progs["f32"], isa.DmaCopy) > 6


def test_upsample_nearest_staged_through_scratch():
    """Coprime sizes: the W resize goes to the op's DDR scratch, the H resize copies from it."""
    torch.manual_seed(0)

    class M(torch.nn.Module):
        def forward(self, x):
            return F.interpolate(x + 0.0, size=(23, 29), mode="nearest") * 1.0

    tpu, prog, plan = compile_module(M(), [torch.randn(2, 3, 17, 19)], "f32")
    assert len(plan.scratch) == 1
    check(M(), [torch.randn(2, 3, 17, 19)], exact=True)
    (scratch,) = plan.scratch.values()
    copies = [i for i in prog.instructions if isinstance(i, isa.DmaCopy)]
    assert any(i.dst.addr >= scratch and i.dst.addr < scratch + 2 * 3 * 17 * 29 * 4 for i in copies)
    assert len(copies) <= 23 + 29 + 4


# ---- linear with row blocks ----------------------------------------------------------------------------------

def test_linear_row_batch_cut_into_row_blocks(tiny):
    """tiny: 301 rows (not a multiple of 8 lanes: one row batch) do not fit a lane even with K cut to 8 (38
    channel groups of 32 bytes, twice), so the rows are cut into blocks, each streaming the weight in blocks."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(40, 24), torch.nn.ReLU())
    prog = check(m, [torch.randn(301, 40)], precisions=("f32",), target=tiny)["f32"]
    rows = {i.a.shape[1] for i in prog.instructions if isinstance(i, isa.MatMul)}
    assert len(rows) >= 2 and max(rows) < 301


def test_codegen_restores_torch_threads():
    """codegen runs its handlers on one intra-op thread and gives the process its thread count back."""
    before = torch.get_num_threads()
    compile_module(Gather(1), [torch.randn(2, 5), torch.tensor([[0, 4], [1, 3]])], "f32")
    assert torch.get_num_threads() == before

"""Codegen tiled along W with halos: float conv (groups, depthwise, strides, dilations, asymmetric pads), max/avg
pools (``count_include_pad`` at the borders) and broadcast element-wise ops whose single output row does not
fit local memory. Hand-built TPU graphs, each Program checked against the graph's reference ops (outputs, and
every op on the Program's own probed inputs: f32 within 1e-6 or the K-term summation bound, bf16 within one
rounding step), C and reference kernels. W tiling is forced on ``tiny`` (8 lanes x 2 KiB); the last tests run
a 1x3x1x100000 row on bm1684x, which failed with "one output row does not fit" before."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from _codegen_helpers import assert_close
from _codegen_local import check_layers, program_feed
from torch_tpu.cmodel import isa, run_program
from torch_tpu.errors import ProgramError
from torch_tpu.graph.names import STABLE_NAME
from torch_tpu.lowering.builder import GraphBuilder
from torch_tpu.lowering.codegen import codegen
from torch_tpu.lowering.codegen.context import plan_tiles
from torch_tpu.targets import PRESETS

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}


@pytest.fixture
def tiny(monkeypatch) -> str:
    """An f32/bf16 target with 8 lanes of 2 KiB, registered for the test only."""
    t = dataclasses.replace(PRESETS["bm1684x"], name="tiny", lanes=8, local_mem_bytes=2048, align_bytes=16)
    monkeypatch.setitem(PRESETS, "tiny", t)
    return "tiny"


class OpGraph:
    """A hand-built TPU graph (exact control of 4-sided pads and shapes) of one precision."""

    def __init__(self, precision: str):
        self.dtype = DTYPES[precision]
        self.precision = precision
        self.b = GraphBuilder()
        self.feeds: list[torch.Tensor] = []

    def input(self, name: str, *shape: int):
        t = torch.randint(-128, 128, shape, dtype=torch.int8) if self.dtype == torch.int8 else torch.randn(shape)
        t = t.to(self.dtype)
        node = self.b.graph.placeholder(name)
        with self.b.mode:
            node.meta["val"] = torch.empty(shape, dtype=self.dtype)
        node.meta[STABLE_NAME] = name
        self.feeds.append(t)
        return node

    def const(self, name: str, *shape: int, scale: float = 1.0):
        return self.b.add_const((torch.randn(shape) * scale).to(self.dtype), name)

    def op(self, name: str, *args, layer: str | None = None):
        return self.b.emit(name, args, None, layer or name, None)

    def check(self, out, target: str, kernels=("c", "reference")):
        """Codegen for ``target``; outputs and every op vs the graph's reference ops; returns the Program."""
        self.b.graph.output(out)
        gm = self.b.finish()
        prog = codegen(gm, target)
        with torch.no_grad():
            ref = gm(*self.feeds)
        for k in kernels:
            got = run_program(prog, program_feed(prog, self.feeds), kernels=k)["output0"]
            if self.precision == "int8":
                assert torch.equal(got, ref), k
            else:
                assert_close(got.to(ref.dtype), ref, self.precision)
            check_layers(gm, prog, self.feeds, self.precision, k)
        return prog


def of(prog, cls) -> list:
    return [i for i in prog.instructions if isinstance(i, cls)]


def span(k: int, s: int, d: int, cols: int) -> int:
    """Input columns that ``cols`` output columns read (the halo included)."""
    return (cols - 1) * s + d * (k - 1) + 1


def assert_w_tiled(insts, out_shape, k: int, s: int, d: int, pl: int, pr: int) -> None:
    """The tiles cover the output once, some cut W, only border tiles are padded left/right (right: up to the
    op's pad, what the last window never reads is left out), an inner tile loads exactly its columns' span, and
    consecutive tiles use two buffer sets."""
    assert sum(i.out.numel for i in insts) == torch.Size(out_shape).numel()
    assert any(i.out.shape[3] < out_shape[3] for i in insts)
    assert all(i.pad[2] in (0, pl) and 0 <= i.pad[3] <= pr for i in insts)  # the right pad may have slack
    inner = [i for i in insts if i.pad[2:] == (0, 0) and i.out.shape[3] < out_shape[3]]
    assert inner and all(i.x.shape[3] == span(k, s, d, i.out.shape[3]) for i in inner)
    assert insts[0].x.addr != insts[1].x.addr                                       # double-buffered


# ---- conv --------------------------------------------------------------------------------------------------

CONV_CASES = {  # name: (x shape, cout, kernel, stride, pad [t, b, l, r], dilation, groups, act)
    "odd_w": ((1, 4, 3, 301), 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "none"),
    "stride2_asym": ((2, 3, 4, 257), 5, (2, 3), (2, 2), (0, 1, 2, 1), (1, 1), 1, "relu"),
    "dilation2": ((1, 4, 3, 199), 4, (3, 3), (1, 1), (2, 2, 2, 0), (2, 2), 1, "relu6"),
    "depthwise": ((1, 8, 5, 211), 8, (3, 5), (1, 2), (1, 1, 0, 2), (1, 1), 8, "none"),
    "grouped_dil_stride": ((1, 6, 2, 401), 4, (1, 3), (1, 2), (0, 0, 3, 2), (1, 3), 2, "none"),
    "cout_blocks": ((1, 8, 2, 157), 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu"),  # weights > 1 lane
}


@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_w_tiles_with_halos(tiny, case, precision):
    xs, cout, k, stride, pad, dil, groups, act = CONV_CASES[case]
    torch.manual_seed(0)
    g = OpGraph(precision)
    x = g.input("x", *xs)
    w = g.const("w", cout, xs[1] // groups, *k, scale=0.3)
    b = g.const("b", cout)
    y = g.op("conv2d", x, w, b, list(stride), list(pad), list(dil), groups, act, 0.0, 0.0, layer="conv")
    prog = g.check(y, tiny)
    conv = of(prog, isa.Conv2d)
    assert all(c.pad[0] in (0, pad[0]) and c.pad[1] in (0, pad[1]) for c in conv)
    assert_w_tiled(conv, tuple(y.meta["val"].shape), k[1], stride[1], dil[1], pad[2], pad[3])
    if case == "cout_blocks" and precision == "f32":  # 64x8x3x3 f32 weights (2304 B/lane) exceed a lane
        assert all(c.out.shape[1] < cout for c in conv)


def test_conv_weights_and_one_column_too_big_names_the_layer(tiny):
    """A single output channel's weights (64 x 3 x 3 f32 = 2304 bytes) exceed a 2 KiB lane."""
    g = OpGraph("f32")
    x = g.input("x", 1, 64, 2, 40)
    y = g.op("conv2d", x, g.const("w", 1, 64, 3, 3), None, [1, 1], [1, 1, 1, 1], [1, 1], 1, "none", 0.0, 0.0,
             layer="stem.conv")
    g.b.graph.output(y)
    with pytest.raises(ProgramError, match="stem.conv.*one output column"):
        codegen(g.b.finish(), tiny)


# ---- pools -------------------------------------------------------------------------------------------------

POOL_CASES = {  # name: (mode, x shape, kernel, stride, pad [t, b, l, r], count_include_pad)
    "max_asym": ("max", (1, 5, 3, 407), (3, 3), (1, 2), (1, 0, 0, 1), True),
    "avg_cip": ("avg", (2, 3, 4, 333), (2, 3), (2, 2), (1, 0, 1, 1), True),
    "avg_no_cip": ("avg", (1, 8, 3, 301), (3, 3), (1, 1), (1, 1, 1, 1), False),
}


@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pool_w_tiles_keep_border_windows(tiny, case, precision):
    mode, xs, k, stride, pad, cip = POOL_CASES[case]
    torch.manual_seed(1)
    g = OpGraph(precision)
    x = g.input("x", *xs)
    if mode == "max":
        y = g.op("max_pool2d", x, list(k), list(stride), list(pad), [1, 1], False, layer="pool")
    else:
        y = g.op("avg_pool2d", x, list(k), list(stride), list(pad), False, cip, 0, layer="pool")
    prog = g.check(y, tiny)
    pools = of(prog, isa.Pool2d)
    assert all(p.count_include_pad == cip for p in pools)
    assert_w_tiled(pools, tuple(y.meta["val"].shape), k[1], stride[1], 1, pad[2], pad[3])


def test_int8_max_pool_w_tiles_exact(tiny):
    """The int8 max pool shares the float handler: W tiles, bit-exact."""
    torch.manual_seed(4)
    g = OpGraph("int8")
    x = g.input("x", 1, 8, 3, 1503)
    y = g.op("max_pool2d_int8", x, [3, 2], [1, 2], [1, 1, 1, 0], [1, 1], False, layer="pool")
    prog = g.check(y, tiny)
    assert_w_tiled(of(prog, isa.Pool2d), tuple(y.meta["val"].shape), 2, 2, 1, 1, 0)


# ---- element-wise ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_broadcast_eltwise_long_rows_w_tiled(tiny, precision):
    """(x * s[c] + y) -> where(> t[c]) -> sigmoid over 1x3x2x1001 rows: the per-channel operands keep the 4-D
    views (stride-0 broadcast), so each row of 3 inputs + output exceeds 2 KiB and is cut along W."""
    torch.manual_seed(2)
    g = OpGraph(precision)
    x, y = g.input("x", 1, 3, 2, 1001), g.input("y", 1, 3, 2, 1001)
    s, t = g.const("s", 1, 3, 1, 1), g.const("t", 1, 3, 1, 1)
    z = g.op("add", g.op("mul", x, s, layer="mul"), y, layer="add")
    z = g.op("where", g.op("gt", z, t, layer="gt"), z, y, layer="where")
    prog = g.check(g.op("sigmoid", g.op("sub", z, t, layer="sub"), layer="sigmoid"), tiny)
    for layer in ("mul", "gt", "where", "sub"):
        computes = [i for i in prog.instructions if i.layer == layer and i.ENGINE == "compute"]
        assert len(computes) > 2 and all(i.out.shape[3] < 1001 for i in computes), layer
        assert sum(i.out.numel for i in computes) == 3 * 2 * 1001


# ---- plan_tiles ----------------------------------------------------------------------------------------------

def test_plan_tiles_prefers_rows_then_double_buffered_w_tiles():
    def tile(nb: int, r: int, c: int) -> int:
        return nb * (r + 2) * (c + 2) * 4  # a 3x3 halo

    assert plan_tiles(2, 4, 10, tile, 0, 10_000, "op") == ([(0, 2, 0, 4, 0, 10)], False)
    tiles, double = plan_tiles(1, 8, 10, tile, 0, 300, "op")       # full-width rows fit twice
    assert double and len(tiles) == 8 and all(t[4:] == (0, 10) for t in tiles)
    # one row does not fit twice: W tiles, the fewest that fit twice (3 rows x 23 columns at most -> 5 tiles of
    # 3 rows x 20, not 8 of 2 x 25 or 9 of 1 x 34)
    tiles, double = plan_tiles(1, 3, 100, tile, 0, 1000, "op")
    assert double and len(tiles) == 5 and {(t[3] - t[2], t[5] - t[4]) for t in tiles} == {(3, 20)}
    covered = sorted((h, w) for _, _, h0, h1, w0, w1 in tiles for h in range(h0, h1) for w in range(w0, w1))
    assert covered == [(h, w) for h in range(3) for w in range(100)]
    with pytest.raises(ProgramError, match="op: one output column"):
        plan_tiles(1, 3, 100, tile, 990, 1000, "op")


# ---- default target: 1 x 3 x 1 x 100000 --------------------------------------------------------------------

def test_long_row_conv_pool_eltwise_on_bm1684x():
    """A 100000-wide row (400 KB per channel in f32) through conv, a per-channel add, and a max pool."""
    torch.manual_seed(3)
    g = OpGraph("f32")
    x = g.input("x", 1, 3, 1, 100_000)
    y = g.op("conv2d", x, g.const("w", 8, 3, 1, 5, scale=0.3), g.const("b", 8), [1, 1], [0, 0, 2, 1], [1, 2], 1,
             "relu", 0.0, 0.0, layer="conv")
    y = g.op("add", y, g.const("t", 1, 8, 1, 1), layer="add")
    y = g.op("max_pool2d", y, [1, 3], [1, 2], [0, 0, 1, 1], [1, 1], False, layer="pool")
    prog = g.check(y, "bm1684x", kernels=("c",))
    for cls, wo in ((isa.Conv2d, 99_995), (isa.Eltwise, 99_995), (isa.Pool2d, 49_998)):
        insts = of(prog, cls)
        assert len(insts) > 1 and all(i.out.shape[3] < wo for i in insts)
        assert sum(i.out.numel for i in insts) == 8 * wo
        assert insts[0].out.addr != insts[1].out.addr                              # double-buffered

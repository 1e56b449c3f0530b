"""Per-op codegen context: DDR views of values, packed weights, slicing plans for local memory.

Slicing (``plan_slices``): an op's output is cut along N then H into slices ``(n0, n1, h0, h1)``; one slice
needs ``slice_bytes(nb, rows)`` bytes per lane (its input rows with halo, output rows, scratch) plus
``const_bytes`` (weights, loaded once). The largest slice that fits single-buffered is taken when it covers
the whole output; otherwise the largest slice whose *two* buffer sets fit (double buffering: slice i+1 is
loaded into the other set while slice i computes, so its DMA has no dependency on slice i's compute).

Tiling along W (``plan_tiles``, for ops whose output columns can be computed apart: windowed ops with
column halos, element-wise ops): when not even one full-width output row leaves room for two buffer sets,
the output is cut into tiles of ``r`` rows x ``c`` columns, double-buffered as well.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch
import torch.fx as fx

from torch_tpu.cmodel.kernels_ref import from_torch
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor, align_up
from torch_tpu.errors import ProgramError
from torch_tpu.lowering.codegen.ddr_plan import DDR_ALIGN, DdrPlan, cm_dtype, stable_name
from torch_tpu.lowering.codegen.emitter import Emitter, ddr_view, sub_view, tile_bytes, to4d
from torch_tpu.targets import Target

Slice = tuple[int, int, int, int]
Tile = tuple[int, int, int, int, int, int]  # (n0, n1, h0, h1, w0, w1)


class WeightPacker:
    """Appends constants to the weight blob (64-byte aligned), each converted once to its cmodel dtype.

    The blob is loaded at DDR address ``base`` (the weight region, after the activations); a constant asked
    for again under the same ``key`` is packed once. The pieces are joined once, by :meth:`data`.
    """

    def __init__(self, base: int = 0):
        if base % DDR_ALIGN:
            raise ProgramError(f"codegen: weight region base {base} is not {DDR_ALIGN}-byte aligned")
        self.base = base
        self.nbytes = 0
        self._pieces: list = []
        self._cache: dict[tuple, DdrTensor] = {}

    def add(self, key: tuple, t: torch.Tensor, shape: tuple[int, int, int, int], dtype: DType) -> DdrTensor:
        """The DDR view of constant ``t`` reshaped to ``shape`` (cached by ``key``)."""
        view = self._cache.get(key)
        if view is not None:
            return view
        t = t.detach().reshape(shape).contiguous()
        if t.dtype == dtype.torch and dtype != DType.BF16:  # already its storage dtype: no conversion, no check
            raw = t.numpy()
        else:
            if not dtype.is_float and t.numel():
                info = torch.iinfo(dtype.torch)
                lo, hi = (int(v) for v in t.aminmax())
                if lo < info.min or hi > info.max:
                    raise ProgramError(f"codegen: constant {key[0]} holds values in [{lo}, {hi}], outside "
                                       f"{dtype.label}")
            raw = from_torch(t, dtype)
        off = align_up(self.nbytes, DDR_ALIGN)
        if off > self.nbytes:
            self._pieces.append(bytes(off - self.nbytes))
        # the array itself (no copy: codegen never writes a constant), joined with the rest once in data()
        piece = memoryview(np.ascontiguousarray(raw)).cast("B")
        self._pieces.append(piece)
        self.nbytes = off + piece.nbytes
        view = ddr_view(self.base + off, shape, dtype)
        self._cache[key] = view
        return view

    def data(self) -> bytes:
        """The packed weight bytes (a copy: later changes to the constants do not reach them)."""
        return b"".join(self._pieces)


@dataclasses.dataclass
class OpCtx:
    """What an op's codegen needs."""

    node: fx.Node
    gm: fx.GraphModule
    target: Target
    em: Emitter
    plan: DdrPlan
    weights: WeightPacker

    @property
    def layer(self) -> str:
        return stable_name(self.node)

    def value(self, node: fx.Node, shape4: tuple[int, int, int, int] | None = None) -> DdrTensor:
        """Contiguous DDR view of a computed value (4-D, or ``shape4`` with the same element count)."""
        v = node.meta["val"]
        shape = shape4 or to4d(tuple(v.shape))
        if math.prod(shape) != v.numel():
            raise ProgramError(f"codegen: {self.layer}: view {shape} of {tuple(v.shape)}")
        return ddr_view(self.plan.addr[node], shape, cm_dtype(v.dtype))

    def out(self, shape4: tuple[int, int, int, int] | None = None) -> DdrTensor:
        return self.value(self.node, shape4)

    def scratch(self, shape4: tuple[int, int, int, int], dtype: DType) -> DdrTensor:
        """A contiguous DDR view of this op's scratch bytes (sized by the driver's ``SCRATCH`` entry)."""
        addr = self.plan.scratch.get(self.node)
        if addr is None:
            raise ProgramError(f"codegen: {self.layer}: the op has no DDR scratch (driver.SCRATCH)")
        return ddr_view(addr, shape4, dtype)

    def const_tensor(self, node: fx.Node) -> torch.Tensor:
        """The tensor of a ``get_attr`` node."""
        obj = self.gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj

    def is_const(self, arg) -> bool:
        return isinstance(arg, fx.Node) and arg.op == "get_attr"

    def operand(self, arg: fx.Node, shape4: tuple[int, int, int, int] | None = None) -> DdrTensor:
        """DDR view of a value or a constant (constants are packed into the weight region as they are)."""
        if self.is_const(arg):
            t = self.const_tensor(arg)
            shape = shape4 or to4d(tuple(t.shape))
            return self.weights.add((arg.target, shape), t, shape, cm_dtype(t.dtype))
        return self.value(arg, shape4)


def plan_slices(n: int, rows: int, slice_bytes: Callable[[int, int], int], const_bytes: int, mem: int,
                where: str) -> tuple[list[Slice], bool]:
    """Cut ``n x rows`` into slices that fit ``mem`` bytes per lane; returns (slices, double_buffered)."""
    if slice_bytes(n, rows) + const_bytes <= mem:
        return [(0, n, 0, rows)], False
    for k in range(1, rows + 1):  # batch item by batch item, ceil(rows / k) rows a slice
        r = math.ceil(rows / k)
        if 2 * slice_bytes(1, r) + const_bytes <= mem:
            return _cut(n, rows, r), True
    if slice_bytes(1, 1) + const_bytes <= mem:
        return _cut(n, rows, 1), False
    raise ProgramError(f"codegen: {where}: one output row plus the constants ({const_bytes} bytes) do not fit "
                       f"{mem} bytes of local memory per lane (tiling along C/W is not implemented)")


def _cut(n: int, rows: int, r: int) -> list[Slice]:
    return [(i, i + 1, h, min(h + r, rows)) for i in range(n) for h in range(0, rows, r)]


def plan_tiles(n: int, rows: int, cols: int, tile_bytes: Callable[[int, int, int], int], const_bytes: int,
               mem: int, where: str) -> tuple[list[Tile], bool]:
    """Cut ``n x rows x cols`` into tiles ``(n0, n1, h0, h1, w0, w1)`` that fit ``mem`` bytes per lane.

    ``tile_bytes(nb, r, c)``: per-lane bytes of one buffer set for ``nb`` batch items of ``r`` rows and ``c``
    columns (inputs with their halos, outputs, scratch). In order of preference: the whole output
    (single-buffered); full-width N/H slices as :func:`plan_slices` (double-buffered); when not even one
    full-width row leaves room for two buffer sets, W tiles of ``r`` rows x ``c < cols`` columns, double-
    buffered, with the fewest tiles (larger ``r`` on a tie; widths balanced so the last tile is not a
    sliver); then single-buffered one full row, then single-buffered W tiles. Returns (tiles, double).
    """
    full = lambda nb, r: tile_bytes(nb, r, cols)  # noqa: E731
    if full(n, rows) + const_bytes <= mem:
        return [(0, n, 0, rows, 0, cols)], False
    for k in range(1, rows + 1):
        r = math.ceil(rows / k)
        if 2 * full(1, r) + const_bytes <= mem:
            return _cut_tiles(n, rows, r, cols, cols), True
    for sets in (2, 1):
        if sets == 1 and full(1, 1) + const_bytes <= mem:
            return _cut_tiles(n, rows, 1, cols, cols), False
        best = _w_tile(rows, cols, lambda r, c: sets * tile_bytes(1, r, c) + const_bytes <= mem)
        if best is not None:
            return _cut_tiles(n, rows, best[0], cols, best[1]), sets == 2
    raise ProgramError(f"codegen: {where}: one output column plus the constants ({const_bytes} bytes) does not "
                       f"fit {mem} bytes of local memory per lane (tiling along C is not implemented)")


def _w_tile(rows: int, cols: int, fits: Callable[[int, int], bool]) -> tuple[int, int] | None:
    """``(r, c)``, ``c < cols``, that fits and gives the fewest tiles; None when one column does not fit."""
    if cols <= 1:
        return None
    best = None
    for r in sorted({math.ceil(rows / k) for k in range(1, rows + 1)}, reverse=True):
        if not fits(r, 1):
            continue
        lo, hi = 1, cols - 1  # the widest c < cols that fits (tile bytes grow with c)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(r, mid) else (lo, mid - 1)
        m = math.ceil(cols / lo)
        count = math.ceil(rows / r) * m
        if best is None or count < best[0]:
            best = (count, r, math.ceil(cols / m))
    return None if best is None else best[1:]


def _cut_tiles(n: int, rows: int, r: int, cols: int, c: int) -> list[Tile]:
    return [(i, i + 1, h, min(h + r, rows), w, min(w + c, cols)) for i in range(n) for h in range(0, rows, r)
            for w in range(0, cols, c)]


def run_pipeline(count: int, double: bool, load: Callable[[int], object], compute: Callable[[int, object], object],
                 store: Callable[[int, object], None]) -> None:
    """Emit ``count`` slices as load -> compute -> store.

    Double-buffered, the load of slice ``i + 1`` is emitted before the compute of slice ``i`` (software
    pipelining): the DMA engine runs in program order, so this lets it fetch the next slice while the compute
    engine works on the current one. ``load(i)`` returns what ``compute(i, loaded)`` needs; ``compute``
    returns what ``store(i, computed)`` needs.
    """
    pending = {0: load(0)} if count else {}
    for i in range(count):
        if double and i + 1 < count:
            pending[i + 1] = load(i + 1)
        loaded = pending.pop(i) if i in pending else load(i)
        store(i, compute(i, loaded))


def row_batches(rows: int, lanes: int) -> int:
    """How many N batches a ``rows``-row view gets: ``rows / lanes`` when that divides, else 1."""
    return rows // lanes if rows % lanes == 0 and rows > lanes else 1


def sliced_rows(ctx: OpCtx, xin: DdrTensor, out: DdrTensor, const_bytes: int,
                emit: Callable[[LocalTensor, LocalTensor], None]) -> None:
    """Tile an ``(nb, c, h, k)`` input / ``(nb, c', h', n)`` output pair of views along N (each batch item
    stays whole; reductions, whose output may drop N, tile with ``ops_pool.reduce_tiled``);
    ``emit(x_tile, out_tile)`` writes the compute instruction(s) of one slice."""
    nb, c, h, k = xin.shape
    on, oc, ho, n = out.shape
    t = ctx.target
    if on != nb:
        raise ProgramError(f"codegen: {ctx.layer}: sliced_rows needs the same N in and out, got {xin.shape} -> "
                           f"{out.shape}")

    def slice_bytes(b: int, _r: int) -> int:
        return tile_bytes(t, (b, c, h, k), xin.dtype) + tile_bytes(t, (b, oc, ho, n), out.dtype)

    slices, double = plan_slices(nb, 1, slice_bytes, const_bytes, t.local_mem_bytes, ctx.layer)
    b0, b1, _, _ = slices[0]
    sets = [(ctx.em.arena.tile((b1 - b0, c, h, k), xin.dtype),
             ctx.em.arena.tile((b1 - b0, oc, ho, n), out.dtype)) for _ in range(2 if double else 1)]

    def load(i: int) -> LocalTensor:
        b0, b1, _, _ = slices[i]
        xs = LocalTensor(0, sets[i % len(sets)][0].addr, (b1 - b0, c, h, k), xin.dtype)
        ctx.em.load(sub_view(xin, (b0, 0, 0, 0), xs.shape), xs, ctx.layer)
        return xs

    def comp(i: int, xs: LocalTensor) -> LocalTensor:
        os_ = LocalTensor(0, sets[i % len(sets)][1].addr, (xs.shape[0], oc, ho, n), out.dtype)
        emit(xs, os_)
        return os_

    def store(i: int, os_: LocalTensor) -> None:
        ctx.em.store(os_, sub_view(out, (slices[i][0], 0, 0, 0), os_.shape), ctx.layer)

    run_pipeline(len(slices), double, load, comp, store)

"""Instruction emission for codegen: ids, dependencies, local-memory slots, DDR views.

Dependencies (they drive the cmodel timing model; execution is in program order):

* read-after-write: an instruction depends on the last writer of every local tile it reads and on the
  DMA stores whose DDR bytes overlap a DDR range it reads;
* write-after-read / write-after-write: an instruction that writes local bytes depends on the earlier
  readers and writers of overlapping bytes (same per-lane address range); a DDR write depends on the
  earlier loads and stores of overlapping DDR bytes (activation buffers are reused by liveness).

Local memory is handed out per op by :class:`LocalArena` (a bump allocator, aligned to
``target.align_bytes``); at the start of each op the arena is reset, and the WAR/WAW rule above keeps the
new op's tiles after the previous op's last uses of the same bytes.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor, align_up
from torch_tpu.errors import ProgramError
from torch_tpu.targets import Target


def contiguous_strides(shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Element strides of a dense N,C,H,W tensor: (C*H*W, H*W, W, 1)."""
    _, c, h, w = shape
    return (c * h * w, h * w, w, 1)


def to4d(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A rank <= 4 shape as N,C,H,W (leading 1s); rank > 4 folds the leading dims into N."""
    shape = tuple(int(s) for s in shape)
    if len(shape) > 4:
        shape = (math.prod(shape[:-3]),) + shape[-3:]
    return (1,) * (4 - len(shape)) + shape


class LocalArena:
    """Bump allocator of per-lane local memory for one op."""

    def __init__(self, target: Target):
        self.target = target
        self.used = 0

    def reset(self) -> None:
        self.used = 0

    def tile(self, shape: tuple[int, int, int, int], dtype: DType) -> LocalTensor:
        """A tile at the next aligned address; ``ProgramError`` when the lane is full."""
        t = LocalTensor(0, self.used, tuple(shape), dtype)
        end = align_up(self.used + t.bytes_per_lane(self.target), self.target.align_bytes)
        if end > self.target.local_mem_bytes:
            raise ProgramError(f"codegen: local memory of {self.target.local_mem_bytes} bytes per lane is full")
        self.used = end
        return t


def tile_bytes(target: Target, shape: tuple[int, int, int, int], dtype: DType) -> int:
    """Aligned per-lane bytes of a tile of ``shape``."""
    return align_up(LocalTensor(0, 0, tuple(shape), dtype).bytes_per_lane(target), target.align_bytes)


class Emitter:
    """Collects instructions with ids and dependencies."""

    def __init__(self, target: Target):
        self.target = target
        self.instructions: list[isa.Instruction] = []
        self.arena = LocalArena(target)
        self._local: list[tuple[int, int, int, bool]] = []  # (lo, hi, id, is_write) per-lane byte ranges
        self._ddr: list[tuple[int, int, int, bool]] = []  # (lo, hi, id, is_write)
        self._prune_at = [_PRUNE_MIN, _PRUNE_MIN]  # local, ddr: prune when a list grows past this length

    def _local_range(self, t: LocalTensor) -> tuple[int, int]:
        return t.addr, t.addr + t.bytes_per_lane(self.target)

    def emit(self, cls: type[isa.Instruction], layer: str, **fields: Any) -> isa.Instruction:
        """Append one instruction; its deps follow the rules of the module docstring."""
        iid = len(self.instructions)
        deps: set[int] = set()
        out = fields.get("out", fields.get("dst"))
        reads = [v for k, v in fields.items() if k not in ("out", "dst") and isinstance(v, (LocalTensor, DdrTensor))]
        new_local, new_ddr = [], []
        for t in reads:
            if isinstance(t, LocalTensor):
                lo, hi = self._local_range(t)
                deps |= {i for a, b, i, w in self._local if w and a < hi and lo < b}
                new_local.append((lo, hi, iid, False))
            else:
                lo, hi = t.byte_range()
                deps |= {i for a, b, i, w in self._ddr if w and a < hi and lo < b}
                new_ddr.append((lo, hi, iid, False))
        if isinstance(out, LocalTensor):
            lo, hi = self._local_range(out)
            deps |= {i for a, b, i, _ in self._local if a < hi and lo < b}
            new_local.append((lo, hi, iid, True))
        elif isinstance(out, DdrTensor):
            lo, hi = out.byte_range()
            deps |= {i for a, b, i, _ in self._ddr if a < hi and lo < b}
            new_ddr.append((lo, hi, iid, True))
        inst = cls(id=iid, deps=tuple(sorted(deps)), layer=layer, **fields)
        self.instructions.append(inst)
        self._local.extend(new_local)
        self._ddr.extend(new_ddr)
        if len(self._local) > self._prune_at[0]:
            self._local = _prune(self._local)
            self._prune_at[0] = max(_PRUNE_MIN, 2 * len(self._local))
        if len(self._ddr) > self._prune_at[1]:
            self._ddr = _prune(self._ddr)
            self._prune_at[1] = max(_PRUNE_MIN, 2 * len(self._ddr))
        return inst

    def load(self, src: DdrTensor, dst: LocalTensor, layer: str) -> LocalTensor:
        self.emit(isa.DmaLoad, layer, src=src, dst=dst)
        return dst

    def store(self, src: LocalTensor, dst: DdrTensor, layer: str) -> None:
        self.emit(isa.DmaStore, layer, src=src, dst=dst)


#: access lists are pruned when they grow past twice their size after the last pruning (at least this)
_PRUNE_MIN = 64


def _prune(entries: list[tuple[int, int, int, bool]]) -> list[tuple[int, int, int, bool]]:
    """Drop accesses fully covered by a later write (they can no longer be the nearest conflict).

    Keeping them would be correct too (deps are transitive through the later write), only slower; pruning
    only when a list has doubled keeps the cost amortized O(32) per access.
    """
    kept: list[tuple[int, int, int, bool]] = []
    writes: list[tuple[int, int]] = []
    for lo, hi, i, w in reversed(entries):
        if any(a <= lo and hi <= b for a, b in writes):
            continue
        kept.append((lo, hi, i, w))
        if w:
            writes.append((lo, hi))
            writes = writes[-32:]
    kept.reverse()
    return kept


def ddr_view(addr: int, shape: tuple[int, int, int, int], dtype: DType,
             strides: tuple[int, int, int, int] | None = None) -> DdrTensor:
    """A DDR view (contiguous unless ``strides`` are given)."""
    return DdrTensor(addr, tuple(shape), tuple(strides or contiguous_strides(shape)), dtype)


def sub_view(t: DdrTensor, start: tuple[int, int, int, int], shape: tuple[int, int, int, int]) -> DdrTensor:
    """The sub-block of a strided view starting at element index ``start`` with ``shape``."""
    off = sum(s * st for s, st in zip(start, t.strides))
    return DdrTensor(t.addr + off * t.dtype.size, tuple(shape), t.strides, t.dtype)


def broadcast_view(t: DdrTensor, shape: tuple[int, int, int, int]) -> DdrTensor:
    """``t`` broadcast to ``shape``: a dim of 1 gets stride 0."""
    strides = tuple(0 if d == 1 and o != 1 else s for d, o, s in zip(t.shape, shape, t.strides))
    return DdrTensor(t.addr, tuple(shape), strides, t.dtype)


def dense_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major element strides of a dense tensor of any rank."""
    strides, acc = [], 1
    for d in reversed(tuple(shape)):
        strides.append(acc)
        acc *= int(d)
    return tuple(reversed(strides))


def copy_nd(em: Emitter, layer: str, dtype: DType, shape: Sequence[int], src: tuple[int, Sequence[int]],
            dst: tuple[int, Sequence[int]]) -> int:
    """DDR -> DDR copy of an n-d strided view: ``dst[i] = src[i]`` for every index ``i`` of ``shape``.

    ``src`` / ``dst`` are ``(byte address, element strides)``. Size-1 dims are dropped and neighbouring dims
    that are contiguous with each other on both sides are merged; what is left as more than 4 dims is looped
    over (one ``dma_copy`` per index of the leading dims). Returns the number of copies emitted.
    """
    if any(int(n) == 0 for n in shape):
        return 0
    dims: list[tuple[int, int, int]] = []
    for n, ss, ds in zip(shape, src[1], dst[1]):
        n, ss, ds = int(n), int(ss), int(ds)
        if n == 1:
            continue
        if dims and dims[-1][1] == ss * n and dims[-1][2] == ds * n:
            dims[-1] = (dims[-1][0] * n, ss, ds)
        else:
            dims.append((n, ss, ds))
    lead, inner = dims[:-4] if len(dims) > 4 else [], dims[-4:]
    inner = [(1, 0, 0)] * (4 - len(inner)) + inner
    shape4 = tuple(n for n, _, _ in inner)
    count = 0
    for idx in itertools.product(*[range(n) for n, _, _ in lead]):
        so = sum(i * ss for i, (_, ss, _) in zip(idx, lead)) * dtype.size
        do = sum(i * ds for i, (_, _, ds) in zip(idx, lead)) * dtype.size
        em.emit(isa.DmaCopy, layer, src=DdrTensor(src[0] + so, shape4, tuple(ss for _, ss, _ in inner), dtype),
                dst=DdrTensor(dst[0] + do, shape4, tuple(ds for _, _, ds in inner), dtype))
        count += 1
    return count

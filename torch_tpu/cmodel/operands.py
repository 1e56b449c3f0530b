"""Operands of cmodel instructions: storage dtypes, DDR views and per-lane local-memory tiles.

Local memory layout of a tile (``LocalTensor(lane, addr, shape, dtype)``) on a target with ``L``
lanes and alignment ``A``::

    channel c lives on lane (lane + c) % L, in channel group g = (lane + c) // L
    cstride = align_up(H * W * esize, A)          bytes per channel group per lane
    nstride = ceil((lane + C) / L) * cstride       bytes per batch item per lane
    byte of (n, c, h, w) in its lane = addr + n * nstride + g * cstride + (h * W + w) * esize
    the tile uses [addr, addr + N * nstride) of every lane it touches; addr % A == 0
"""

from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np
import torch

from torch_tpu.errors import ProgramError
from torch_tpu.targets import Target

Shape4 = tuple[int, int, int, int]


class DType(enum.IntEnum):
    """Storage dtypes of the cmodel (codes shared with csrc/common.h)."""

    F32 = 0
    F16 = 1
    BF16 = 2
    INT8 = 3
    INT32 = 4
    UINT8 = 5

    @property
    def size(self) -> int:
        return _SIZES[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F16, DType.BF16)

    @property
    def numpy(self) -> np.dtype:
        """numpy storage dtype (bf16 is stored as its raw uint16 bits)."""
        return _NUMPY[self]

    @property
    def torch(self) -> torch.dtype:
        return _TORCH[self]

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def precision(self) -> str:
        """The target rate class this dtype computes at (int32 ops run at the f32 rate)."""
        return {DType.F32: "f32", DType.F16: "f16", DType.BF16: "bf16", DType.INT8: "int8",
                DType.INT32: "f32", DType.UINT8: "int8"}[self]

    @classmethod
    def parse(cls, value: "str | DType") -> "DType":
        if isinstance(value, DType):
            return value
        try:
            return _BY_LABEL[value]
        except (KeyError, TypeError):
            raise ProgramError(f"unknown dtype {value!r} (known: {', '.join(_BY_LABEL)})") from None

    @classmethod
    def from_torch(cls, dtype: torch.dtype) -> "DType":
        for d, t in _TORCH.items():
            if t == dtype:
                return d
        raise ProgramError(f"torch dtype {dtype} has no cmodel dtype")


_SIZES = {DType.F32: 4, DType.F16: 2, DType.BF16: 2, DType.INT8: 1, DType.INT32: 4, DType.UINT8: 1}
_NUMPY = {k: np.dtype(v) for k, v in {DType.F32: np.float32, DType.F16: np.float16, DType.BF16: np.uint16,
                                      DType.INT8: np.int8, DType.INT32: np.int32, DType.UINT8: np.uint8}.items()}
_TORCH = {DType.F32: torch.float32, DType.F16: torch.float16, DType.BF16: torch.bfloat16, DType.INT8: torch.int8,
          DType.INT32: torch.int32, DType.UINT8: torch.uint8}
_LABELS = {DType.F32: "f32", DType.F16: "f16", DType.BF16: "bf16", DType.INT8: "int8", DType.INT32: "int32",
           DType.UINT8: "uint8"}
_BY_LABEL = {v: k for k, v in _LABELS.items()}


def align_up(value: int, align: int) -> int:
    """Smallest multiple of ``align`` that is >= ``value``."""
    return -(-value // align) * align


@dataclasses.dataclass(frozen=True)
class LocalTensor:
    """An N,C,H,W tile in local memory, starting at ``lane`` and per-lane byte address ``addr``."""

    lane: int
    addr: int
    shape: Shape4
    dtype: DType

    def cstride(self, target: Target) -> int:
        """Bytes of one channel group in one lane: align_up(H * W * esize, align)."""
        return align_up(self.shape[2] * self.shape[3] * self.dtype.size, target.align_bytes)

    def groups(self, target: Target) -> int:
        """Channel groups per lane: ceil((lane + C) / lanes)."""
        return -(-(self.lane + self.shape[1]) // target.lanes)

    def bytes_per_lane(self, target: Target) -> int:
        """Per-lane bytes the tile spans: N * groups * cstride."""
        return self.shape[0] * self.groups(target) * self.cstride(target)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class DdrTensor:
    """A strided N,C,H,W view of DDR: element (n,c,h,w) at ``addr + (n sN + c sC + h sH + w sW) * esize``."""

    addr: int
    shape: Shape4
    strides: Shape4
    dtype: DType

    @classmethod
    def contiguous(cls, addr: int, shape: Shape4, dtype: DType) -> "DdrTensor":
        n, c, h, w = shape
        return cls(addr, tuple(shape), (c * h * w, h * w, w, 1), dtype)

    def byte_range(self) -> tuple[int, int]:
        """[first, last + 1) bytes touched (an empty tensor touches nothing)."""
        if 0 in self.shape:
            return self.addr, self.addr
        last = sum((d - 1) * s for d, s in zip(self.shape, self.strides))
        return self.addr, self.addr + (last + 1) * self.dtype.size

    @property
    def numel(self) -> int:
        return math.prod(self.shape)



"""DDR and per-lane local memory of the cmodel, and the tensor copy the DMA engine performs.

DDR is one flat byte array. Local memory is ``lanes`` separate byte rows of
``target.local_mem_bytes`` each (a ``(lanes, local_mem_bytes)`` array whose rows are never
addressed past their end: every access is checked against the lane size, so a tile that overflows
its lane is an error, not a silent write into the next lane). The layout of a tile is in
:mod:`torch_tpu.cmodel.operands`.

The copy is implemented twice with identical checks: in C (``_cmodel.copy``) and in numpy (the
reference, used when the C extension is not built or ``kernels="reference"``).

Example:
    >>> from torch_tpu.targets import get_target
    >>> from torch_tpu.cmodel.operands import DType, LocalTensor
    >>> mem = Memory(get_target("bm1684x"), ddr_bytes=1024, use_c=False)
    >>> t = LocalTensor(lane=62, addr=0, shape=(1, 4, 2, 2), dtype=DType.INT8)
    >>> mem.write_local(t, np.arange(16, dtype=np.int8).reshape(1, 4, 2, 2))
    >>> int(mem.local[0, 64])   # channel 2 wrapped to lane 0, channel group 1 (cstride 64)
    8
"""

from __future__ import annotations

import numpy as np

from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import ProgramError
from torch_tpu.targets import Target

try:
    from torch_tpu.cmodel import _cmodel
except ImportError:  # not built: the numpy copy and the reference kernels still run
    _cmodel = None

Desc = tuple[int, int, int, int, int, int]


#: at most this many bytes of reusable operand buffers per Memory (``read_local(slot=...)``); reads of kinds
#: beyond it get fresh arrays
OPERAND_CACHE_BYTES = 64 << 20


def c_available() -> bool:
    """Whether the C extension is built and importable."""
    return _cmodel is not None


def _offsets(desc: Desc, shape: tuple[int, int, int, int], esize: int, nbytes: int, side: str) -> np.ndarray:
    """Byte offset of every element (N, C, H, W) for a descriptor, with the same checks as the C copy."""
    n, c, h, w = shape
    if any(d < 1 or d > 1 << 31 for d in shape):
        raise ValueError("bad dimension (tensor dims must be in [1, 2^31])")
    idx = [np.arange(d, dtype=np.int64).reshape([-1 if k == j else 1 for k in range(4)]) for j, d in enumerate(shape)]
    if desc[0] == 0:
        base, strides = desc[1], desc[2:]
        if any(s < 0 for s in strides):
            raise ValueError(f"{side}: negative stride")
        last = base + sum((d - 1) * s for d, s in zip(shape, strides)) * esize
        if base < 0 or last + esize > nbytes:
            raise ValueError(f"{side}: bytes [{base}, {last + esize}) outside the memory of {nbytes} bytes")
        return base + sum(i * s for i, s in zip(idx, strides)) * esize
    _, lane, addr, lanes, lane_bytes, align = desc
    if lanes * lane_bytes != nbytes:
        raise ValueError(f"{side}: local memory buffer does not match {lanes} lanes x {lane_bytes} bytes")
    if not 0 <= lane < lanes:
        raise ValueError(f"{side}: lane {lane} out of range")
    if addr < 0 or addr % align:
        raise ValueError(f"{side}: local address {addr} not aligned to {align}")
    cstride = -(-(h * w * esize) // align) * align
    nstride = -(-(lane + c) // lanes) * cstride
    if addr + n * nstride > lane_bytes:
        raise ValueError(f"{side}: local bytes [{addr}, {addr + n * nstride}) exceed the lane size {lane_bytes}")
    ch = lane + idx[1]
    return (ch % lanes) * lane_bytes + addr + idx[0] * nstride + (ch // lanes) * cstride + (idx[2] * w + idx[3]) * esize


def numpy_copy(dst: np.ndarray, dst_desc: Desc, src: np.ndarray, src_desc: Desc, shape: tuple[int, int, int, int],
               esize: int) -> None:
    """Reference of ``_cmodel.copy``: move an N,C,H,W tensor between two byte buffers (see module.c)."""
    d8, s8 = dst.reshape(-1).view(np.uint8), src.reshape(-1).view(np.uint8)
    doff = _offsets(dst_desc, shape, esize, d8.size, "destination")
    soff = _offsets(src_desc, shape, esize, s8.size, "source")
    k = np.arange(esize, dtype=np.int64)
    d8[(doff[..., None] + k).reshape(-1)] = s8[(soff[..., None] + k).reshape(-1)]


def ddr_desc(t: DdrTensor) -> Desc:
    return (0, t.addr) + tuple(t.strides)


def dense_desc(shape: tuple[int, int, int, int]) -> Desc:
    n, c, h, w = shape
    return (0, 0, c * h * w, h * w, w, 1)


class Memory:
    """The cmodel's DDR and local memory.

    Args:
        target: the chip (lanes, local memory per lane, alignment).
        ddr_bytes: size of DDR to model.
        use_c: copy with the C extension (else numpy).
    """

    def __init__(self, target: Target, ddr_bytes: int, use_c: bool = True):
        self.target = target
        self.ddr = np.zeros(ddr_bytes, dtype=np.uint8)
        self.local = np.zeros((target.lanes, target.local_mem_bytes), dtype=np.uint8)
        if use_c and _cmodel is None:
            raise ProgramError("the cmodel C extension is not built (pip install the package, or use "
                               "kernels='reference')")
        self._copy = _cmodel.copy if use_c else numpy_copy
        self._operands: dict[tuple, np.ndarray] = {}  # read_local(slot=...) buffers
        self._operand_bytes = 0

    def lane_desc(self, t: LocalTensor) -> Desc:
        tg = self.target
        return (1, t.lane, t.addr, tg.lanes, tg.local_mem_bytes, tg.align_bytes)

    def copy(self, dst: np.ndarray, dst_desc: Desc, src: np.ndarray, src_desc: Desc,
             shape: tuple[int, int, int, int], esize: int) -> None:
        """Checked copy; out-of-range accesses raise ValueError before any byte moves."""
        self._copy(dst, dst_desc, src, src_desc, tuple(shape), esize)

    def read_local(self, t: LocalTensor, slot: int | None = None) -> np.ndarray:
        """Gather a tile into a dense array of its storage dtype.

        With ``slot`` (the operand's position in its instruction) the array is this memory's own buffer for
        that slot, shape and dtype, reused by every later read of the same kind: valid until the next such
        read, for operands that a kernel consumes and does not keep. Fresh arrays are fresh pages, which the
        OS maps and zeroes on first touch (about a tenth of an int8 resnet50 run).
        """
        if slot is None:
            out = np.empty(t.shape, dtype=t.dtype.numpy)
        else:
            key = (slot, t.shape, t.dtype)
            out = self._operands.get(key)
            if out is None:
                out = np.empty(t.shape, dtype=t.dtype.numpy)
                if self._operand_bytes + out.nbytes <= OPERAND_CACHE_BYTES:
                    self._operands[key] = out
                    self._operand_bytes += out.nbytes
        self.copy(out, dense_desc(t.shape), self.local, self.lane_desc(t), t.shape, t.dtype.size)
        return out

    def write_local(self, t: LocalTensor, data: np.ndarray) -> None:
        """Scatter a dense array (storage dtype, shape ``t.shape``) into a tile."""
        data = np.ascontiguousarray(data, dtype=t.dtype.numpy).reshape(t.shape)
        self.copy(self.local, self.lane_desc(t), data, dense_desc(t.shape), t.shape, t.dtype.size)

    def dma(self, src: DdrTensor | LocalTensor, dst: DdrTensor | LocalTensor) -> None:
        """DDR <-> local or DDR -> DDR move of ``src.shape`` elements of ``src.dtype``."""
        sbuf, sdesc = (self.ddr, ddr_desc(src)) if isinstance(src, DdrTensor) else (self.local, self.lane_desc(src))
        dbuf, ddesc = (self.ddr, ddr_desc(dst)) if isinstance(dst, DdrTensor) else (self.local, self.lane_desc(dst))
        self.copy(dbuf, ddesc, sbuf, sdesc, src.shape, src.dtype.size)

    def write_ddr(self, addr: int, data: np.ndarray) -> None:
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if addr < 0 or addr + raw.size > self.ddr.size:
            raise ProgramError(f"DDR write [{addr}, {addr + raw.size}) outside DDR of {self.ddr.size} bytes")
        self.ddr[addr:addr + raw.size] = raw

    def read_ddr(self, addr: int, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64)) * dtype.size
        if addr < 0 or addr + n > self.ddr.size:
            raise ProgramError(f"DDR read [{addr}, {addr + n}) outside DDR of {self.ddr.size} bytes")
        return self.ddr[addr:addr + n].copy().view(dtype.numpy).reshape(shape)

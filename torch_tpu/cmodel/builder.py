"""A small helper to write Programs by hand (tests, examples, and a base for codegen).

It hands out DDR space (a weight region then an activation region, fixed capacities), local memory
(a bump allocator per program, aligned as the target says), instruction ids, and dependencies (an
instruction depends on the producers of the tensors it reads, and on earlier readers and writers of
the local bytes it overwrites).

Example:
    >>> b = ProgramBuilder("bm1684x")
    >>> x = b.input("x", (1, 3, 4, 4), "f32")
    >>> y = b.store(b.activation("relu", b.load(x), layer="relu"))
    >>> b.output("y", y)
    >>> [i.OPCODE for i in b.build().instructions]
    ['dma_load', 'activation', 'dma_store']
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.kernels_ref import from_torch
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor, align_up
from torch_tpu.cmodel.program import DdrRegion, IOTensor, Program, ddr_view
from torch_tpu.errors import ProgramError
from torch_tpu.targets import get_target

DDR_ALIGN = 64


class ProgramBuilder:
    """Builds a :class:`Program` instruction by instruction.

    Args:
        target: preset name.
        weight_bytes: capacity of the weight region ``[0, weight_bytes)``.
        activation_bytes: capacity of the activation region that follows it.
    """

    def __init__(self, target: str = "bm1684x", weight_bytes: int = 1 << 20, activation_bytes: int = 1 << 20):
        self.target = get_target(target)
        self.weight_bytes, self.activation_bytes = weight_bytes, activation_bytes
        self.weights = bytearray()
        self.act_used = 0
        self.local_used = 0
        self.instructions: list[isa.Instruction] = []
        self.inputs: list[IOTensor] = []
        self.outputs: list[IOTensor] = []
        self._producer: dict[Any, int] = {}
        self._local_users: list[tuple[LocalTensor, int]] = []

    # ---- memory ------------------------------------------------------------------------------

    def _ddr_alloc(self, nbytes: int) -> int:
        addr = self.weight_bytes + self.act_used
        self.act_used = align_up(self.act_used + nbytes, DDR_ALIGN)
        if self.act_used > self.activation_bytes:
            raise ProgramError(f"builder: activation region of {self.activation_bytes} bytes is full")
        return addr

    def ddr(self, shape: tuple[int, int, int, int], dtype: str | DType) -> DdrTensor:
        """A fresh contiguous DDR tensor in the activation region."""
        dtype = DType.parse(dtype)
        return DdrTensor.contiguous(self._ddr_alloc(math.prod(shape) * dtype.size), tuple(shape), dtype)

    def local(self, shape: tuple[int, int, int, int], dtype: str | DType, lane: int = 0,
              addr: int | None = None) -> LocalTensor:
        """A local tile; ``addr=None`` takes the next aligned free address (the same in every lane)."""
        dtype = DType.parse(dtype)
        t = LocalTensor(lane, 0, tuple(shape), dtype)
        if addr is None:
            addr = self.local_used
            self.local_used = align_up(addr + t.bytes_per_lane(self.target), self.target.align_bytes)
        return dataclasses.replace(t, addr=addr)

    def reset_local(self) -> None:
        """Free all local memory (the next tiles reuse it; dependencies keep the order)."""
        self.local_used = 0

    def input(self, name: str, shape: tuple[int, ...], dtype: str | DType, scale: float = 1.0,
              zero_point: int = 0) -> DdrTensor:
        dtype = DType.parse(dtype)
        io = IOTensor(name, tuple(shape), dtype, self._ddr_alloc(math.prod(shape) * dtype.size), scale, zero_point)
        self.inputs.append(io)
        return ddr_view(io)

    def output(self, name: str, t: DdrTensor, shape: tuple[int, ...] | None = None, scale: float = 1.0,
               zero_point: int = 0) -> None:
        """Declare a (contiguous) DDR tensor as an output, with an optional original shape."""
        self.outputs.append(IOTensor(name, tuple(shape or t.shape), t.dtype, t.addr, scale, zero_point))

    def weight(self, data: np.ndarray | torch.Tensor, dtype: str | DType,
               shape: tuple[int, int, int, int] | None = None) -> DdrTensor:
        """Append a constant to the weight blob (converted to ``dtype``: floats rounded to nearest even)."""
        dtype = DType.parse(dtype)
        t = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.asarray(data))
        raw = from_torch(t, dtype).tobytes()
        addr = align_up(len(self.weights), DDR_ALIGN)
        if addr + len(raw) > self.weight_bytes:
            raise ProgramError(f"builder: weight region of {self.weight_bytes} bytes is full")
        self.weights.extend(b"\0" * (addr - len(self.weights)) + raw)
        shape = shape or tuple([1] * (4 - t.dim()) + list(t.shape))
        return DdrTensor.contiguous(addr, shape, dtype)

    # ---- instructions ------------------------------------------------------------------------

    def _key(self, t: Any) -> Any:
        return ("L", t.lane, t.addr, t.shape) if isinstance(t, LocalTensor) else ("D", t.addr)

    def emit(self, cls: type[isa.Instruction], layer: str = "", **fields: Any) -> isa.Instruction:
        """Append an instruction with the next id and its dependencies."""
        iid = len(self.instructions)
        reads = [v for k, v in fields.items() if k not in ("out", "dst") and isinstance(v, (LocalTensor, DdrTensor))]
        out = fields.get("out", fields.get("dst"))
        deps = {self._producer[self._key(t)] for t in reads if self._key(t) in self._producer}
        if isinstance(out, LocalTensor):  # write-after-read/write on overlapping local bytes
            deps |= {i for t, i in self._local_users if _overlap(t, out, self.target)}
        inst = cls(id=iid, deps=tuple(sorted(deps)), layer=layer, **fields)
        self.instructions.append(inst)
        for t in reads + [out]:
            if isinstance(t, LocalTensor):
                self._local_users.append((t, iid))
        self._producer[self._key(out)] = iid
        return inst

    def load(self, src: DdrTensor, lane: int = 0, layer: str = "") -> LocalTensor:
        dst = self.local(src.shape, src.dtype, lane)
        self.emit(isa.DmaLoad, layer=layer, src=src, dst=dst)
        return dst

    def store(self, src: LocalTensor, dst: DdrTensor | None = None, layer: str = "") -> DdrTensor:
        dst = dst or self.ddr(src.shape, src.dtype)
        self.emit(isa.DmaStore, layer=layer, src=src, dst=dst)
        return dst

    def compute(self, cls: type[isa.Instruction], out_shape: tuple[int, int, int, int], out_dtype: str | DType,
                layer: str = "", lane: int = 0, **fields: Any) -> LocalTensor:
        """Emit a compute instruction writing a fresh tile of ``out_shape``."""
        out = self.local(out_shape, out_dtype, lane)
        self.emit(cls, layer=layer, out=out, **fields)
        return out

    def activation(self, op: str, x: LocalTensor, layer: str = "", **fields: Any) -> LocalTensor:
        return self.compute(isa.Activation, x.shape, x.dtype, layer, x.lane, op=op, x=x, **fields)

    def build(self) -> Program:
        """The validated Program."""
        p = Program(target=self.target.name,
                    regions=[DdrRegion("weight", 0, self.weight_bytes),
                             DdrRegion("activation", self.weight_bytes, self.activation_bytes)],
                    inputs=list(self.inputs), outputs=list(self.outputs), instructions=list(self.instructions),
                    weights=bytes(self.weights))
        p.validate()
        return p


def _overlap(a: LocalTensor, b: LocalTensor, target) -> bool:
    """Whether two tiles share bytes in some lane (conservative: any common lane and address range)."""
    a_lanes = set(range(a.lane, a.lane + a.shape[1])) if a.shape[1] < target.lanes else None
    b_lanes = set(range(b.lane, b.lane + b.shape[1])) if b.shape[1] < target.lanes else None
    if a_lanes is not None and b_lanes is not None:
        if not ({x % target.lanes for x in a_lanes} & {x % target.lanes for x in b_lanes}):
            return False
    return a.addr < b.addr + b.bytes_per_lane(target) and b.addr < a.addr + a.bytes_per_lane(target)

"""Functional simulator: executes a Program's instructions in order on DDR + per-lane local memory.

DMA instructions move bytes with the checked copy (C or numpy); a compute instruction gathers its
input tiles from the lanes into dense arrays, runs the selected kernel, and scatters the result
tile back into the lanes. So an allocation bug (two live tiles overlapping in a lane, a tile past
its lane's end) shows up as a wrong result or a :class:`ProgramError`, never as a silent success.

Example:
    >>> import numpy as np
    >>> from torch_tpu.cmodel.builder import ProgramBuilder
    >>> b = ProgramBuilder("bm1684x")
    >>> x = b.input("x", (1, 2, 2, 2), "f32")
    >>> t = b.load(x)
    >>> y = b.activation("relu", t, layer="relu")
    >>> b.output("y", b.store(y))
    >>> out = run_program(b.build(), {"x": np.full((1, 2, 2, 2), -1.0, np.float32)})
    >>> out["y"].abs().sum().item()
    0.0
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import weakref
from typing import Mapping

import numpy as np
import torch

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.kernels import KernelSet, get_kernel_set
from torch_tpu.cmodel.kernels_ref import KernelFn
from torch_tpu.cmodel.memory import Memory
from torch_tpu.cmodel.program import Program
from torch_tpu.cmodel.timing import Profile, simulate_timing
from torch_tpu.errors import ProgramError


@dataclasses.dataclass
class RunResult:
    """Outputs by name; the profile (``profile=True``); with ``debug=True`` the output tile of every
    compute instruction, by layer stable name, in execution order (``intermediates``), and every probed
    value of the program as a whole tensor, by stable name (``tensors``, see :class:`~.program.Probe`)."""

    outputs: dict[str, torch.Tensor]
    profile: Profile | None = None
    intermediates: dict[str, list[torch.Tensor]] = dataclasses.field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


def _is_int(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _to_storage(value: np.ndarray | torch.Tensor, io, where: str) -> np.ndarray:
    t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    if t.dtype != io.dtype.torch and _is_int(t.dtype) and _is_int(io.dtype.torch):
        # token ids as int64 (torch's default) into an int32 input: exact when every value fits
        info = torch.iinfo(io.dtype.torch)
        if t.numel() and (int(t.min()) < info.min or int(t.max()) > info.max):
            raise ProgramError(f"{where} '{io.name}': {t.dtype} values in [{int(t.min())}, {int(t.max())}] do not "
                               f"fit the program's {io.dtype.label} input")
        t = t.to(io.dtype.torch)
    if t.dtype != io.dtype.torch:
        raise ProgramError(f"{where} '{io.name}': dtype {t.dtype}, the program expects {io.dtype.label}")
    if tuple(t.shape) != tuple(io.shape):
        raise ProgramError(f"{where} '{io.name}': shape {tuple(t.shape)}, the program expects {tuple(io.shape)}")
    t = t.detach().cpu().contiguous()
    if io.dtype == isa.DType.BF16:
        t = t.view(torch.uint16)
    return t.numpy()


def _to_torch(a: np.ndarray, dtype: isa.DType) -> torch.Tensor:
    t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if dtype == isa.DType.BF16 else t


class _MemoryPool:
    """Memories of finished runs, kept for the next run of the same size.

    A fresh DDR is fresh pages: on the first touch the OS maps and zeroes them, which for a 100 MB DDR
    costs more than all of resnet50's kernels, and the weights would be copied in again. A reused memory
    is zeroed outside the weight region (so a run sees exactly what a fresh memory holds) and keeps its
    weights when they come from the same Program object (the weight region is read-only to DMA, which
    ``Program.validate`` enforces). At most ``size`` idle memories are kept; a run takes one for itself.
    """

    def __init__(self, size: int = 2):
        self.size = size
        self._idle: list[tuple[Memory, bool, weakref.ref | None, int]] = []  # memory, use_c, weights' owner, id
        self._lock = threading.Lock()

    def take(self, p: Program, target, use_c: bool) -> Memory:
        entry = None
        with self._lock:
            for k, (mem, c, _, _) in enumerate(self._idle):
                if mem.target == target and mem.ddr.size == p.ddr_bytes and c == use_c:
                    entry = self._idle.pop(k)
                    break
        base = next((r.base for r in p.regions if r.name == p.weight_region), 0)
        nw = len(p.weights)
        if entry is None:
            mem = Memory(target, p.ddr_bytes, use_c=use_c)
        else:
            mem, _, owner, weights_id = entry
            mem.local.fill(0)
            if owner is not None and owner() is p and weights_id == id(p.weights):
                mem.ddr[:base].fill(0)
                mem.ddr[base + nw:].fill(0)
                return mem
            mem.ddr.fill(0)
        if nw:
            mem.write_ddr(base, np.frombuffer(p.weights, dtype=np.uint8))
        return mem

    def give_back(self, mem: Memory, p: Program, use_c: bool) -> None:
        try:
            owner = weakref.ref(p)
        except TypeError:
            owner = None
        with self._lock:
            if len(self._idle) >= self.size:
                self._idle.pop(0)
            self._idle.append((mem, use_c, owner, id(p.weights)))


_POOL = _MemoryPool()


class Simulator:
    """Holds a validated program, its memories and the kernel set; :meth:`run` executes it once.

    Args:
        program: the Program (validated here).
        kernels: ``auto``, ``c``, ``triton`` or ``reference``.
    """

    def __init__(self, program: Program, kernels: str = "auto"):
        program.validate()
        self.program = program
        self.target = program.get_target()
        self.kernels: KernelSet = get_kernel_set(kernels)
        self._kernel_of: list[KernelFn | None] | None = None

    def run(self, inputs: Mapping[str, np.ndarray | torch.Tensor], debug: bool = False
            ) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
        """Execute once; returns (outputs, intermediates)."""
        # The loop allocates an operand array per instruction and builds no reference cycles: without this,
        # Python's cycle collector walks the whole heap every few hundred instructions (~3% of an int8 run).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run(inputs, debug)
        finally:
            if collecting:
                gc.enable()

    def _run(self, inputs: Mapping[str, np.ndarray | torch.Tensor], debug: bool
             ) -> tuple[dict[str, torch.Tensor], dict[str, list[torch.Tensor]]]:
        p = self.program
        missing = [t.name for t in p.inputs if t.name not in inputs]
        extra = sorted(set(inputs) - {t.name for t in p.inputs})
        if missing or extra:
            raise ProgramError(f"program inputs: missing {missing}, unknown {extra} "
                               f"(expected {[t.name for t in p.inputs]})")
        mem = _POOL.take(p, self.target, self.kernels.use_c_memory)
        for io in p.inputs:
            mem.write_ddr(io.addr, _to_storage(inputs[io.name], io, "input"))
        intermediates: dict[str, list[torch.Tensor]] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        probes: dict[int, list] = {}
        if debug:
            for pr in p.probes:
                probes.setdefault(pr.after, []).append(pr)
            self._read_probes(mem, probes.get(-1, ()))
        for inst, kernel in zip(p.instructions, self._kernels()):
            try:
                if inst.ENGINE == "dma":
                    mem.dma(inst.src, inst.dst)
                    if debug and inst.id in probes:
                        self._read_probes(mem, probes[inst.id])
                    continue
                # operand buffers are reused (read_local slots) unless debug keeps results that may alias them
                ops = [None if t is None else mem.read_local(t) if debug else mem.read_local(t, k)
                       for k, t in enumerate(inst.inputs())]
                result = kernel(inst, ops)
                mem.write_local(inst.out, result)
            except ValueError as e:
                raise inst.fail("operands", str(e)) from None
            if debug:
                intermediates.setdefault(inst.layer, []).append(_to_torch(result, inst.out.dtype))
                if inst.id in probes:
                    self._read_probes(mem, probes[inst.id])
        outputs = {io.name: _to_torch(mem.read_ddr(io.addr, io.shape, io.dtype), io.dtype) for io in p.outputs}
        _POOL.give_back(mem, p, self.kernels.use_c_memory)
        return outputs, intermediates

    def _kernels(self) -> list[KernelFn | None]:
        """The kernel of every instruction in program order (None for DMA), looked up once per Simulator."""
        if self._kernel_of is None:
            self._kernel_of = [None if i.ENGINE == "dma" else self.kernels.kernel(i) for i in self.program.instructions]
        return self._kernel_of

    def _read_probes(self, mem: Memory, probes) -> None:
        for pr in probes:
            self.tensors[pr.name] = _to_torch(mem.read_ddr(pr.addr, pr.shape, pr.dtype), pr.dtype)


def estimate(program: Program) -> Profile:
    """The timing profile of a program without executing it (timing does not depend on data)."""
    program.validate()
    min_bytes = sum(t.nbytes for t in program.inputs + program.outputs) + len(program.weights)
    return simulate_timing(program.instructions, program.get_target(), min_bytes)


def run_program(program: Program | str | os.PathLike, inputs: Mapping[str, np.ndarray | torch.Tensor],
                kernels: str = "auto", profile: bool = False, debug: bool = False
                ) -> dict[str, torch.Tensor] | RunResult:
    """Run a Program (or a ``.tpu`` path) on the cmodel.

    Args:
        program: a Program or the path of a saved one.
        inputs: by IO name, numpy arrays or tensors of the program's dtypes and shapes.
        kernels: ``auto`` | ``c`` | ``triton`` | ``reference``.
        profile: also compute the timing profile.
        debug: also keep every compute instruction's output tile, by layer.

    Returns:
        ``{name: tensor}`` when neither ``profile`` nor ``debug`` is set, else a :class:`RunResult`.
    """
    if not isinstance(program, Program):
        program = Program.load(program)
    sim = Simulator(program, kernels)
    outputs, intermediates = sim.run(inputs, debug=debug)
    if not (profile or debug):
        return outputs
    return RunResult(outputs, estimate(program) if profile else None, intermediates, sim.tensors)

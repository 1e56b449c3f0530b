"""The cmodel: Program format (ISA, ``.tpu`` files), per-lane memory model, simulator, kernels, timing.

Layering: imports torch, numpy, the standard library and torch_tpu.errors / targets / config only.
See README.md in this directory for the ISA, the memory model and the timing formulas.

Example:
    >>> import numpy as np
    >>> from torch_tpu.cmodel import ProgramBuilder, run_program
    >>> b = ProgramBuilder("bm1684x")
    >>> x = b.input("x", (1, 2, 3, 3), "f32")
    >>> b.output("y", b.store(b.activation("relu6", b.load(x), layer="act")))
    >>> run_program(b.build(), {"x": np.full((1, 2, 3, 3), 9.0, np.float32)})["y"].max().item()
    6.0
"""

from torch_tpu.cmodel import codec, isa
from torch_tpu.cmodel.builder import ProgramBuilder
from torch_tpu.cmodel.kernels import KernelSet, get_kernel_set
from torch_tpu.cmodel.memory import Memory, c_available
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.cmodel.program import FORMAT_VERSION, DdrRegion, IOTensor, Probe, Program
from torch_tpu.cmodel.simulator import RunResult, Simulator, estimate, run_program
from torch_tpu.cmodel.timing import Profile, instruction_cost, simulate_timing

__all__ = [
    "isa", "codec", "ProgramBuilder", "KernelSet", "get_kernel_set", "Memory", "c_available", "DdrTensor", "DType",
    "LocalTensor", "FORMAT_VERSION", "DdrRegion", "IOTensor", "Probe", "Program", "RunResult", "Simulator", "estimate",
    "run_program", "Profile", "instruction_cost", "simulate_timing",
]

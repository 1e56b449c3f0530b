"""Choice of the kernel set that executes a Program's compute instructions.

``"reference"``: torch (kernels_ref, the definition) and the numpy DMA copy. ``"c"``: the C
extension for DMA and every kernel. ``"triton"``: Triton for every compute opcode (kernels_triton and
kernels_triton_misc) except integer activations and the float ones without a Triton form (gelu_tanh, elu,
softplus, mish), which the C set (or the reference set when C is not built) runs, as it runs the DMA.
``"auto"``: C when built, else reference.

Example:
    >>> ks = get_kernel_set("reference")
    >>> ks.name, ks.use_c_memory
    ('reference', False)
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from torch_tpu.cmodel import isa, kernels_ref
from torch_tpu.cmodel.kernels_ref import KernelFn
from torch_tpu.cmodel.memory import c_available
from torch_tpu.config import CMODEL_CHOICES
from torch_tpu.errors import ConfigError, ProgramError


@dataclasses.dataclass(frozen=True)
class KernelSet:
    """A named table opcode -> kernel, with an optional per-instruction override table in front."""

    name: str
    table: dict[str, KernelFn]
    use_c_memory: bool
    override: dict[str, KernelFn] = dataclasses.field(default_factory=dict)
    override_if: Callable[[isa.Instruction], bool] = lambda inst: False

    def kernel(self, inst: isa.Instruction) -> KernelFn:
        """The kernel for ``inst``; a ProgramError naming the instruction when there is none."""
        if inst.OPCODE in self.override and self.override_if(inst):
            return self.override[inst.OPCODE]
        try:
            return self.table[inst.OPCODE]
        except KeyError:
            raise inst.fail("op", f"kernel set '{self.name}' has no kernel for opcode {inst.OPCODE}") from None


COMPUTE_OPCODES = tuple(op for op, cls in isa.OPCODES.items() if cls.ENGINE == "compute")


def check_table(name: str, table: dict[str, KernelFn], complete: bool = True) -> dict[str, KernelFn]:
    """Refuse a kernel table with unknown opcodes (or, when ``complete``, missing ones)."""
    unknown = sorted(set(table) - set(COMPUTE_OPCODES))
    missing = sorted(set(COMPUTE_OPCODES) - set(table)) if complete else []
    if unknown or missing:
        raise ProgramError(f"kernel set '{name}': unknown opcodes {unknown}, missing opcodes {missing}")
    return table


def get_kernel_set(choice: str = "auto") -> KernelSet:
    """Resolve a ``cmodel=`` choice (auto, c, triton, reference) to a :class:`KernelSet`."""
    if choice not in CMODEL_CHOICES:
        raise ConfigError(f"cmodel={choice!r}: choose one of {', '.join(CMODEL_CHOICES)}")
    if choice == "reference" or (choice == "auto" and not c_available()):
        return KernelSet("reference", check_table("reference", kernels_ref.KERNELS), use_c_memory=False)
    if choice in ("c", "auto"):
        if not c_available():
            raise ProgramError("cmodel='c' but the C extension torch_tpu.cmodel._cmodel is not built")
        from torch_tpu.cmodel import kernels_c
        return KernelSet("c", check_table("c", kernels_c.KERNELS), use_c_memory=True)
    from torch_tpu.cmodel import kernels_triton
    if not kernels_triton.available():
        raise ConfigError("cmodel='triton' needs triton and a CUDA device, or TRITON_INTERPRET=1 set before import")
    if c_available():
        from torch_tpu.cmodel import kernels_c
        base, use_c = kernels_c.KERNELS, True
    else:
        base, use_c = kernels_ref.KERNELS, False
    return KernelSet("triton", check_table("base", base), use_c_memory=use_c,
                     override=check_table("triton", kernels_triton.KERNELS, complete=False),
                     override_if=kernels_triton.handles)

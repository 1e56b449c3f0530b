"""Chips as data: what a target has, and the numbers its cost model uses.

A :class:`Target` is a frozen description; nothing in torch_tpu branches on a chip's name, only on
these fields. The presets model public parameters of Sophgo/Cvitek chips (lane counts, local memory
sizes and alignment as published in TPU-MLIR's backends, peak rates from public datasheets). They are
*models* for compiling and predicting time, not cycle-accurate descriptions of those chips.

Example:
    >>> from torch_tpu.targets import get_target
    >>> t = get_target("bm1684x")
    >>> t.lanes, t.local_mem_bytes // 1024
    (64, 256)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch

from torch_tpu.errors import TargetError

#: Precision names used everywhere (options, qtables, dumps) and their storage dtypes.
PRECISION_DTYPES: Mapping[str, torch.dtype] = {
    "f32": torch.float32,
    "f16": torch.float16,
    "bf16": torch.bfloat16,
    "int8": torch.int8,
    "int4": torch.int8,  # stored one value per byte; packed nibbles are a Program-level detail
}
FLOAT_PRECISIONS = ("f32", "f16", "bf16")


@dataclasses.dataclass(frozen=True)
class Target:
    """One chip model.

    Attributes:
        name: preset name.
        lanes: NPU lanes; channel c of a local-memory tile lives on lane ``c % lanes``.
        local_mem_bytes: local SRAM per lane.
        align_bytes: alignment of a tile's start address (and of its W row for element-aligned ops)
            inside one lane.
        precisions: precisions the chip computes in.
        freq_ghz: clock.
        macs_per_cycle: multiply-accumulates per cycle per lane, by precision (conv, matmul).
        elem_ops_per_cycle: element ops per cycle per lane, by precision (eltwise, activation, pool).
        ddr_gbps: DDR bandwidth in GB/s (10^9 bytes per second).
        dma_latency_cycles: fixed cost of one DMA instruction.
        burst_bytes: DDR burst; a DMA row shorter than a burst still costs a whole burst.
        compute_latency_cycles: issue latency of one compute instruction.
        ddr_bytes: DDR capacity the Program may address.
    """

    name: str
    lanes: int
    local_mem_bytes: int
    align_bytes: int
    precisions: tuple[str, ...]
    freq_ghz: float
    macs_per_cycle: Mapping[str, int]
    elem_ops_per_cycle: Mapping[str, int]
    ddr_gbps: float
    dma_latency_cycles: int = 100
    burst_bytes: int = 64
    compute_latency_cycles: int = 20
    ddr_bytes: int = 4 << 30

    def check_precision(self, precision: str) -> None:
        """Raise :class:`TargetError` unless this chip computes in ``precision``."""
        if precision not in PRECISION_DTYPES:
            raise TargetError(f"unknown precision '{precision}' (known: {', '.join(PRECISION_DTYPES)})")
        if precision not in self.precisions:
            raise TargetError(f"target {self.name} has no precision {precision} "
                              f"(it has: {', '.join(self.precisions)})")

    @property
    def local_mem_total(self) -> int:
        return self.lanes * self.local_mem_bytes

    def peak_macs_per_s(self, precision: str) -> float:
        return self.lanes * self.macs_per_cycle[precision] * self.freq_ghz * 1e9


def _rates(int8: int, half: int, f32: int) -> dict[str, int]:
    return {"int8": int8, "int4": int8 * 2, "f16": half, "bf16": half, "f32": f32}


PRESETS: dict[str, Target] = {
    t.name: t
    for t in (
        # BM1684X-like: 64 lanes x 256 KiB, 1 GHz, 32 TOPS int8 class.
        Target(name="bm1684x", lanes=64, local_mem_bytes=256 << 10, align_bytes=64,
               precisions=("f32", "f16", "bf16", "int8"), freq_ghz=1.0,
               macs_per_cycle=_rates(256, 128, 16), elem_ops_per_cycle=_rates(64, 32, 16),
               ddr_gbps=64.0),
        # BM1688-like: 32 lanes x 128 KiB, 0.9 GHz; INT4 arrives with the INT4 work.
        Target(name="bm1688", lanes=32, local_mem_bytes=128 << 10, align_bytes=32,
               precisions=("f32", "f16", "bf16", "int8", "int4"), freq_ghz=0.9,
               macs_per_cycle=_rates(256, 128, 16), elem_ops_per_cycle=_rates(64, 32, 16),
               ddr_gbps=32.0),
        # CV183x-like: INT8/BF16 only, 32 lanes x 32 KiB, 0.75 GHz, ~1.5 TOPS int8.
        Target(name="cv183x", lanes=32, local_mem_bytes=32 << 10, align_bytes=16,
               precisions=("bf16", "int8"), freq_ghz=0.75,
               macs_per_cycle=_rates(32, 8, 1), elem_ops_per_cycle=_rates(16, 8, 1),
               ddr_gbps=12.8, ddr_bytes=1 << 30),
    )
}


def get_target(target: str | Target) -> Target:
    """Return a preset by name (or the Target itself); unknown names are a :class:`TargetError`."""
    if isinstance(target, Target):
        return target
    try:
        return PRESETS[target]
    except KeyError:
        raise TargetError(f"unknown target '{target}' (presets: {', '.join(PRESETS)})") from None

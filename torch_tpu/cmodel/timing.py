"""Timing model of the cmodel: cycles per instruction, two engine timelines, profile and trace.

Formulas (numbers from :class:`torch_tpu.targets.Target`; bm1684x: 1 GHz, 64 lanes, align 64 B,
MACs/cycle/lane 256 int8, 128 f16/bf16, 16 f32; element ops/cycle/lane 64 / 32 / 16; DDR 64 GB/s
= 64 B/cycle; DMA latency 100, compute issue latency 20, burst 64 B):

DMA (dma_load, dma_store, dma_copy)::

    bytes_per_cycle = ddr_gbps / freq_ghz
    row       = the longest contiguous run of the DDR side: W elements when the W stride is 1 (else 1
                element), extended over H, C, N while the strides are dense
    bursts    = rows * ceil(row_bytes / burst_bytes)              (a short row costs a whole burst)
    cycles    = dma_latency + ceil(bursts * burst_bytes / bytes_per_cycle)
    dma_copy counts the bursts of both sides (read + write).

Compute (per lane, the lanes run in parallel; a tile of C channels from lane l occupies
``groups = ceil((l + C) / lanes)`` channel groups, so C = 65 costs as much as C = 128: lane waste;
a channel's H*W elements are padded to the alignment: ``eu(n) = align_up(n * esize, align) / esize``,
alignment waste)::

    conv2d     cycles = latency + ceil(N * groups(out) * eu(Ho*Wo) * (Cin/g * kh * kw) / macs[prec]) [+ epilogue]
    matmul     cycles = latency + ceil(B * groups(out: M on lanes) * eu(N) * K / macs[prec]) [+ epilogue]
    epilogue   (a fused int8 requant) = ceil(out lane elements / elem[int8]): the requant pipeline after the MAC
               array streams the int8 results at the target's int8 element rate, with no issue latency and no
               pass over local memory (an unfused Requant pays latency + its int32 input at the f32 rate); the
               MAC term's eu() then counts the int32 accumulator rows, as without the fused requant
    elementwise (eltwise, activation, cast, requant, lut, qadd)
               cycles = latency + ceil(N * groups(out) * eu(H*W) * ops / elem[prec])
               (qadd: ops = 3 at the int8 rate, its two input rescales and the output requant)
    pool2d     ... with eu(Ho*Wo) * kh * kw element ops
    reduce / softmax / layernorm: over the input tile, ops = 1 / 4 / 5 per element

``prec`` is the rate class of the first input's dtype (int32 runs at the f32 rate); ``ops`` is 1,
or 4 for transcendental activations (sigmoid, tanh, gelu, silu, exp, log, ...).

Engines: each instruction runs on the DMA or the compute engine, in program order per engine,
starting when its engine is free and all its dependencies have finished. Total cycles = the last
end. Roofline bound = max(ideal work at peak rate (no waste), (inputs + outputs + weights) bytes at
peak bandwidth).

Example:
    >>> from torch_tpu.targets import get_target
    >>> from torch_tpu.cmodel.isa import DmaLoad
    >>> from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
    >>> shape = (1, 64, 56, 56)
    >>> inst = DmaLoad(id=0, src=DdrTensor.contiguous(0, shape, DType.F32), dst=LocalTensor(0, 0, shape, DType.F32))
    >>> instruction_cost(inst, get_target("bm1684x")).cycles   # 100 + 802816 B / 64 B per cycle
    12644
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DdrTensor, LocalTensor, align_up
from torch_tpu.targets import Target

#: activations charged 4 element ops (the rest cost 1)
TRANSCENDENTAL = frozenset({"sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "exp", "log", "sqrt", "rsqrt", "elu",
                            "reciprocal", "erf", "softplus", "mish", "hardswish", "hardsigmoid"})


@dataclasses.dataclass(frozen=True)
class Cost:
    """Cost of one instruction: cycles on its engine, the work counted (with waste) and ideal work,
    and DDR traffic in bytes."""

    engine: str
    cycles: int
    work: int = 0
    ideal_work: float = 0.0
    ddr_read: int = 0
    ddr_write: int = 0


def bytes_per_cycle(target: Target) -> float:
    return target.ddr_gbps / target.freq_ghz


def dma_bursts(t: DdrTensor, target: Target) -> tuple[int, int]:
    """(rows, bursts) of a DDR view: contiguous runs and ceil(run_bytes / burst) bursts per run."""
    if t.numel == 0:
        return 0, 0
    run, dense = 1, 1
    for d in (3, 2, 1, 0):
        if t.shape[d] == 1:
            continue
        if t.strides[d] != dense:
            break
        run *= t.shape[d]
        dense *= t.shape[d]
    rows = t.numel // run
    return rows, rows * math.ceil(run * t.dtype.size / target.burst_bytes)


def _dma_cost(inst: isa.Instruction, target: Target) -> Cost:
    bursts, read, write = 0, 0, 0
    for name, t in inst.ddr_operands():
        bursts += dma_bursts(t, target)[1]
        nbytes = t.numel * t.dtype.size
        if name == "src":
            read += nbytes
        else:
            write += nbytes
    cycles = target.dma_latency_cycles + math.ceil(bursts * target.burst_bytes / bytes_per_cycle(target))
    return Cost("dma", cycles, bursts * target.burst_bytes, read + write, read, write)


def _eu(n: int, esize: int, target: Target) -> int:
    """Elements of one lane's channel row after alignment: align_up(n * esize, align) / esize."""
    return align_up(n * esize, target.align_bytes) // esize


def _lane_elems(t: LocalTensor, target: Target) -> int:
    """Per-lane elements a tile occupies: N * groups * eu(H * W)."""
    n, _, h, w = t.shape
    return n * t.groups(target) * _eu(h * w, t.dtype.size, target)


def _compute(target: Target, per_lane_work: int, rate: int, ideal: float) -> Cost:
    return Cost("compute", target.compute_latency_cycles + math.ceil(per_lane_work / rate), per_lane_work,
                ideal / (target.lanes * rate))


def _acc_size(inst: isa.Conv2d | isa.MatMul) -> int:
    """Element size of the rows the MAC array writes: the output's, or int32's when a requant is fused (the
    accumulator is int32 either way, so fusing changes only the epilogue's cost)."""
    return 4 if inst.multiplier else inst.out.dtype.size


def _with_epilogue(cost: Cost, inst: isa.Conv2d | isa.MatMul, target: Target) -> Cost:
    """A fused requant adds ceil(out lane elements / int8 element rate) cycles (module docstring)."""
    if not inst.multiplier:
        return cost
    extra = math.ceil(_lane_elems(inst.out, target) / target.elem_ops_per_cycle[inst.out.dtype.precision])
    return dataclasses.replace(cost, cycles=cost.cycles + extra)


def _conv_cost(inst: isa.Conv2d, target: Target) -> Cost:
    n, cin, _, _ = inst.x.shape
    _, cout, ho, wo = inst.out.shape
    k = cin // inst.groups * inst.kernel[0] * inst.kernel[1]
    work = n * inst.out.groups(target) * _eu(ho * wo, _acc_size(inst), target) * k
    cost = _compute(target, work, target.macs_per_cycle[inst.x.dtype.precision], n * cout * ho * wo * k)
    return _with_epilogue(cost, inst, target)


def _matmul_cost(inst: isa.MatMul, target: Target) -> Cost:
    b, m, _, k = inst.a.shape
    n = inst.out.shape[3]
    work = b * inst.out.groups(target) * _eu(n, _acc_size(inst), target) * k
    cost = _compute(target, work, target.macs_per_cycle[inst.a.dtype.precision], b * m * n * k)
    return _with_epilogue(cost, inst, target)


def _elementwise_cost(ops: Callable[[isa.Instruction], int], src: str = "x", over: str = "out"
                      ) -> Callable[[isa.Instruction, Target], Cost]:
    def cost(inst: isa.Instruction, target: Target) -> Cost:
        t = getattr(inst, over)
        k = ops(inst)
        rate = target.elem_ops_per_cycle[getattr(inst, src).dtype.precision]
        return _compute(target, _lane_elems(t, target) * k, rate, t.numel * k)
    return cost


def _pool_cost(inst: isa.Pool2d, target: Target) -> Cost:
    kk = inst.kernel[0] * inst.kernel[1]
    rate = target.elem_ops_per_cycle[inst.x.dtype.precision]
    return _compute(target, _lane_elems(inst.out, target) * kk, rate, inst.out.numel * kk)


#: opcode -> cost function (registration in one place)
COSTS: dict[str, Callable[[isa.Instruction, Target], Cost]] = {
    "dma_load": _dma_cost, "dma_store": _dma_cost, "dma_copy": _dma_cost,
    "conv2d": _conv_cost, "matmul": _matmul_cost, "pool2d": _pool_cost,
    "eltwise": _elementwise_cost(lambda i: 1, src="a"),
    "activation": _elementwise_cost(lambda i: 4 if i.op in TRANSCENDENTAL else 1),
    "cast": _elementwise_cost(lambda i: 1), "requant": _elementwise_cost(lambda i: 1),
    "qadd": _elementwise_cost(lambda i: 3, src="a"),
    "lut": _elementwise_cost(lambda i: 1),
    "reduce": _elementwise_cost(lambda i: 1, over="x"),
    "softmax": _elementwise_cost(lambda i: 4, over="x"),
    "layernorm": _elementwise_cost(lambda i: 5, over="x"),
    "compare": _elementwise_cost(lambda i: 1, src="a"), "select": _elementwise_cost(lambda i: 1, src="a"),
    "gather": _elementwise_cost(lambda i: 1, src="out"),
}
assert set(COSTS) == set(isa.OPCODES), "every opcode needs a cost formula"


def instruction_cost(inst: isa.Instruction, target: Target) -> Cost:
    """Cycles and traffic of one instruction (see the module docstring for the formulas)."""
    return COSTS[inst.OPCODE](inst, target)


@dataclasses.dataclass
class Event:
    """One instruction on its engine's timeline."""

    id: int
    opcode: str
    layer: str
    engine: str
    start: int
    cycles: int

    @property
    def end(self) -> int:
        return self.start + self.cycles


@dataclasses.dataclass
class LayerCost:
    """Per-layer totals (busy cycles per engine, first start, last end)."""

    dma_cycles: int = 0
    compute_cycles: int = 0
    start: int = 0
    end: int = 0
    instructions: int = 0


@dataclasses.dataclass
class Profile:
    """Timing of one run of a Program on a target."""

    target: Target
    events: list[Event]
    total_cycles: int
    ddr_read_bytes: int
    ddr_write_bytes: int
    dma_busy: int
    compute_busy: int
    layers: dict[str, LayerCost]
    roofline_cycles: float

    @property
    def latency_s(self) -> float:
        return self.total_cycles / (self.target.freq_ghz * 1e9)

    @property
    def dma_utilization(self) -> float:
        return self.dma_busy / self.total_cycles if self.total_cycles else 0.0

    @property
    def compute_utilization(self) -> float:
        return self.compute_busy / self.total_cycles if self.total_cycles else 0.0

    @property
    def roofline_ratio(self) -> float:
        """Simulated cycles / roofline bound (>= 1 when the bound is a true lower bound)."""
        return self.total_cycles / self.roofline_cycles if self.roofline_cycles else float("inf")

    def as_dict(self) -> dict:
        """The numbers of this profile as plain JSON-able data (benchmarks, reports)."""
        return {
            "target": self.target.name, "total_cycles": self.total_cycles, "latency_s": self.latency_s,
            "ddr_read_bytes": self.ddr_read_bytes, "ddr_write_bytes": self.ddr_write_bytes,
            "dma_utilization": self.dma_utilization, "compute_utilization": self.compute_utilization,
            "roofline_cycles": self.roofline_cycles, "roofline_ratio": self.roofline_ratio,
            "layers": {k: dataclasses.asdict(v) for k, v in self.layers.items()},
        }

    def to_chrome_trace(self) -> dict:
        """Chrome / Perfetto trace: one process, tracks ``DMA`` (tid 0) and ``compute`` (tid 1), times in us."""
        us = 1e-3 / self.target.freq_ghz
        events: list[dict] = [
            {"ph": "M", "pid": 0, "name": "process_name", "args": {"name": f"cmodel {self.target.name}"}},
            {"ph": "M", "pid": 0, "tid": 0, "name": "thread_name", "args": {"name": "DMA"}},
            {"ph": "M", "pid": 0, "tid": 1, "name": "thread_name", "args": {"name": "compute"}},
        ]
        for e in self.events:
            events.append({"ph": "X", "pid": 0, "tid": 0 if e.engine == "dma" else 1, "name": e.opcode,
                           "cat": e.layer or "program", "ts": e.start * us, "dur": e.cycles * us,
                           "args": {"id": e.id, "layer": e.layer, "cycles": e.cycles}})
        return {"traceEvents": events, "displayTimeUnit": "ns"}

    def save_trace(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_chrome_trace(), f)

    def summary(self) -> str:
        """A text report: totals, utilization, roofline, and the per-layer table."""
        lines = [f"target {self.target.name}: {self.total_cycles} cycles = {self.latency_s * 1e3:.4f} ms",
                 f"DDR read {self.ddr_read_bytes} B, written {self.ddr_write_bytes} B",
                 f"utilization: DMA {self.dma_utilization:.1%}, compute {self.compute_utilization:.1%}",
                 f"roofline bound {self.roofline_cycles:.0f} cycles, ratio {self.roofline_ratio:.2f}",
                 f"{'layer':<32}{'dma cycles':>12}{'compute cycles':>16}{'start':>10}{'end':>10}"]
        for name, lc in self.layers.items():
            lines.append(f"{name or '(none)':<32}{lc.dma_cycles:>12}{lc.compute_cycles:>16}{lc.start:>10}{lc.end:>10}")
        return "\n".join(lines)


def simulate_timing(instructions: list[isa.Instruction], target: Target, min_ddr_bytes: int = 0) -> Profile:
    """Schedule instructions on two engines (in order per engine, after their deps) and sum the costs.

    Args:
        instructions: the program's instructions (ids unique, deps on earlier ids).
        target: the chip.
        min_ddr_bytes: bytes any implementation must move (IO + weights), for the roofline bound.
    """
    free = {"dma": 0, "compute": 0}
    busy = {"dma": 0, "compute": 0}
    end: dict[int, int] = {}
    events: list[Event] = []
    layers: dict[str, LayerCost] = {}
    read = write = 0
    ideal = 0.0
    for inst in instructions:
        c = instruction_cost(inst, target)
        start = max([free[c.engine]] + [end[d] for d in inst.deps])
        ev = Event(inst.id, inst.OPCODE, inst.layer, c.engine, start, c.cycles)
        events.append(ev)
        end[inst.id] = free[c.engine] = ev.end
        busy[c.engine] += c.cycles
        read += c.ddr_read
        write += c.ddr_write
        if c.engine == "compute":
            ideal += c.ideal_work
        lc = layers.get(inst.layer)
        if lc is None:
            lc = layers[inst.layer] = LayerCost(start=start, end=ev.end)
        lc.instructions += 1
        lc.start, lc.end = min(lc.start, start), max(lc.end, ev.end)
        if c.engine == "dma":
            lc.dma_cycles += c.cycles
        else:
            lc.compute_cycles += c.cycles
    total = max(free.values())
    roofline = max(ideal, min_ddr_bytes / bytes_per_cycle(target))
    return Profile(target, events, total, read, write, busy["dma"], busy["compute"], layers, roofline)

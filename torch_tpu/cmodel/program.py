"""The Program: what the compiler emits and the cmodel runs, and its file format (``.tpu``).

File layout (little endian), no pickle::

    8 bytes   magic b"TORCHTPU"
    u32       format version (FORMAT_VERSION)
    u64       header length L
    L bytes   header: UTF-8 JSON {"format": "torch_tpu.program", "version", "target", "regions",
              "inputs", "outputs", "weights": {"region", "nbytes", "sha256"}, "instructions",
              optional "probes"}
    nbytes    weight bytes, loaded at the base of the weight region

``save`` writes a temporary file beside the target and renames it (never a half-written file).
``load`` checks magic, version, lengths (a truncated file is refused), the weights' sha256, every
field's type, and then :meth:`Program.validate`: regions inside the target's DDR and disjoint, IO
tensors inside a region, instruction ids unique with dependencies on earlier ids, and every
instruction's operands (shapes, dtypes, local ranges per lane, DDR ranges inside a region; no DMA
writes into the weight region). Each refusal is a :class:`ProgramError` saying which instruction
and which field.

Example:
    >>> from torch_tpu.cmodel.operands import DType
    >>> p = Program(target="bm1684x", regions=[DdrRegion("activation", 0, 4096)],
    ...             inputs=[IOTensor("x", (1, 4), DType.F32, 0)], outputs=[IOTensor("x", (1, 4), DType.F32, 0)],
    ...             instructions=[])
    >>> p.validate()
    >>> p.ddr_bytes
    4096
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from torch_tpu.cmodel import codec, isa
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import ProgramError, TargetError
from torch_tpu.targets import Target, get_target

#: 2: conv2d / matmul carry a fused requant (multiplier, shift, zero_point, qmin, qmax) and conv2d a
#: pad_value; files of another version are refused (deploy the model again)
FORMAT_VERSION = 2
MAGIC = b"TORCHTPU"
_PREFIX = struct.Struct("<8sIQ")


@dataclasses.dataclass(frozen=True)
class IOTensor:
    """A program input or output: contiguous in DDR at ``addr``, with its quantization parameters
    (``real = (q - zero_point) * scale`` for integer tensors)."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    addr: int
    scale: float = 1.0
    zero_point: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.size


@dataclasses.dataclass(frozen=True)
class Probe:
    """Where a named intermediate value can be read for debugging: contiguous at ``addr`` in DDR, complete
    once instruction ``after`` has run (``-1``: before the first instruction). Codegen writes one per TPU-graph
    value (the stable name), so ``run_program(..., debug=True)`` returns whole tensors by name, comparable with
    the TPU graph's named values. Probes never change what a program computes."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    addr: int
    after: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.size


@dataclasses.dataclass(frozen=True)
class DdrRegion:
    """A named DDR range ``[base, base + size)`` (``weight``, ``activation``, ...)."""

    name: str
    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclasses.dataclass
class Program:
    """A compiled program for one target.

    Attributes:
        target: preset name of the chip.
        regions: DDR regions; every DDR access must fall inside one.
        inputs / outputs: IO tensors (names unique within each list).
        instructions: executed in order; ``deps`` drive the timing model.
        weights: bytes copied to the base of ``weight_region`` before a run.
        weight_region: name of the region that holds the weights (read-only for DMA).
        version: format version.
        probes: named intermediate values readable after a given instruction (``debug=True`` runs).
    """

    target: str
    regions: list[DdrRegion]
    inputs: list[IOTensor]
    outputs: list[IOTensor]
    instructions: list[isa.Instruction]
    weights: bytes = b""
    weight_region: str = "weight"
    version: int = FORMAT_VERSION
    probes: list[Probe] = dataclasses.field(default_factory=list)

    @property
    def ddr_bytes(self) -> int:
        """DDR the program addresses: the end of its last region."""
        return max((r.end for r in self.regions), default=0)

    @property
    def weights_sha256(self) -> str:
        return hashlib.sha256(self.weights).hexdigest()

    def get_target(self) -> Target:
        try:
            return get_target(self.target)
        except TargetError as e:
            raise ProgramError(f"program: {e}") from None

    # ---- validation --------------------------------------------------------------------------

    def _region_of(self, start: int, end: int) -> DdrRegion | None:
        for r in self.regions:
            if r.base <= start and end <= r.end:
                return r
        return None

    def validate(self) -> None:
        """Check everything a run relies on; raise :class:`ProgramError` naming what is wrong."""
        if self.version != FORMAT_VERSION:
            raise ProgramError(f"program: format version {self.version}, this cmodel reads {FORMAT_VERSION}")
        target = self.get_target()
        names = set()
        for r in sorted(self.regions, key=lambda r: r.base):
            if r.name in names:
                raise ProgramError(f"program: DDR region '{r.name}' defined twice")
            names.add(r.name)
            if r.base < 0 or r.size <= 0 or r.end > target.ddr_bytes:
                raise ProgramError(f"program: DDR region '{r.name}' [{r.base}, {r.end}) outside the target's "
                                   f"DDR of {target.ddr_bytes} bytes")
        ordered = sorted(self.regions, key=lambda r: r.base)
        for a, b in zip(ordered, ordered[1:]):
            if b.base < a.end:
                raise ProgramError(f"program: DDR regions '{a.name}' and '{b.name}' overlap")
        wregion = next((r for r in self.regions if r.name == self.weight_region), None)
        if self.weights and (wregion is None or len(self.weights) > wregion.size):
            raise ProgramError(f"program: {len(self.weights)} weight bytes do not fit region '{self.weight_region}'")
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            seen = set()
            for t in tensors:
                if t.name in seen:
                    raise ProgramError(f"program: {kind} '{t.name}' listed twice")
                seen.add(t.name)
                if any(not isinstance(d, int) or d < 0 for d in t.shape):
                    raise ProgramError(f"program: {kind} '{t.name}': bad shape {t.shape}")
                if self._region_of(t.addr, t.addr + t.nbytes) is None or t.addr < 0:
                    raise ProgramError(f"program: {kind} '{t.name}': DDR bytes [{t.addr}, {t.addr + t.nbytes}) "
                                       "outside every DDR region")
        ids: set[int] = set()
        for inst in self.instructions:
            if inst.id in ids:
                raise inst.fail("id", "duplicate instruction id")
            for d in inst.deps:
                if d not in ids:
                    raise inst.fail("deps", f"depends on {d}, which is not an earlier instruction")
            inst.check(target)
            self._check_ddr(inst)
            ids.add(inst.id)
        for pr in self.probes:
            if pr.after != -1 and pr.after not in ids:
                raise ProgramError(f"program: probe '{pr.name}': 'after' {pr.after} is not an instruction id")
            if any(not isinstance(d, int) or d < 0 for d in pr.shape) or pr.addr < 0 or \
                    self._region_of(pr.addr, pr.addr + pr.nbytes) is None:
                raise ProgramError(f"program: probe '{pr.name}': DDR bytes [{pr.addr}, {pr.addr + pr.nbytes}) "
                                   "outside every DDR region")

    def _check_ddr(self, inst: isa.Instruction) -> None:
        for name, t in inst.ddr_operands():
            start, end = t.byte_range()
            if end == start:
                continue
            region = self._region_of(start, end)
            if region is None:
                raise inst.fail(name, f"DDR bytes [{start}, {end}) outside every DDR region "
                                      f"({', '.join(f'{r.name} [{r.base}, {r.end})' for r in self.regions)})")
            if name == "dst" and region.name == self.weight_region and self.weights:
                raise inst.fail(name, f"writes into the weight region '{region.name}'")

    def to_text(self) -> str:
        """A readable listing: header, regions, IO, then one line per instruction (for dump_dir and diffs)."""
        lines = [f"program v{self.version} target {self.target}  weights {len(self.weights)} B "
                 f"sha256 {self.weights_sha256[:16]}"]
        lines += [f"region {r.name} [{r.base:#x}, {r.end:#x})" for r in self.regions]
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            lines += [f"{kind} {t.name} {'x'.join(map(str, t.shape))} {t.dtype.label} @{t.addr:#x} "
                      f"scale {t.scale:g} zp {t.zero_point}" for t in tensors]
        for inst in self.instructions:
            parts = [f"%{inst.id:<4} {inst.OPCODE:<10} [{inst.layer}]"]
            if inst.deps:
                parts.append("deps=" + ",".join(map(str, inst.deps)))
            for f in dataclasses.fields(inst):
                if f.name in ("id", "deps", "layer"):
                    continue
                parts.append(f"{f.name}={_fmt(getattr(inst, f.name))}")
            lines.append(" ".join(parts))
        return "\n".join(lines) + "\n"

    # ---- file I/O ----------------------------------------------------------------------------

    def to_header(self) -> dict[str, Any]:
        io = lambda t: {"name": t.name, "shape": list(t.shape), "dtype": t.dtype.label, "addr": t.addr,  # noqa: E731
                        "scale": t.scale, "zero_point": t.zero_point}
        return {
            "format": "torch_tpu.program", "version": self.version, "target": self.target,
            "regions": [{"name": r.name, "base": r.base, "size": r.size} for r in self.regions],
            "inputs": [io(t) for t in self.inputs], "outputs": [io(t) for t in self.outputs],
            "weights": {"region": self.weight_region, "nbytes": len(self.weights), "sha256": self.weights_sha256},
            "instructions": [codec.encode(i) for i in self.instructions],
            "probes": [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype.label, "addr": p.addr,
                        "after": p.after} for p in self.probes],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Validate and write atomically (temp file in the same directory, then rename)."""
        self.validate()
        path = Path(path)
        header = json.dumps(self.to_header(), separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_PREFIX.pack(MAGIC, self.version, len(header)))
                f.write(header)
                f.write(self.weights)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Program":
        """Read and validate a program file; a bad file is a :class:`ProgramError` naming the problem."""
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ProgramError(f"{path}: cannot read: {e}") from None
        try:
            return cls.from_bytes(data)
        except ProgramError as e:
            raise ProgramError(f"{path}: {e}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> "Program":
        if len(data) < _PREFIX.size:
            raise ProgramError(f"file is truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix")
        magic, version, hlen = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            raise ProgramError(f"not a torch_tpu program (magic {magic!r})")
        if version != FORMAT_VERSION:
            raise ProgramError(f"format version {version}, this cmodel reads {FORMAT_VERSION} (deploy the model again "
                               "with this torch_tpu)")
        if _PREFIX.size + hlen > len(data):
            raise ProgramError(f"file is truncated: header of {hlen} bytes, {len(data) - _PREFIX.size} present")
        try:
            h = json.loads(data[_PREFIX.size:_PREFIX.size + hlen].decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProgramError(f"header is not valid JSON: {e}") from None
        if not isinstance(h, dict) or h.get("format") != "torch_tpu.program" or h.get("version") != version:
            raise ProgramError("header does not describe a torch_tpu program of this version")
        w = _get(h, "weights", dict, "header")
        nbytes = _get(w, "nbytes", int, "weights")
        expect = _PREFIX.size + hlen + nbytes
        if len(data) != expect:
            raise ProgramError(f"file is {'truncated' if len(data) < expect else 'too long'}: {len(data)} bytes, "
                               f"header says {expect}")
        weights = data[_PREFIX.size + hlen:]
        if hashlib.sha256(weights).hexdigest() != _get(w, "sha256", str, "weights"):
            raise ProgramError("weight checksum mismatch (sha256): the weights are corrupt")
        instructions = _get(h, "instructions", list, "header")
        prog = cls(
            target=_get(h, "target", str, "header"),
            regions=[DdrRegion(_get(r, "name", str, "region"), _get(r, "base", int, "region"),
                               _get(r, "size", int, "region")) for r in _get(h, "regions", list, "header")],
            inputs=[_io(t, "input") for t in _get(h, "inputs", list, "header")],
            outputs=[_io(t, "output") for t in _get(h, "outputs", list, "header")],
            instructions=[codec.decode(d) for d in instructions],
            weights=weights, weight_region=_get(w, "region", str, "weights"), version=version,
            probes=[_probe(d) for d in (_get(h, "probes", list, "header") if "probes" in h else [])])
        prog.validate()
        return prog


def _fmt(v: Any) -> str:
    if isinstance(v, LocalTensor):
        return f"L(lane {v.lane} @{v.addr:#x} {'x'.join(map(str, v.shape))} {v.dtype.label})"
    if isinstance(v, DdrTensor):
        return (f"D(@{v.addr:#x} {'x'.join(map(str, v.shape))} s[{','.join(map(str, v.strides))}] "
                f"{v.dtype.label})")
    if isinstance(v, tuple):
        return "(" + ",".join(map(str, v)) + ")"
    return str(v)


def _get(d: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ProgramError(f"{where}: missing field '{key}'")
    v = d[key]
    ok = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
    if typ is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if not ok:
        raise ProgramError(f"{where}: field '{key}' must be {typ.__name__}, got {v!r}")
    return v


def _io(d: Any, kind: str) -> IOTensor:
    name = _get(d, "name", str, kind)
    where = f"{kind} '{name}'"
    shape = _get(d, "shape", list, where)
    if any(not isinstance(s, int) or isinstance(s, bool) for s in shape):
        raise ProgramError(f"{where}: shape must be integers, got {shape}")
    return IOTensor(name, tuple(shape), DType.parse(_get(d, "dtype", str, where)), _get(d, "addr", int, where),
                    float(_get(d, "scale", float, where)), _get(d, "zero_point", int, where))


def _probe(d: Any) -> Probe:
    name = _get(d, "name", str, "probe")
    where = f"probe '{name}'"
    shape = _get(d, "shape", list, where)
    if any(not isinstance(s, int) or isinstance(s, bool) for s in shape):
        raise ProgramError(f"{where}: shape must be integers, got {shape}")
    return Probe(name, tuple(shape), DType.parse(_get(d, "dtype", str, where)), _get(d, "addr", int, where),
                 _get(d, "after", int, where))


def ddr_view(t: IOTensor) -> DdrTensor:
    """An IO tensor as a contiguous N,C,H,W DDR view (shape right-aligned into 4 dims)."""
    dims = list(t.shape)
    if len(dims) > 4:
        dims = [math.prod(dims[:len(dims) - 3])] + dims[len(dims) - 3:]
    dims = [1] * (4 - len(dims)) + dims
    return DdrTensor.contiguous(t.addr, tuple(dims), t.dtype)

"""The cmodel instruction set: DMA and compute instructions over DDR and per-lane local memory.

Every instruction has an ``id``, the ``deps`` (ids of earlier instructions it waits for; the timing
model uses them, functional execution runs in program order) and the ``layer`` (stable name of the
TPU-graph node it belongs to). Operands are :class:`DdrTensor` (strided N,C,H,W view of DDR) or
:class:`LocalTensor` (an N,C,H,W tile in local memory).

Local memory layout: see :mod:`torch_tpu.cmodel.operands`.

Conventions of the compute operands (all 4-D N,C,H,W):
    conv2d: x (N, Cin, H, W), w (1, Cout, 1, Cin/groups * kh * kw) in OIHW order (output channel
        on the lanes, like the output), bias (1, Cout, 1, 1), out (N, Cout, Ho, Wo).
    matmul: a (B, M, 1, K), b (B or 1, K, 1, N), bias (1, 1, 1, N), out (B, M, 1, N).
    eltwise: a, b broadcast to out (a dim of 1 repeats); b may be absent, then ``scalar`` is used.

Example:
    >>> inst = Activation(id=3, deps=(2,), layer="relu1", op="relu",
    ...                   x=LocalTensor(0, 0, (1, 8, 4, 4), DType.F32), out=LocalTensor(0, 64, (1, 8, 4, 4), DType.F32))
    >>> inst.OPCODE, inst.ENGINE
    ('activation', 'compute')
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Iterator

from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.errors import ProgramError
from torch_tpu.targets import Target


@dataclasses.dataclass(frozen=True, kw_only=True)
class Instruction:
    """Fields every instruction has: its ``id``, the ids it depends on, and its layer's stable name."""

    OPCODE: ClassVar[str] = ""
    ENGINE: ClassVar[str] = "compute"
    #: names of the local-memory input operands, in the order kernels receive them
    INPUTS: ClassVar[tuple[str, ...]] = ()

    id: int
    deps: tuple[int, ...] = ()
    layer: str = ""

    def fail(self, field: str, message: str) -> ProgramError:
        """A :class:`ProgramError` naming this instruction and the bad field."""
        where = f"instruction {self.id} ({self.OPCODE}"
        if self.layer:
            where += f", layer '{self.layer}'"
        return ProgramError(f"{where}): field '{field}': {message}")

    def inputs(self) -> list[LocalTensor | None]:
        return [getattr(self, name) for name in self.INPUTS]

    def local_operands(self) -> Iterator[tuple[str, LocalTensor]]:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, LocalTensor):
                yield f.name, v

    def ddr_operands(self) -> Iterator[tuple[str, DdrTensor]]:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, DdrTensor):
                yield f.name, v

    def check(self, target: Target) -> None:
        """Validate operand shapes, dtypes and local address ranges; raise :class:`ProgramError`."""
        if not isinstance(self.id, int) or self.id < 0:
            raise self.fail("id", f"must be a non-negative integer, got {self.id!r}")
        for name, t in self.local_operands():
            _check_local(self, name, t, target)
        for name, t in self.ddr_operands():
            _check_shape(self, name, t.shape)
            if len(t.strides) != 4 or any((not isinstance(s, int)) or s < 0 for s in t.strides):
                raise self.fail(name, f"strides must be 4 non-negative integers, got {t.strides}")
            if t.addr < 0:
                raise self.fail(name, f"negative DDR address {t.addr}")
        self.check_fields(target)

    def check_fields(self, target: Target) -> None:
        """Instruction-specific checks; overridden by each instruction."""


def _check_shape(inst: Instruction, name: str, shape: tuple) -> None:
    if len(shape) != 4 or any((not isinstance(d, int)) or d < 1 for d in shape):
        raise inst.fail(name, f"shape must be 4 positive integers, got {shape}")


def _check_local(inst: Instruction, name: str, t: LocalTensor, target: Target) -> None:
    _check_shape(inst, name, t.shape)
    if not 0 <= t.lane < target.lanes:
        raise inst.fail(name, f"lane {t.lane} outside 0..{target.lanes - 1}")
    if t.addr < 0 or t.addr % target.align_bytes:
        raise inst.fail(name, f"local address {t.addr} is not a non-negative multiple of {target.align_bytes}")
    end = t.addr + t.bytes_per_lane(target)
    if end > target.local_mem_bytes:
        raise inst.fail(name, f"local bytes [{t.addr}, {end}) exceed the lane size {target.local_mem_bytes}")


def _same_shape(inst: Instruction, name: str, a: Any, b: Any) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise inst.fail(name, f"shape {a.shape} differs from {b.shape}")


def _same_dtype(inst: Instruction, name: str, a: Any, b: Any) -> None:
    if a.dtype != b.dtype:
        raise inst.fail(name, f"dtype {a.dtype.label} differs from {b.dtype.label}")


def _broadcasts_to_out(inst: Instruction, *names: str) -> None:
    """Each named operand that is present broadcasts to ``inst.out`` (its dims are 1 or equal)."""
    for name in names:
        t = getattr(inst, name)
        if t is not None and any(d not in (1, o) for d, o in zip(t.shape, inst.out.shape)):
            raise inst.fail(name, f"shape {t.shape} does not broadcast to {inst.out.shape}")


def _float_or_int(inst: Instruction, name: str, dtypes: list[DType]) -> bool:
    """True when all are float, False when all are integer, else a ProgramError."""
    kinds = {d.is_float for d in dtypes}
    if len(kinds) != 1:
        raise inst.fail(name, "mixes float and integer dtypes (" + ", ".join(d.label for d in dtypes) + ")")
    return kinds.pop()


#: fused activations of conv2d / matmul
FUSED_ACTS = ("none", "relu", "relu6", "clip")


def _check_fused_act(inst: Instruction, is_float: bool) -> None:
    act = inst.act
    if act not in FUSED_ACTS:
        raise inst.fail("act", f"unknown fused activation {act!r} (known: {', '.join(FUSED_ACTS)})")
    if not is_float:
        if act == "relu6":
            raise inst.fail("act", "relu6 has no integer form (use clip with integer bounds)")
        if act == "clip" and (inst.act_lo != int(inst.act_lo) or inst.act_hi != int(inst.act_hi)):
            raise inst.fail("act_lo", "integer clip needs integral bounds")
    if act == "clip" and not inst.act_lo <= inst.act_hi:
        raise inst.fail("act_lo", f"clip bounds {inst.act_lo} > {inst.act_hi}")




# ---- instructions ------------------------------------------------------------------------------

OPCODES: dict[str, type[Instruction]] = {}


def _register(cls: type[Instruction]) -> type[Instruction]:
    if not cls.OPCODE or cls.OPCODE in OPCODES:
        raise ProgramError(f"opcode {cls.OPCODE!r} of {cls.__name__} is empty or already registered")
    OPCODES[cls.OPCODE] = cls
    return cls


_frozen = dataclasses.dataclass(frozen=True, kw_only=True)


class _Dma(Instruction):
    """A DMA copy: ``dst[n, c, h, w] = src[n, c, h, w]``, same shape and dtype (subclasses set where)."""

    ENGINE = "dma"

    def check_fields(self, target: Target) -> None:
        _same_shape(self, "dst", self.dst, self.src)
        _same_dtype(self, "dst", self.dst, self.src)


@_register
@_frozen
class DmaLoad(_Dma):
    """DDR -> local memory: ``dst[n, c, h, w] = src[n, c, h, w]`` (same shape and dtype)."""

    OPCODE = "dma_load"
    src: DdrTensor
    dst: LocalTensor


@_register
@_frozen
class DmaStore(_Dma):
    """Local memory -> DDR: ``dst[n, c, h, w] = src[n, c, h, w]``."""

    OPCODE = "dma_store"
    src: LocalTensor
    dst: DdrTensor


@_register
@_frozen
class DmaCopy(_Dma):
    """DDR -> DDR strided copy (permute, slice, concat): ``dst[n, c, h, w] = src[n, c, h, w]``."""

    OPCODE = "dma_copy"
    src: DdrTensor
    dst: DdrTensor


@_register
@_frozen
class Conv2d(Instruction):
    """2-D convolution with groups, dilation, asymmetric padding and a fused activation (and, for int8,
    a fused requantization).

    ``acc[n, o, y, x] = act(bias[o] + sum_{i, ky, kx} in[n, g*Cin_g + i, y*sh - pt + ky*dh, x*sw - pl + kx*dw]
    * w[o, i, ky, kx])`` with ``g = o // Cout_g``, where a tap outside the input reads ``pad_value`` (0 for
    float operands; an int8 conv over an input with zero point zp pads with zp, so that ``bias - zp*sum(w[o])``
    is exactly the zero-point correction everywhere, borders included). f32 accumulation for float operands
    (rounded once to ``out.dtype``), exact integer for int8 operands (int32 bias): the int32 output is
    ``sat_int32(acc)``, or with a fused requant (``multiplier`` not empty) the int8 output is
    ``clamp(rshift_round_half_away(sat_int32(acc) * multiplier[o], shift[o]) + zero_point, qmin, qmax)``
    (``kernels_ref.requant_epilogue``: the unfused ``conv -> requant -> clip`` exactly). Fields: ``kernel``
    (kh, kw), ``stride`` (sh, sw), ``pad`` (top, bottom, left, right), ``dilation`` (dh, dw), ``groups``, ``act`` in
    FUSED_ACTS with
    ``act_lo``/``act_hi`` for clip, ``pad_value``, and the fused requant: ``multiplier``/``shift`` (empty: none;
    1 or Cout pairs), ``zero_point``, ``qmin``/``qmax``.
    """

    OPCODE = "conv2d"
    INPUTS = ("x", "w", "bias")
    x: LocalTensor
    w: LocalTensor
    bias: LocalTensor | None = None
    out: LocalTensor
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    act: str = "none"
    act_lo: float = 0.0
    act_hi: float = 0.0
    pad_value: int = 0
    multiplier: tuple[int, ...] = ()
    shift: tuple[int, ...] = ()
    zero_point: int = 0
    qmin: int = -128
    qmax: int = 127

    def out_hw(self) -> tuple[int, int]:
        """Ho = (H + pt + pb - dh (kh - 1) - 1) // sh + 1, and the same for W."""
        _, _, h, w = self.x.shape
        (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = self.kernel, self.stride, self.pad, self.dilation
        return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1

    def check_fields(self, target: Target) -> None:
        if min(self.kernel + self.stride + self.dilation) < 1 or min(self.pad) < 0:
            raise self.fail("kernel", "kernel, stride, dilation must be >= 1 and pads >= 0")
        n, cin, _, _ = self.x.shape
        on, cout, ho, wo = self.out.shape
        g = self.groups
        if g < 1 or cin % g or cout % g:
            raise self.fail("groups", f"{g} groups do not divide Cin={cin} and Cout={cout}")
        kh, kw = self.kernel
        if self.w.shape != (1, cout, 1, cin // g * kh * kw):
            raise self.fail("w", f"shape {self.w.shape}, expected {(1, cout, 1, cin // g * kh * kw)}")
        if self.bias is not None and self.bias.shape != (1, cout, 1, 1):
            raise self.fail("bias", f"shape {self.bias.shape}, expected {(1, cout, 1, 1)}")
        if on != n or (ho, wo) != self.out_hw():
            raise self.fail("out", f"shape {self.out.shape}, expected {(n, cout) + self.out_hw()}")
        _check_mac_dtypes(self, self.x, self.w, self.bias, self.out, cout)
        if not isinstance(self.pad_value, int) or isinstance(self.pad_value, bool):
            raise self.fail("pad_value", f"must be an integer, got {self.pad_value!r}")
        if self.pad_value and self.x.dtype != DType.INT8:
            raise self.fail("pad_value", "a non-zero pad value needs int8 operands (float convs pad with 0)")
        if not -128 <= self.pad_value <= 127:
            raise self.fail("pad_value", f"{self.pad_value} is not an int8 value")


@_register
@_frozen
class MatMul(Instruction):
    """Batched matmul with bias, fused activation and (int8) fused requantization.

    ``acc[b, m, 0, n] = act(bias[n] + sum_k a[b, m, 0, k] * b[b or 0, k, 0, n])``; numerics as Conv2d; a fused
    requant (``multiplier`` not empty) has 1 (per tensor) or N (per output column) multiplier/shift pairs.
    """

    OPCODE = "matmul"
    INPUTS = ("a", "b", "bias")
    a: LocalTensor
    b: LocalTensor
    bias: LocalTensor | None = None
    out: LocalTensor
    act: str = "none"
    act_lo: float = 0.0
    act_hi: float = 0.0
    multiplier: tuple[int, ...] = ()
    shift: tuple[int, ...] = ()
    zero_point: int = 0
    qmin: int = -128
    qmax: int = 127

    def check_fields(self, target: Target) -> None:
        bsz, m, one, k = self.a.shape
        bb, k2, one2, n = self.b.shape
        if one != 1 or one2 != 1 or k2 != k or bb not in (1, bsz):
            raise self.fail("b", f"shapes a {self.a.shape} and b {self.b.shape} do not multiply "
                                 "(expected a (B, M, 1, K), b (B or 1, K, 1, N))")
        if self.out.shape != (bsz, m, 1, n):
            raise self.fail("out", f"shape {self.out.shape}, expected {(bsz, m, 1, n)}")
        if self.bias is not None and self.bias.shape != (1, 1, 1, n):
            raise self.fail("bias", f"shape {self.bias.shape}, expected {(1, 1, 1, n)}")
        _check_mac_dtypes(self, self.a, self.b, self.bias, self.out, n)


def _check_mac_dtypes(inst: Instruction, x: LocalTensor, w: LocalTensor, bias: LocalTensor | None,
                      out: LocalTensor, channels: int) -> None:
    """Operand dtypes of conv2d / matmul and the fused requant fields (``channels``: output channels of a
    conv, output columns N of a matmul: the lengths a per-channel multiplier may have)."""
    is_float = _float_or_int(inst, "out", [x.dtype, w.dtype, out.dtype] + ([bias.dtype] if bias else []))
    fused = bool(inst.multiplier) or bool(inst.shift)
    if not is_float:
        if x.dtype != DType.INT8 or w.dtype != DType.INT8:
            raise inst.fail("w", "integer MACs need int8 operands")
        if bias is not None and bias.dtype != DType.INT32:
            raise inst.fail("bias", "integer MACs need an int32 bias")
        if not fused and out.dtype != DType.INT32:
            raise inst.fail("out", "integer MACs produce int32 (requantize with a Requant instruction, or fuse "
                                   "one: multiplier, shift, zero_point)")
        if fused and out.dtype != DType.INT8:
            raise inst.fail("out", f"a fused requant produces int8, got {out.dtype.label}")
    _check_fused_act(inst, is_float)
    if fused:
        if is_float:
            raise inst.fail("multiplier", "a fused requant needs int8 operands")
        _check_requant_params(inst, channels)
    elif (inst.zero_point, inst.qmin, inst.qmax) != (0, -128, 127):
        raise inst.fail("zero_point", "zero_point / qmin / qmax only apply with a fused requant (set multiplier "
                                      "and shift)")


def _check_requant_params(inst: Instruction, channels: int) -> None:
    """``multiplier``/``shift`` (1 or ``channels`` pairs, m in [0, 2^31), s in [0, 63]), ``zero_point``,
    ``qmin``/``qmax`` (int8 bounds, qmin <= qmax)."""
    m, s = inst.multiplier, inst.shift
    if len(m) not in (1, channels) or len(s) != len(m):
        raise inst.fail("multiplier", f"needs 1 or {channels} multipliers and as many shifts, got {len(m)} and "
                                      f"{len(s)}")
    if any(not isinstance(v, int) or not 0 <= v < 2**31 for v in m):
        raise inst.fail("multiplier", "values must be integers in [0, 2^31)")
    if any(not isinstance(v, int) or not 0 <= v <= 63 for v in s):
        raise inst.fail("shift", "values must be integers in [0, 63]")
    for name in ("zero_point", "qmin", "qmax"):
        v = getattr(inst, name)
        if not isinstance(v, int) or isinstance(v, bool):
            raise inst.fail(name, f"must be an integer, got {v!r}")
    if not -(2**31) < inst.zero_point < 2**31:
        raise inst.fail("zero_point", f"{inst.zero_point} outside int32")
    if not -128 <= inst.qmin <= inst.qmax <= 127:
        raise inst.fail("qmin", f"bounds [{inst.qmin}, {inst.qmax}] are not int8 bounds with qmin <= qmax")


ELTWISE_OPS = ("add", "sub", "mul", "div", "max", "min")


@_register
@_frozen
class Eltwise(Instruction):
    """Binary elementwise ``out = a OP b`` with broadcast (a dim of size 1 repeats), or ``a OP scalar``.

    Float: computed in f32, rounded once. Integer (int8/int32/uint8): exact in int64, saturated to
    ``out.dtype``; ``div`` is float only.
    """

    OPCODE = "eltwise"
    INPUTS = ("a", "b")
    op: str
    a: LocalTensor
    b: LocalTensor | None = None
    scalar: float = 0.0
    out: LocalTensor

    def check_fields(self, target: Target) -> None:
        if self.op not in ELTWISE_OPS:
            raise self.fail("op", f"unknown eltwise op {self.op!r} (known: {', '.join(ELTWISE_OPS)})")
        _broadcasts_to_out(self, "a", "b")
        dts = [self.a.dtype, self.out.dtype] + ([self.b.dtype] if self.b is not None else [])
        if not _float_or_int(self, "out", dts):
            if self.op == "div":
                raise self.fail("op", "div is a float op")
            if self.b is None and self.scalar != int(self.scalar):
                raise self.fail("scalar", f"integer eltwise needs an integral scalar, got {self.scalar}")


#: unary activations (codes = index, shared with csrc/kernels.c); the integer ones are INT_ACTIVATIONS
ACTIVATIONS = ("relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "exp", "log",
               "sqrt", "rsqrt", "abs", "neg", "hardsigmoid", "hardswish", "elu", "reciprocal", "square", "erf",
               "softplus", "mish")
INT_ACTIVATIONS = ("relu", "clip", "abs", "neg")


@_register
@_frozen
class Activation(Instruction):
    """Unary activation ``out = f(x)`` computed in f32 and rounded once (``alpha``: leaky_relu slope,
    elu alpha; ``lo``/``hi``: clip bounds). Integer tiles support relu, clip, abs, neg (saturating)."""

    OPCODE = "activation"
    INPUTS = ("x",)
    op: str
    x: LocalTensor
    out: LocalTensor
    alpha: float = 0.0
    lo: float = 0.0
    hi: float = 0.0

    def check_fields(self, target: Target) -> None:
        if self.op not in ACTIVATIONS:
            raise self.fail("op", f"unknown activation {self.op!r}")
        _same_shape(self, "out", self.out, self.x)
        if not _float_or_int(self, "out", [self.x.dtype, self.out.dtype]) and self.op not in INT_ACTIVATIONS:
            raise self.fail("op", f"{self.op} has no integer form (integer: {', '.join(INT_ACTIVATIONS)}; "
                                  "use Lut for int8 non-linearities)")


@_register
@_frozen
class Pool2d(Instruction):
    """Max or average pooling; the window is clipped to the padded extent [-pt, H + pb) x [-pl, W + pr).

    avg float: f32 sum / count (count includes pads when ``count_include_pad``); avg integer:
    ``sat(rshift_round_half_away(sum * multiplier, shift))``. max ignores pads.
    """

    OPCODE = "pool2d"
    INPUTS = ("x",)
    mode: str
    x: LocalTensor
    out: LocalTensor
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    count_include_pad: bool = True
    multiplier: int = 1
    shift: int = 0

    def out_hw(self) -> tuple[int, int]:
        """Ho = (H + pt + pb - kh) // sh + 1, and the same for W."""
        _, _, h, w = self.x.shape
        (kh, kw), (sh, sw), (pt, pb, pl, pr) = self.kernel, self.stride, self.pad
        return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1

    def check_fields(self, target: Target) -> None:
        if self.mode not in ("max", "avg"):
            raise self.fail("mode", f"must be 'max' or 'avg', got {self.mode!r}")
        if min(self.kernel + self.stride) < 1 or min(self.pad) < 0:
            raise self.fail("kernel", "kernel and stride must be >= 1 and pads >= 0")
        if self.pad[0] >= self.kernel[0] or self.pad[2] >= self.kernel[1]:
            raise self.fail("pad", "a pad must be smaller than the kernel")
        if self.out.shape != self.x.shape[:2] + self.out_hw():
            raise self.fail("out", f"shape {self.out.shape}, expected {self.x.shape[:2] + self.out_hw()}")
        _same_dtype(self, "out", self.out, self.x)
        if not 0 <= self.shift <= 63 or not 0 <= self.multiplier < 2**31:
            raise self.fail("shift", f"shift {self.shift} outside [0, 63] or multiplier outside [0, 2^31)")


@_register
@_frozen
class Lut(Instruction):
    """256-entry lookup table: ``out[i] = table[x[i] & 0xff]`` (x's byte as an unsigned index, so an
    int8 table is ordered 0..127, -128..-1); ``table`` holds 256 values of ``out.dtype``."""

    OPCODE = "lut"
    INPUTS = ("x", "table")
    x: LocalTensor
    table: LocalTensor
    out: LocalTensor

    def check_fields(self, target: Target) -> None:
        if self.x.dtype not in (DType.INT8, DType.UINT8):
            raise self.fail("x", "LUT input must be int8 or uint8")
        if self.table.numel != 256 or self.table.dtype != self.out.dtype:
            raise self.fail("table", f"needs 256 values of {self.out.dtype.label}")
        _same_shape(self, "out", self.out, self.x)


@_register
@_frozen
class Requant(Instruction):
    """Per-channel fixed-point requantization of an integer tile.

    ``out = sat(rshift_round_half_away(x * multiplier[c], shift[c]) + zero_point)`` where
    ``rshift_round_half_away(v, s) = sign(v) * ((|v| + 2^(s-1)) >> s)`` (s in [0, 63], the product
    exact in int64), the spec of torch_tpu/fixed_point.py's ``requantize``; ``multiplier``/``shift``
    hold 1 (per tensor) or C (per channel) values.
    """

    OPCODE = "requant"
    INPUTS = ("x",)
    x: LocalTensor
    out: LocalTensor
    multiplier: tuple[int, ...]
    shift: tuple[int, ...]
    zero_point: int = 0

    def check_fields(self, target: Target) -> None:
        _same_shape(self, "out", self.out, self.x)
        if self.x.dtype.is_float or self.out.dtype.is_float:
            raise self.fail("out", "requant is integer -> integer")
        c = self.x.shape[1]
        if len(self.multiplier) not in (1, c) or len(self.shift) != len(self.multiplier):
            raise self.fail("multiplier", f"needs 1 or {c} multipliers and as many shifts")
        if any(not 0 <= m < 2**31 for m in self.multiplier):
            raise self.fail("multiplier", "values must lie in [0, 2^31)")
        if any(not 0 <= s <= 63 for s in self.shift):
            raise self.fail("shift", "values must lie in [0, 63]")


#: |zero point| bound of a QAdd input (keeps every product of its formula exact in int64)
QADD_ZP_LIMIT = 1 << 16


def qadd_span(dtype: DType, zp: int) -> int:
    """The largest ``|q - zp|`` over the values ``q`` of an int8 / uint8 ``dtype``."""
    lo, hi = (0, 255) if dtype == DType.UINT8 else (-128, 127)
    return max(zp - lo, hi - zp)


@_register
@_frozen
class QAdd(Instruction):
    """Add or subtract two int8 / uint8 tiles of different scales in one pass (an int8 residual add)::

        ta  = rshift_round_half_away((a - a_zp) * a_multiplier, a_shift)   # a on the common int32 scale
        tb  = rshift_round_half_away((b - b_zp) * b_multiplier, b_shift)
        out = clamp(rshift_round_half_away((ta +- tb) * multiplier, shift) + zero_point, qmin, qmax)

    exactly :mod:`torch_tpu.tpu_ops.int8_eltwise`'s ``add_int8`` / ``sub_int8`` (and the unfused chain
    requant, requant, eltwise, requant, clip). ``a``, ``b`` and ``out`` have one shape (the loads broadcast).
    Fields are checked so that the chip's int32 accumulator holds ``ta +- tb``: ``|a_zp|, |b_zp| < 2^16`` and
    the largest ``|ta| + |tb|`` over the input dtypes' values below 2^31.
    """

    OPCODE = "qadd"
    INPUTS = ("a", "b")
    a: LocalTensor
    b: LocalTensor
    out: LocalTensor
    op: str = "add"
    a_zp: int = 0
    a_multiplier: int = 1
    a_shift: int = 0
    b_zp: int = 0
    b_multiplier: int = 1
    b_shift: int = 0
    multiplier: int = 1
    shift: int = 0
    zero_point: int = 0
    qmin: int = -128
    qmax: int = 127

    def check_fields(self, target: Target) -> None:
        _same_shape(self, "b", self.b, self.a)
        _same_shape(self, "out", self.out, self.a)
        for name in ("a", "b", "out"):
            if getattr(self, name).dtype not in (DType.INT8, DType.UINT8):
                raise self.fail(name, "qadd reads and writes int8 / uint8 tiles")
        if self.op not in ("add", "sub"):
            raise self.fail("op", f"must be add or sub, got {self.op!r}")
        for name in ("a_multiplier", "b_multiplier", "multiplier"):
            if not 0 <= getattr(self, name) < 2**31:
                raise self.fail(name, "must lie in [0, 2^31)")
        for name in ("a_shift", "b_shift", "shift"):
            if not 0 <= getattr(self, name) <= 63:
                raise self.fail(name, "must lie in [0, 63]")
        for name in ("a_zp", "b_zp"):
            if abs(getattr(self, name)) >= QADD_ZP_LIMIT:
                raise self.fail(name, f"|zero point| must be below {QADD_ZP_LIMIT}")
        lo, hi = (0, 255) if self.out.dtype == DType.UINT8 else (-128, 127)
        if not lo <= self.qmin <= self.qmax <= hi:
            raise self.fail("qmin", f"need {lo} <= qmin <= qmax <= {hi}, got [{self.qmin}, {self.qmax}]")

        def top(dtype: DType, zp: int, m: int, s: int) -> int:
            v = qadd_span(dtype, zp) * m
            return (v + ((1 << s) >> 1)) >> s

        if top(self.a.dtype, self.a_zp, self.a_multiplier, self.a_shift) + \
                top(self.b.dtype, self.b_zp, self.b_multiplier, self.b_shift) >= 2**31:
            raise self.fail("a_multiplier", "the rescaled inputs' sum could leave int32")


#: rounding of float -> int casts (names as in torch_tpu/fixed_point.py; index = C code)
ROUND_MODES = ("half_even", "half_away_from_zero")


@_register
@_frozen
class Cast(Instruction):
    """Dtype conversion. float -> float: round once (nearest even). int -> float:
    ``(x - zero_point) * scale`` in f32. float -> int: ``sat(round(x / scale) + zero_point)`` with
    ``round_mode`` half_away_from_zero (default, as fixed_point.py) or half_even. int -> int: saturate
    (scale 1, zero point 0)."""

    OPCODE = "cast"
    INPUTS = ("x",)
    x: LocalTensor
    out: LocalTensor
    scale: float = 1.0
    zero_point: int = 0
    round_mode: str = "half_away_from_zero"

    def check_fields(self, target: Target) -> None:
        _same_shape(self, "out", self.out, self.x)
        if self.round_mode not in ROUND_MODES:
            raise self.fail("round_mode", f"must be one of {', '.join(ROUND_MODES)}")
        if not (math.isfinite(self.scale) and self.scale != 0.0):
            raise self.fail("scale", f"must be finite and non-zero, got {self.scale}")
        if not self.x.dtype.is_float and not self.out.dtype.is_float and (self.scale != 1.0 or self.zero_point):
            raise self.fail("scale", "int -> int cast saturates only (use Requant to rescale)")


REDUCE_OPS = ("sum", "mean", "max", "min")


@_register
@_frozen
class Reduce(Instruction):
    """Reduce ``x`` over ``axes`` (kept as size 1 in ``out``); float in f32, integer exact (no mean)."""

    OPCODE = "reduce"
    INPUTS = ("x",)
    op: str
    x: LocalTensor
    out: LocalTensor
    axes: tuple[int, ...]

    def check_fields(self, target: Target) -> None:
        if self.op not in REDUCE_OPS:
            raise self.fail("op", f"unknown reduce op {self.op!r} (known: {', '.join(REDUCE_OPS)})")
        if not self.axes or sorted(set(self.axes)) != list(self.axes) or not all(0 <= a < 4 for a in self.axes):
            raise self.fail("axes", f"must be sorted distinct dims in 0..3, got {self.axes}")
        want = tuple(1 if d in self.axes else s for d, s in enumerate(self.x.shape))
        if self.out.shape != want:
            raise self.fail("out", f"shape {self.out.shape}, expected {want}")
        if not _float_or_int(self, "out", [self.x.dtype, self.out.dtype]) and self.op == "mean":
            raise self.fail("op", "integer mean: use sum and Requant")


@_register
@_frozen
class Softmax(Instruction):
    """Softmax along ``axis``: ``exp(x - max) / sum exp(x - max)``; with ``log``:
    ``(x - max) - log(sum exp(x - max))``. Float only, f32 inside."""

    OPCODE = "softmax"
    INPUTS = ("x",)
    x: LocalTensor
    out: LocalTensor
    axis: int
    log: bool = False

    def check_fields(self, target: Target) -> None:
        _same_shape(self, "out", self.out, self.x)
        if not 0 <= self.axis < 4:
            raise self.fail("axis", f"must be in 0..3, got {self.axis}")
        if not (self.x.dtype.is_float and self.out.dtype.is_float):
            raise self.fail("out", "softmax is float only")


@_register
@_frozen
class LayerNorm(Instruction):
    """Layer normalization over dims ``axis..3``: ``(x - mean) / sqrt(var + eps) * weight + bias``
    (biased variance, f32 inside); ``weight``/``bias`` hold prod(x.shape[axis:]) values or are absent."""

    OPCODE = "layernorm"
    INPUTS = ("x", "weight", "bias")
    x: LocalTensor
    weight: LocalTensor | None = None
    bias: LocalTensor | None = None
    out: LocalTensor
    axis: int
    eps: float = 1e-5

    def check_fields(self, target: Target) -> None:
        _same_shape(self, "out", self.out, self.x)
        if not 0 <= self.axis < 4:
            raise self.fail("axis", f"must be in 0..3, got {self.axis}")
        inner = math.prod(self.x.shape[self.axis:])
        for name, t in (("weight", self.weight), ("bias", self.bias)):
            if t is not None and (t.numel != inner or not t.dtype.is_float):
                raise self.fail(name, f"needs {inner} float values")
        if not (self.x.dtype.is_float and self.out.dtype.is_float):
            raise self.fail("out", "layernorm is float only")
        if not self.eps > 0:
            raise self.fail("eps", "must be > 0")


COMPARE_OPS = ("eq", "ne", "lt", "le", "gt", "ge")


@_register
@_frozen
class Compare(Instruction):
    """Comparison mask ``out = (a OP b) ? 1 : 0`` (uint8) with broadcast (a dim of 1 repeats), or ``a OP scalar``.

    Exact: float operands compared in f32 (bf16/f16 widen exactly), integer operands in int64 (against the
    scalar as f64); NaN compares unequal to everything. ``a`` and ``b`` are both float or both integer.
    """

    OPCODE = "compare"
    INPUTS = ("a", "b")
    op: str
    a: LocalTensor
    b: LocalTensor | None = None
    scalar: float = 0.0
    out: LocalTensor

    def check_fields(self, target: Target) -> None:
        if self.op not in COMPARE_OPS:
            raise self.fail("op", f"unknown comparison {self.op!r} (known: {', '.join(COMPARE_OPS)})")
        _broadcasts_to_out(self, "a", "b")
        if self.b is not None:
            _float_or_int(self, "b", [self.a.dtype, self.b.dtype])
        if self.out.dtype != DType.UINT8:
            raise self.fail("out", f"a comparison mask is uint8, got {self.out.dtype.label}")


@_register
@_frozen
class Select(Instruction):
    """``out = cond != 0 ? a : b`` with broadcast of ``cond`` (uint8), ``a`` and ``b`` to ``out``; an exact
    selection (no rounding): ``a``, ``b`` and ``out`` share one dtype."""

    OPCODE = "select"
    INPUTS = ("cond", "a", "b")
    cond: LocalTensor
    a: LocalTensor
    b: LocalTensor
    out: LocalTensor

    def check_fields(self, target: Target) -> None:
        _broadcasts_to_out(self, "cond", "a", "b")
        if self.cond.dtype != DType.UINT8:
            raise self.fail("cond", f"the condition is a uint8 mask, got {self.cond.dtype.label}")
        _same_dtype(self, "a", self.a, self.out)
        _same_dtype(self, "b", self.b, self.out)


@_register
@_frozen
class Gather(Instruction):
    """Row gather with run-time indices (embedding lookup):

    ``out[n, c, 0, :] = table[0, i - base, 0, :]`` where ``i = index[n, c, 0, 0]`` when ``base <= i < base + V``
    (``V = table.shape[1]``), else ``prev[n, c, 0, :]`` (zeros without ``prev``). A table larger than local memory
    is gathered block by block: each block's Gather passes the previous block's output as ``prev`` (the output may
    be the same tile). ``index`` is int32; ``table``, ``prev`` and ``out`` share one dtype (an exact copy).
    """

    OPCODE = "gather"
    INPUTS = ("table", "index", "prev")
    table: LocalTensor
    index: LocalTensor
    prev: LocalTensor | None = None
    out: LocalTensor
    base: int = 0

    def check_fields(self, target: Target) -> None:
        n, c, _, d = self.out.shape
        if self.table.shape[0] != 1 or self.table.shape[2] != 1 or self.table.shape[3] != d:
            raise self.fail("table", f"shape {self.table.shape}, expected (1, V, 1, {d})")
        if self.index.shape != (n, c, 1, 1) or self.index.dtype != DType.INT32:
            raise self.fail("index", f"needs int32 of shape {(n, c, 1, 1)}, got {self.index.dtype.label} "
                                     f"{self.index.shape}")
        if self.out.shape[2] != 1:
            raise self.fail("out", f"shape {self.out.shape}, expected (N, C, 1, D)")
        _same_dtype(self, "table", self.table, self.out)
        if self.prev is not None:
            _same_shape(self, "prev", self.prev, self.out)
            _same_dtype(self, "prev", self.prev, self.out)
        if not isinstance(self.base, int) or not 0 <= self.base < 2 ** 31:
            raise self.fail("base", f"must be an integer in [0, 2^31) (indices are int32), got {self.base!r}")

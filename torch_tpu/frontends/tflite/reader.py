"""Read a ``.tflite`` flatbuffer into plain, validated Python records.

Only the parts the importer needs are read: the main subgraph's tensors (name, shape, dtype,
constant data, quantization), its operators (op name, inputs, outputs, builtin options) and its
inputs/outputs. Everything read from the file is checked (tensor and buffer indices in range, constant
data size equal to ``prod(shape) * itemsize``, non-negative static shapes) and any failure — including
the flatbuffers runtime tripping over a truncated or corrupt file — becomes a
:class:`~torch_tpu.errors.ModelFormatError` naming the file, and where known the operator's output
tensor and op. Nothing in the file is executed or unpickled.
"""

from __future__ import annotations

import importlib
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tflite.BuiltinOptions import BuiltinOptions
from tflite.Model import Model
from tflite.TensorType import TensorType
from tflite.utils import BUILTIN_OPCODE2NAME

from torch_tpu.errors import ModelFormatError

#: TFLite tensor type -> numpy dtype (types a float import can carry; others are refused on use).
NUMPY_DTYPES: dict[int, np.dtype] = {
    TensorType.FLOAT32: np.dtype("<f4"), TensorType.FLOAT16: np.dtype("<f2"), TensorType.FLOAT64: np.dtype("<f8"),
    TensorType.INT32: np.dtype("<i4"), TensorType.INT64: np.dtype("<i8"), TensorType.INT16: np.dtype("<i2"),
    TensorType.INT8: np.dtype("i1"), TensorType.UINT8: np.dtype("u1"), TensorType.BOOL: np.dtype("?"),
    TensorType.UINT16: np.dtype("<u2"), TensorType.UINT32: np.dtype("<u4"),
}
TYPE_NAMES: dict[int, str] = {v: k for k, v in vars(TensorType).items() if not k.startswith("_")}
_OPTION_NAMES: dict[int, str] = {v: k for k, v in vars(BuiltinOptions).items() if not k.startswith("_")}
_MAX_RANK = 8
_MAX_ELEMENTS = 1 << 28  # 1 GiB of float32 in one tensor: beyond any edge model, a sign of corruption


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of a tensor: ``real = (q - zero_point) * scale`` (per channel along ``axis``)."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int


@dataclass(frozen=True)
class SparseLevel:
    """One level (dimension in traversal order) of a sparse tensor: dense, or CSR segments + indices."""

    dense: bool
    dense_size: int
    segments: tuple[int, ...] = ()
    indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class Sparsity:
    """TFLite sparsity parameters: ``traversal_order`` over the original then the block dimensions,
    ``block_map`` (original dimension of each block dimension), one :class:`SparseLevel` per level."""

    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...]
    levels: tuple[SparseLevel, ...]
    values: np.ndarray  # the stored (non-zero) values, in traversal order


@dataclass
class TensorInfo:
    """One tensor of the subgraph."""

    index: int
    name: str
    shape: tuple[int, ...]
    type: int
    data: np.ndarray | None = None  # constant contents (already shaped), None for activations
    quant: QuantParams | None = None
    sparse: Sparsity | None = None  # a sparse constant (expanded by DENSIFY, folded at import)

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))

    @property
    def is_quantized(self) -> bool:
        return self.quant is not None and self.type in (TensorType.INT8, TensorType.UINT8, TensorType.INT16,
                                                         TensorType.INT32)


@dataclass
class OperatorInfo:
    """One operator of the subgraph; ``inputs`` hold tensor indices (-1: optional input left out)."""

    index: int
    op: str  # builtin name (``CONV_2D``) or ``CUSTOM:<code>``
    inputs: list[int]
    outputs: list[int]
    options: Any = None  # the builtin options table (``tflite.Conv2DOptions.Conv2DOptions`` ...) or None
    custom_options: bytes = b""


@dataclass
class ModelInfo:
    """The main subgraph of a TFLite model."""

    path: str
    tensors: list[TensorInfo]
    operators: list[OperatorInfo]
    inputs: list[int]
    outputs: list[int]
    version: int = 3
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def error(self, message: str, *, op: OperatorInfo | None = None) -> ModelFormatError:
        """A :class:`ModelFormatError` naming this file and, if given, the operator."""
        if op is None:
            return ModelFormatError(self.path, message)
        return ModelFormatError(self.path, message, node=operator_label(self, op), op=op.op)


def operator_label(model: ModelInfo, op: OperatorInfo) -> str:
    """``#<index> '<first output tensor name>'`` — how errors point at an operator."""
    name = ""
    if op.outputs and 0 <= op.outputs[0] < len(model.tensors):
        name = model.tensors[op.outputs[0]].name
    return f"operator #{op.index} -> {name}" if name else f"operator #{op.index}"


def _options_table(op, kind: int) -> Any:
    name = _OPTION_NAMES.get(kind)
    if kind == 0 or name is None:
        return None
    table = op.BuiltinOptions()
    if table is None:
        return None
    cls = getattr(importlib.import_module(f"tflite.{name}"), name)
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    return obj


def _op_name(model, opcode_index: int, n_codes: int) -> str:
    if not 0 <= opcode_index < n_codes:
        raise ValueError(f"opcode index {opcode_index} out of range (model has {n_codes} operator codes)")
    oc = model.OperatorCodes(opcode_index)
    code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
    name = BUILTIN_OPCODE2NAME.get(code, f"BUILTIN_{code}")
    if name == "CUSTOM":
        custom = oc.CustomCode()
        name = "CUSTOM:" + (custom.decode("utf-8", "replace") if custom else "?")
    return name


def _quant(t) -> QuantParams | None:
    q = t.Quantization()
    if q is None or q.ScaleLength() == 0:
        return None
    scale = tuple(float(s) for s in q.ScaleAsNumpy())
    zp = tuple(int(z) for z in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else (0,) * len(scale)
    if len(zp) != len(scale):
        raise ValueError(f"{len(scale)} scales but {len(zp)} zero points")
    if not all(math.isfinite(s) for s in scale):
        raise ValueError(f"non-finite quantization scale {scale[:4]}")
    return QuantParams(scale, zp, int(q.QuantizedDimension()))


def _buffer_bytes(buf: bytes, model, index: int, n_buffers: int) -> bytes | None:
    if index == 0:
        return None
    if not 0 <= index < n_buffers:
        raise ValueError(f"buffer index {index} out of range (model has {n_buffers} buffers)")
    b = model.Buffers(index)
    if b is None:
        return None
    offset, size = int(b.Offset()), int(b.Size())
    if offset > 1:  # large models keep buffer data after the flatbuffer
        if offset + size > len(buf):
            raise ValueError(f"buffer {index} [{offset}, {offset + size}) is past the end of the file ({len(buf)})")
        return bytes(buf[offset:offset + size])
    if b.DataLength() == 0:
        return None
    return b.DataAsNumpy().tobytes()


def _tensor(buf: bytes, model, sg, i: int, n_buffers: int) -> TensorInfo:
    t = sg.Tensors(i)
    name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor_{i}"
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    if len(shape) > _MAX_RANK:
        raise ValueError(f"tensor '{name}' has rank {len(shape)} (> {_MAX_RANK})")
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor '{name}' has a dynamic or negative dimension {list(shape)}")
    if math.prod(shape) > _MAX_ELEMENTS:
        raise ValueError(f"tensor '{name}' of shape {list(shape)} has more than {_MAX_ELEMENTS} elements")
    ttype = int(t.Type())
    raw = _buffer_bytes(buf, model, int(t.Buffer()), n_buffers)
    data = None
    sparse = None
    if raw is not None and t.Sparsity() is not None:
        if ttype not in NUMPY_DTYPES:
            raise ValueError(f"sparse tensor '{name}' has unsupported type {TYPE_NAMES.get(ttype, ttype)}")
        dt = NUMPY_DTYPES[ttype]
        if len(raw) % dt.itemsize:
            raise ValueError(f"sparse tensor '{name}': {len(raw)} bytes is not a whole number of values")
        sparse = _sparsity(t.Sparsity(), np.frombuffer(raw, dtype=dt).copy())
        raw = None
    if raw is not None:
        if ttype not in NUMPY_DTYPES:
            raise ValueError(f"constant tensor '{name}' has unsupported type {TYPE_NAMES.get(ttype, ttype)}")
        dt = NUMPY_DTYPES[ttype]
        want = math.prod(shape) * dt.itemsize
        if len(raw) != want:
            raise ValueError(f"constant tensor '{name}' of shape {list(shape)} and type {TYPE_NAMES[ttype]} needs "
                             f"{want} bytes, its buffer holds {len(raw)}")
        data = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    quant = _quant(t)
    if quant is not None and len(quant.scale) > 1 and not (
            0 <= quant.axis < len(shape) and shape[quant.axis] == len(quant.scale)):
        raise ValueError(f"tensor '{name}': {len(quant.scale)} per-channel scales do not match dimension "
                         f"{quant.axis} of shape {list(shape)}")
    return TensorInfo(i, name, shape, ttype, data, quant, sparse)


def _index_vector(kind: int, table) -> tuple[int, ...]:
    if kind == 0 or table is None:
        return ()
    name = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}.get(kind)
    if name is None:
        raise ValueError(f"unknown sparse index vector type {kind}")
    vec = getattr(importlib.import_module(f"tflite.{name}"), name)()
    vec.Init(table.Bytes, table.Pos)
    return tuple(int(v) for v in vec.ValuesAsNumpy()) if vec.ValuesLength() else ()


def _sparsity(sp, values: np.ndarray) -> Sparsity:
    order = tuple(int(v) for v in sp.TraversalOrderAsNumpy()) if sp.TraversalOrderLength() else ()
    block_map = tuple(int(v) for v in sp.BlockMapAsNumpy()) if sp.BlockMapLength() else ()
    levels = []
    for k in range(sp.DimMetadataLength()):
        d = sp.DimMetadata(k)
        levels.append(SparseLevel(int(d.Format()) == 0, int(d.DenseSize()),
                                  _index_vector(int(d.ArraySegmentsType()), d.ArraySegments()),
                                  _index_vector(int(d.ArrayIndicesType()), d.ArrayIndices())))
    if len(levels) != len(order):
        raise ValueError(f"sparsity has {len(levels)} dimension metadata for traversal order {list(order)}")
    return Sparsity(order, block_map, tuple(levels), values)


def _index_list(values, n_tensors: int, what: str, allow_optional: bool) -> list[int]:
    out = [int(v) for v in values]
    for v in out:
        if v == -1 and allow_optional:
            continue
        if not 0 <= v < n_tensors:
            raise ValueError(f"{what} refers to tensor {v}, model has {n_tensors}")
    return out


class _BoundedBytes(bytes):
    """File bytes whose slices refuse to run past the end (the flatbuffers runtime would shorten them)."""

    def __getitem__(self, key):
        if isinstance(key, slice) and key.stop is not None and key.stop > len(self):
            raise IndexError(f"read of [{key.start}, {key.stop}) past the end of the file ({len(self)} bytes)")
        return super().__getitem__(key)


def _read(buf: bytes, path: str) -> ModelInfo:
    buf = _BoundedBytes(buf)
    if len(buf) < 8:
        raise ValueError(f"file is {len(buf)} bytes, too short for a flatbuffer")
    if not Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError(f"no TFL3 file identifier (found {bytes(buf[4:8])!r}); not a TFLite model")
    (root,) = struct.unpack_from("<I", buf, 0)
    if root >= len(buf):
        raise ValueError(f"root table offset {root} is past the end of the file ({len(buf)} bytes)")
    model = Model.GetRootAs(buf, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError("model has no subgraph")
    sg = model.Subgraphs(0)
    n_buffers, n_codes, n_tensors = model.BuffersLength(), model.OperatorCodesLength(), sg.TensorsLength()
    tensors = [_tensor(buf, model, sg, i, n_buffers) for i in range(n_tensors)]
    info = ModelInfo(path, tensors, [], [], [], version=int(model.Version()),
                     description=(model.Description() or b"").decode("utf-8", "replace"))
    info.inputs = _index_list(sg.InputsAsNumpy() if sg.InputsLength() else [], n_tensors, "subgraph inputs", False)
    info.outputs = _index_list(sg.OutputsAsNumpy() if sg.OutputsLength() else [], n_tensors, "subgraph outputs",
                               False)
    for k in range(sg.OperatorsLength()):
        o = sg.Operators(k)
        name = _op_name(model, int(o.OpcodeIndex()), n_codes)
        ins = _index_list(o.InputsAsNumpy() if o.InputsLength() else [], n_tensors, f"operator #{k} ({name}) inputs",
                          True)
        outs = _index_list(o.OutputsAsNumpy() if o.OutputsLength() else [], n_tensors,
                           f"operator #{k} ({name}) outputs", False)
        custom = o.CustomOptionsAsNumpy().tobytes() if o.CustomOptionsLength() else b""
        info.operators.append(OperatorInfo(k, name, ins, outs, _options_table(o, int(o.BuiltinOptionsType())),
                                           custom))
    return info


def read_tflite(path: str | os.PathLike | None = None, *, content: bytes | None = None) -> ModelInfo:
    """Parse and validate a TFLite model (from ``path`` or from ``content`` bytes).

    Raises:
        ModelFormatError: the file is missing, truncated, corrupt, or refers outside itself.
    """
    label = str(path) if path is not None else "<tflite bytes>"
    if content is None:
        if path is None:
            raise ModelFormatError(label, "neither a path nor content was given")
        try:
            with open(path, "rb") as f:
                content = f.read()
        except OSError as e:
            raise ModelFormatError(label, f"cannot read the file ({e.strerror or e})") from None
    try:
        return _read(bytes(content), label)
    except ModelFormatError:
        raise
    # The flatbuffers runtime reports a corrupt file through whatever goes wrong first.
    except (ValueError, IndexError, struct.error, TypeError, UnicodeDecodeError, OverflowError, MemoryError,
            AttributeError, KeyError, ImportError) as e:
        raise ModelFormatError(label, f"corrupt TFLite flatbuffer: {type(e).__name__}: {e}") from None

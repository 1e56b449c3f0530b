"""Write small TFLite models with the flatbuffers builders the ``tflite`` package ships.

Used by the tests (and handy for bug reports): build a model op by op, get ``.tflite`` bytes that LiteRT
runs and :func:`~torch_tpu.frontends.tflite.load_tflite` imports.

Example:
    >>> b = TFLiteWriter()
    >>> x = b.input("x", (1, 4, 4, 3))
    >>> y = b.tensor("y", (1, 4, 4, 3))
    >>> b.op("RELU", [x], [y])
    >>> b.output(y)
    >>> data = b.build()
    >>> data[4:8]
    b'TFL3'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Sequence

import flatbuffers
import numpy as np
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType
from tflite.utils import BUILTIN_OPCODE2NAME

from torch_tpu.errors import TorchTpuError

_OPCODES = {name: code for code, name in BUILTIN_OPCODE2NAME.items()}
_TYPES = {"float32": TensorType.FLOAT32, "float16": TensorType.FLOAT16, "int32": TensorType.INT32,
          "int64": TensorType.INT64, "int8": TensorType.INT8, "uint8": TensorType.UINT8, "int16": TensorType.INT16,
          "bool": TensorType.BOOL}


def _mod(name: str):
    return importlib.import_module(f"tflite.{name}")


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None
    quant: tuple[Sequence[float], Sequence[int], int] | None


@dataclass
class _Op:
    name: str
    inputs: list[int]
    outputs: list[int]
    options: tuple[str, dict[str, Any]] | None
    custom_options: bytes


class TFLiteWriter:
    """Collects tensors and operators of one subgraph and serializes them as a TFLite model."""

    def __init__(self) -> None:
        self.tensors: list[_Tensor] = []
        self.ops: list[_Op] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []

    def tensor(self, name: str, shape: Sequence[int], dtype: str = "float32", data: np.ndarray | None = None,
               quant: tuple[Sequence[float], Sequence[int], int] | None = None) -> int:
        """Add a tensor (``quant``: ``(scales, zero_points, quantized_dimension)``); return its index."""
        if dtype not in _TYPES:
            raise TorchTpuError(f"TFLiteWriter: unknown dtype {dtype}")
        self.tensors.append(_Tensor(name, tuple(int(d) for d in shape), dtype, data, quant))
        return len(self.tensors) - 1

    def input(self, name: str, shape: Sequence[int], dtype: str = "float32", quant=None) -> int:
        i = self.tensor(name, shape, dtype, quant=quant)
        self.inputs.append(i)
        return i

    def const(self, name: str, data: np.ndarray, dtype: str | None = None, quant=None) -> int:
        data = np.asarray(data)
        dtype = dtype or str(data.dtype)
        return self.tensor(name, data.shape, dtype, data.astype(dtype), quant)

    def output(self, index: int) -> None:
        self.outputs.append(index)

    def op(self, name: str, inputs: Sequence[int], outputs: Sequence[int], options: str | None = None,
           custom_options: bytes = b"", **fields: Any) -> None:
        """Add an operator; ``options`` names the options table (``"Conv2DOptions"``), ``fields`` its fields
        by their generated ``Add<Field>`` names (``Padding=0, StrideW=2``)."""
        self.ops.append(_Op(name, list(inputs), list(outputs), (options, fields) if options else None,
                            custom_options))

    # -- serialization ---------------------------------------------------------------------------
    @staticmethod
    def _ivector(b: flatbuffers.Builder, values: Sequence[int], dtype: str = "<i4") -> int:
        return b.CreateNumpyVector(np.asarray(list(values), dtype=dtype))

    @staticmethod
    def _bytes(b: flatbuffers.Builder, raw: bytes) -> int:
        b.StartVector(1, len(raw), 16)
        b.head = b.head - len(raw)
        b.Bytes[b.head:b.head + len(raw)] = raw
        b.vectorNumElems = len(raw)
        return b.EndVector()

    def _options(self, b: flatbuffers.Builder, name: str, fields: dict[str, Any]) -> int:
        m = _mod(name)
        m.Start(b)
        for key, value in fields.items():
            getattr(m, f"Add{key}")(b, value)
        return m.End(b)

    def build(self) -> bytes:
        """Serialize to ``.tflite`` bytes."""
        b = flatbuffers.Builder(1024)
        code_names = sorted({o.name for o in self.ops})
        code_index = {n: i for i, n in enumerate(code_names)}
        buffers = [None]
        tensor_offsets = []
        for t in self.tensors:
            name = b.CreateString(t.name)
            shape = self._ivector(b, t.shape)
            q = None
            if t.quant is not None:
                scales, zps, qdim = t.quant
                sv = b.CreateNumpyVector(np.asarray(scales, dtype="<f4"))
                zv = self._ivector(b, zps, "<i8")
                qm = _mod("QuantizationParameters")
                qm.Start(b)
                qm.AddScale(b, sv)
                qm.AddZeroPoint(b, zv)
                qm.AddQuantizedDimension(b, qdim)
                q = qm.End(b)
            buffer = 0
            if t.data is not None:
                buffers.append(np.ascontiguousarray(t.data).astype(t.data.dtype.newbyteorder("<")).tobytes())
                buffer = len(buffers) - 1
            tm = _mod("Tensor")
            tm.Start(b)
            tm.AddShape(b, shape)
            tm.AddType(b, _TYPES[t.dtype])
            tm.AddBuffer(b, buffer)
            tm.AddName(b, name)
            if q is not None:
                tm.AddQuantization(b, q)
            tensor_offsets.append(tm.End(b))
        op_offsets = []
        for o in self.ops:
            ins, outs = self._ivector(b, o.inputs), self._ivector(b, o.outputs)
            opts = self._options(b, *o.options) if o.options else None
            custom = self._bytes(b, o.custom_options) if o.custom_options else None
            om = _mod("Operator")
            om.Start(b)
            om.AddOpcodeIndex(b, code_index[o.name])
            om.AddInputs(b, ins)
            om.AddOutputs(b, outs)
            if opts is not None:
                om.AddBuiltinOptionsType(b, getattr(BuiltinOptions, o.options[0]))
                om.AddBuiltinOptions(b, opts)
            if custom is not None:
                om.AddCustomOptions(b, custom)
            op_offsets.append(om.End(b))

        def vector(start, offsets):
            start(b, len(offsets))
            for off in reversed(offsets):
                b.PrependUOffsetTRelative(off)
            return b.EndVector()

        sgm = _mod("SubGraph")
        tensors_v = vector(sgm.StartTensorsVector, tensor_offsets)
        ops_v = vector(sgm.StartOperatorsVector, op_offsets)
        in_v, out_v = self._ivector(b, self.inputs), self._ivector(b, self.outputs)
        sg_name = b.CreateString("main")
        sgm.Start(b)
        sgm.AddTensors(b, tensors_v)
        sgm.AddInputs(b, in_v)
        sgm.AddOutputs(b, out_v)
        sgm.AddOperators(b, ops_v)
        sgm.AddName(b, sg_name)
        sg = sgm.End(b)

        ocm = _mod("OperatorCode")
        code_offsets = []
        for n in code_names:
            custom = b.CreateString(n.split(":", 1)[1]) if n.startswith("CUSTOM:") else None
            code = _OPCODES["CUSTOM" if custom is not None else n]
            ocm.Start(b)
            ocm.AddDeprecatedBuiltinCode(b, min(code, 127))
            ocm.AddBuiltinCode(b, code)
            ocm.AddVersion(b, 1)
            if custom is not None:
                ocm.AddCustomCode(b, custom)
            code_offsets.append(ocm.End(b))
        bm = _mod("Buffer")
        buffer_offsets = []
        for raw in buffers:
            data = self._bytes(b, raw) if raw else None
            bm.Start(b)
            if data is not None:
                bm.AddData(b, data)
            buffer_offsets.append(bm.End(b))

        mm = _mod("Model")
        codes_v = vector(mm.StartOperatorCodesVector, code_offsets)
        sgs_v = vector(mm.StartSubgraphsVector, [sg])
        bufs_v = vector(mm.StartBuffersVector, buffer_offsets)
        desc = b.CreateString("torch_tpu TFLiteWriter")
        mm.Start(b)
        mm.AddVersion(b, 3)
        mm.AddOperatorCodes(b, codes_v)
        mm.AddSubgraphs(b, sgs_v)
        mm.AddDescription(b, desc)
        mm.AddBuffers(b, bufs_v)
        b.Finish(mm.End(b), file_identifier=b"TFL3")
        return bytes(b.Output())

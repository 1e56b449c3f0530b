"""What a converter sees: one TFLite operator, its tensors, constants and weights.

A converter is a function ``convert_<op>(ctx: OpContext) -> OpFn``. At import time it reads the options
and constant inputs through ``ctx`` and registers the weights the computation needs
(:meth:`OpContext.weight`, possibly re-laid out, e.g. OHWI -> OIHW); it returns ``fn(v)`` that computes
the operator's outputs in float from ``v``, a list indexed like the operator's inputs holding the
runtime activation tensors and the registered weights (``None`` elsewhere), followed by extra weights
(:meth:`OpContext.extra_weight`). Activations stay in TFLite's layout (NHWC) between operators;
a converter that computes in NCHW permutes at its own boundaries.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from torch_tpu.errors import ModelFormatError, UnsupportedOpError
from torch_tpu.frontends.tflite.reader import ModelInfo, OperatorInfo, TensorInfo, operator_label

OpFn = Callable[[list], "torch.Tensor | Sequence[torch.Tensor]"]


def dequantize_array(t: TensorInfo, data: np.ndarray) -> np.ndarray:
    """Real values of a constant: ``(q - zero_point) * scale``, per channel along ``quant.axis``.

    Float tensors are returned as float32; integer tensors without quantization keep their values.
    """
    if t.quant is None or data.dtype.kind == "f":
        return data.astype(np.float32) if data.dtype.kind == "f" else data
    scale = np.asarray(t.quant.scale, dtype=np.float64)
    zp = np.asarray(t.quant.zero_point, dtype=np.float64)
    if scale.size > 1:
        bshape = [1] * data.ndim
        bshape[t.quant.axis] = scale.size
        scale, zp = scale.reshape(bshape), zp.reshape(bshape)
    return ((data.astype(np.float64) - zp) * scale).astype(np.float32)


class OpContext:
    """One operator during import.

    Attributes:
        model: the whole model (tensors by index).
        op: the operator record.
        consts: tensor index -> constant value (file constants and import-time folded ones).
        weights: input slot -> the float tensor registered as a weight buffer.
        weight_names: input slot -> stable name of that weight.
    """

    def __init__(self, model: ModelInfo, op: OperatorInfo, consts: dict[int, np.ndarray]):
        self.model, self.op, self.consts = model, op, consts
        self.weights: dict[int, torch.Tensor] = {}
        self.weight_names: dict[int, str] = {}

    # -- facts ---------------------------------------------------------------------------------
    @property
    def options(self) -> Any:
        """The builtin options table; refuses an operator that lacks one."""
        if self.op.options is None:
            raise self.error("operator has no builtin options")
        return self.op.options

    @property
    def label(self) -> str:
        return operator_label(self.model, self.op)

    @property
    def n_inputs(self) -> int:
        return len(self.op.inputs)

    def has_input(self, i: int) -> bool:
        return i < len(self.op.inputs) and self.op.inputs[i] >= 0

    def input(self, i: int) -> TensorInfo:
        if not self.has_input(i):
            raise self.error(f"input {i} is missing")
        return self.model.tensors[self.op.inputs[i]]

    def output(self, i: int = 0) -> TensorInfo:
        if i >= len(self.op.outputs):
            raise self.error(f"output {i} is missing")
        return self.model.tensors[self.op.outputs[i]]

    def in_shape(self, i: int) -> tuple[int, ...]:
        return self.input(i).shape

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        return self.output(i).shape

    def is_const(self, i: int) -> bool:
        return self.has_input(i) and self.op.inputs[i] in self.consts

    def const(self, i: int) -> np.ndarray:
        """Raw value of constant input ``i`` (integers stay integers)."""
        if not self.is_const(i):
            raise UnsupportedOpError(self.op.op, name=self.label, where="tflite", location=self.model.path,
                                     reason=f"input {i} must be a constant")
        return self.consts[self.op.inputs[i]]

    def const_ints(self, i: int) -> list[int]:
        return [int(v) for v in np.asarray(self.const(i)).reshape(-1)]

    def const_float(self, i: int) -> torch.Tensor:
        """Constant input ``i`` as a float32 tensor (dequantized when quantized)."""
        t = self.input(i)
        value = dequantize_array(t, self.const(i))
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))

    # -- weights -------------------------------------------------------------------------------
    def weight(self, i: int, value: torch.Tensor | None = None) -> None:
        """Make constant input ``i`` a weight of the graph (``value``: a re-laid-out version of it)."""
        if value is None:
            value = self.const_float(i)
        self.weights[i] = value.detach().clone().contiguous()
        self.weight_names[i] = self.input(i).name

    def operand(self, i: int) -> None:
        """Register input ``i`` as a weight if it is a constant (binary ops with a constant side)."""
        if self.is_const(i):
            self.weight(i)

    def extra_weight(self, key: str, value: torch.Tensor) -> int:
        """A weight computed at import time (not a TFLite tensor); returns its slot in ``v``."""
        slot = max(self.n_inputs, max(self.weights, default=-1) + 1)
        self.weights[slot] = value.detach().clone().contiguous()
        self.weight_names[slot] = f"{self.output().name}.{key}"
        return slot

    # -- errors --------------------------------------------------------------------------------
    def error(self, message: str) -> ModelFormatError:
        return ModelFormatError(self.model.path, message, node=self.label, op=self.op.op)

    def unsupported(self, reason: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.op.op, name=self.label, where="tflite", location=self.model.path,
                                  reason=reason)

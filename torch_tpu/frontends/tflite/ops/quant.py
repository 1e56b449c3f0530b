"""QUANTIZE and DEQUANTIZE in a float import.

A pre-quantized model is imported in float: quantized weights are dequantized at import
(``real = (q - zero_point) * scale``), so

* DEQUANTIZE of a constant (int8 or float16 weights) is folded at import (:func:`fold_dequantize`);
* QUANTIZE / DEQUANTIZE / requantize of an activation are identities on the real value; their
  scales and zero points are kept in ``top.meta["tflite_quant"]`` for calibration later.
"""

from __future__ import annotations

import numpy as np
import torch

from torch_tpu.frontends.tflite.context import OpContext, OpFn, dequantize_array


def fold_dequantize(ctx: OpContext) -> np.ndarray:
    """DEQUANTIZE of a constant -> its float32 value."""
    return np.asarray(dequantize_array(ctx.input(0), ctx.const(0)), dtype=np.float32)


def convert_identity_quant(ctx: OpContext) -> OpFn:
    """QUANTIZE / DEQUANTIZE of an activation: ``y = x`` in float (no node)."""
    if ctx.in_shape(0) != ctx.out_shape():
        raise ctx.error(f"input {list(ctx.in_shape(0))} and output {list(ctx.out_shape())} shapes differ")

    def quantize_identity(v: list) -> torch.Tensor:
        return v[0]

    return quantize_identity


CONVERTERS = {
    "QUANTIZE": convert_identity_quant,
    "DEQUANTIZE": convert_identity_quant,
}

FOLDERS = {
    "DEQUANTIZE": fold_dequantize,
}

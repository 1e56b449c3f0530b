"""Pad-18 (optional ``axes`` input), Pad-19 (``wrap`` mode) and Pad-21 (more types).

ONNX ``pads`` is ``[b_1, ..., b_n, e_1, ..., e_n]`` for the padded axes (all axes when ``axes`` is
absent); ``y`` has ``shape_i + b_i + e_i`` along axis i, negative values crop. Modes map to
``torch.nn.functional.pad``: constant -> ``constant`` (with ``constant_value``), reflect -> ``reflect``,
edge -> ``replicate``, wrap -> ``circular``. torch's non-constant modes pad at most the last three
axes of a tensor with at least one leading axis, so other layouts are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult

from torch_tpu.frontends.onnx_converters._common import (ConverterError, check_attribute, const_input,
                                                         const_ints, tensor_mapping)

_TORCH_MODE = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


class OnnxPadStatic(nn.Module, OnnxToTorchModule):
    """Pad with constant ``raw`` pads in ONNX order (all begins, then all ends) over ``axes``."""

    def __init__(self, raw: list[int], axes: list[int] | None, mode: str, value: float):
        super().__init__()
        self.raw, self.axes, self.mode, self.value = raw, axes, mode, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rank = x.dim()
        axes = list(range(rank)) if self.axes is None else [a % rank for a in self.axes]
        n = len(axes)
        per_axis = {a: (self.raw[i], self.raw[i + n]) for i, a in enumerate(axes)}
        padded = [a for a in range(rank) if per_axis.get(a, (0, 0)) != (0, 0)]
        first = min(padded) if padded else rank
        if self.mode != "constant" and padded and (first == 0 or rank - first > 3):
            raise ConverterError(f"Pad mode {self.mode}: only the last 3 axes (not axis 0) can be padded")
        torch_pads: list[int] = []
        for a in range(rank - 1, first - 1, -1):
            torch_pads += list(per_axis.get(a, (0, 0)))
        if not torch_pads:
            return x
        if self.mode == "constant":
            return F.pad(x, torch_pads, mode="constant", value=self.value)
        return F.pad(x, torch_pads, mode=_TORCH_MODE[self.mode])


def convert_pad_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Pad with ``pads``, ``constant_value`` and ``axes`` as (constant) inputs 1, 2, 3."""
    check_attribute(node, "mode", tuple(_TORCH_MODE), "constant")
    mode = node.attributes.get("mode", "constant")
    pads = const_ints(node, graph, 1, "pads")
    value = const_input(node, graph, 2, "constant_value")
    axes = const_ints(node, graph, 3, "axes")
    if pads is None:
        raise ConverterError("Pad: input 'pads' is required")
    if axes is not None and len(pads) != 2 * len(axes):
        raise ConverterError(f"Pad: {len(pads)} pads for {len(axes)} axes")
    fill = 0.0 if value is None or value.numel() == 0 else value.reshape(-1)[0].item()
    module = OnnxPadStatic(pads, axes, mode, fill)
    return OperationConverterResult(torch_module=module, onnx_mapping=tensor_mapping(node))


CONVERTERS = [("Pad", 18, convert_pad_18), ("Pad", 19, convert_pad_18), ("Pad", 21, convert_pad_18)]

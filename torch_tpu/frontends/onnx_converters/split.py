"""Split-18: sizes from the optional ``split`` input, or ``num_outputs`` chunks.

With ``num_outputs`` n and axis length L, every chunk has ``ceil(L / n)`` elements except the last,
which has the remainder (ONNX-18 rule, the same as ``torch.split`` with that chunk size).
Without either, the axis is split evenly into as many parts as the node has outputs.
"""

from __future__ import annotations

import torch
from torch import nn
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult

from torch_tpu.frontends.onnx_converters._common import ConverterError, const_ints, tensor_mapping


class OnnxSplitStatic(nn.Module, OnnxToTorchModule):
    """``torch.split`` along ``axis`` with explicit sizes, or into ``parts`` (ceil-sized) chunks."""

    def __init__(self, axis: int, sizes: list[int] | None, parts: int):
        super().__init__()
        self.axis, self.sizes, self.parts = axis, sizes, parts

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        if self.sizes is not None:
            return tuple(torch.split(x, self.sizes, dim=self.axis))
        length = x.shape[self.axis]
        return tuple(torch.split(x, -(-length // self.parts), dim=self.axis))


def convert_split_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Split with ``split`` as constant input 1 or the ``num_outputs`` attribute."""
    axis = int(node.attributes.get("axis", 0))
    sizes = const_ints(node, graph, 1, "split")
    num_outputs = node.attributes.get("num_outputs")
    if sizes is not None and num_outputs is not None:
        raise ConverterError("Split: both the 'split' input and 'num_outputs' are given")
    parts = int(num_outputs) if num_outputs is not None else len(node.output_values)
    if sizes is not None and len(sizes) != len(node.output_values):
        raise ConverterError(f"Split: {len(sizes)} sizes for {len(node.output_values)} outputs")
    module = OnnxSplitStatic(axis, sizes, parts)
    return OperationConverterResult(torch_module=module, onnx_mapping=tensor_mapping(node))


CONVERTERS = [("Split", 18, convert_split_18)]

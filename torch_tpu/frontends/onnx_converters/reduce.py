"""ReduceX-18 (axes as an input instead of an attribute) and ReduceMax/ReduceMin-20.

For ``axes`` A (all axes when empty, unless ``noop_with_empty_axes``) and ``keepdims`` k:

* ReduceMean = mean_A(x), ReduceSum = sum_A(x), ReduceMax = max_A(x), ReduceMin = min_A(x),
  ReduceProd = prod_A(x)
* ReduceL1 = sum_A |x|, ReduceL2 = sqrt(sum_A x^2), ReduceSumSquare = sum_A x^2
* ReduceLogSum = log(sum_A x), ReduceLogSumExp = log(sum_A exp(x)) (computed stably)

ReduceSum-13 already takes ``axes`` as an input and is handled by onnx2torch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult

from torch_tpu.frontends.onnx_converters._common import const_ints, tensor_mapping


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


REDUCTIONS: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


class OnnxReduceAxesInput(nn.Module, OnnxToTorchModule):
    """A reduction over constant axes (None: all axes; ``noop``: return the input)."""

    def __init__(self, op_type: str, axes: list[int] | None, keepdims: bool, noop: bool):
        super().__init__()
        self.op_type, self.axes, self.keepdims, self.noop = op_type, axes, keepdims, noop

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.noop:
            return x
        dims = list(range(x.dim())) if self.axes is None else [a % x.dim() for a in self.axes]
        return REDUCTIONS[self.op_type](x, dims, self.keepdims)


def convert_reduce_axes_input(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ReduceX with ``axes`` as optional input 1 and ``noop_with_empty_axes``."""
    axes = const_ints(node, graph, 1, "axes")
    keepdims = bool(node.attributes.get("keepdims", 1))
    noop = bool(node.attributes.get("noop_with_empty_axes", 0))
    if axes is not None and len(axes) == 0:
        axes = None
    module = OnnxReduceAxesInput(node.operation_type, axes, keepdims, noop and axes is None)
    return OperationConverterResult(torch_module=module, onnx_mapping=tensor_mapping(node))


CONVERTERS = [(op, 18, convert_reduce_axes_input) for op in sorted(REDUCTIONS) if op != "ReduceSum"] + [
    ("ReduceMax", 20, convert_reduce_axes_input),
    ("ReduceMin", 20, convert_reduce_axes_input),
]

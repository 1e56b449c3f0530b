"""Helpers shared by the ONNX converter modules: constant inputs and input/output mappings.

A converter receives an ``OnnxNode`` and the ``OnnxGraph`` (onnx2torch's types) and returns an
``OperationConverterResult(torch_module, onnx_mapping)``. Inputs that are constants (axes, pads, split
sizes, scales) are read here at conversion time and left out of the mapping, so the module's
``forward`` only receives tensors and export sees static shapes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, get_const_value


class ConverterError(NotImplementedError):
    """A node the converter cannot express (the frontend turns it into ``UnsupportedOpError``).

    Derives from ``NotImplementedError`` like onnx2torch's own refusals, so one ``except`` catches both.
    """


def optional_input(node: OnnxNode, index: int) -> str | None:
    """Name of input ``index`` or None when it is absent or empty (ONNX's optional inputs)."""
    names = node.input_values
    if index >= len(names) or names[index] == "":
        return None
    return names[index]


def const_input(node: OnnxNode, graph: OnnxGraph, index: int, what: str) -> torch.Tensor | None:
    """The value of constant input ``index`` (initializer or Constant node), None when absent.

    Raises:
        ConverterError: the input exists but is computed at run time.
    """
    name = optional_input(node, index)
    if name is None:
        return None
    try:
        value = get_const_value(name, graph)
    except KeyError:
        raise ConverterError(f"{node.operation_type}: input '{what}' ({name}) must be a constant "
                             "(initializer or Constant node); run-time values are not supported") from None
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


def const_ints(node: OnnxNode, graph: OnnxGraph, index: int, what: str) -> list[int] | None:
    """Constant integer input as a list (None when absent)."""
    value = const_input(node, graph, index, what)
    return None if value is None else [int(v) for v in value.reshape(-1).tolist()]


def tensor_mapping(node: OnnxNode, indices: Sequence[int] = (0,)) -> OnnxMapping:
    """Mapping that feeds only the inputs at ``indices`` to ``forward`` (constants are baked in)."""
    return OnnxMapping(inputs=tuple(node.input_values[i] for i in indices), outputs=node.output_values)


def check_attribute(node: OnnxNode, name: str, allowed: Sequence, default) -> None:
    """Refuse a node whose attribute ``name`` has a value the converter does not implement."""
    value = node.attributes.get(name, default)
    if value not in allowed:
        raise ConverterError(f"{node.operation_type}: attribute {name}={value!r} is not supported "
                             f"(supported: {', '.join(repr(a) for a in allowed)})")

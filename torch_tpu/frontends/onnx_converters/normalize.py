"""ONNX-level rewrites applied before conversion, each exact (the model computes the same values).

* :func:`fold_constant_producers`: ``Identity(initializer)`` (the legacy exporter's way of sharing a
  weight), ``Constant`` and ``ConstantOfShape(initializer)`` (the ONNX test zoo's generated weights)
  become initializers, because onnx2torch's Conv/Gemm/BatchNormalization converters read their
  weights from initializers only. Nodes whose output is a graph output are kept.
* :func:`drop_inert_allowzero`: ``Reshape(allowzero=1)`` with a constant shape that has no 0 means the
  same as ``allowzero=0`` (the flag only changes how a 0 in the shape is read); the dynamo exporter
  writes it on every Reshape and onnx2torch refuses the flag.
* :func:`drop_unused_outputs`: trailing outputs nothing reads (Dropout's mask, MaxPool's indices,
  BatchNormalization's training statistics) are removed; onnx2torch would otherwise index the single
  tensor its module returns as if it were a tuple.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_FOLDABLE = ("Identity", "Constant", "ConstantOfShape")
MAX_FOLD_ELEMENTS = 1 << 28  # a larger constant is a corrupt file, not a weight


def _constant_value(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> np.ndarray | None:
    """The value of a foldable node whose inputs are all known constants (None otherwise)."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in _FOLDABLE:
        return None
    if node.op_type == "Identity":
        return consts.get(node.input[0]) if node.input else None
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Constant":
        if "value" not in attrs:
            return None  # value_float(s)/value_int(s) stay as nodes; onnx2torch reads them directly
        return numpy_helper.to_array(attrs["value"].t)
    shape = consts.get(node.input[0]) if node.input else None
    if shape is None:
        return None
    if shape.size and (shape.min() < 0 or float(np.prod(shape.astype(np.float64))) > MAX_FOLD_ELEMENTS):
        raise ValueError(f"ConstantOfShape '{node.name or node.output[0]}': shape {shape.tolist()} is negative "
                         f"or has more than {MAX_FOLD_ELEMENTS} elements")
    fill = numpy_helper.to_array(attrs["value"].t).reshape(-1) if "value" in attrs else np.zeros(1, np.float32)
    return np.full([int(s) for s in shape.reshape(-1)], fill[0], dtype=fill.dtype)


def fold_constant_producers(model: onnx.ModelProto) -> int:
    """Turn constant-producing nodes into initializers in place; return how many were folded."""
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    input_names = {i.name for i in graph.input}
    kept, folded = [], 0
    for node in graph.node:
        value = _constant_value(node, consts) if len(node.output) == 1 else None
        if value is None or node.output[0] in outputs:
            kept.append(node)
            continue
        name = node.output[0]
        consts[name] = value
        graph.initializer.append(numpy_helper.from_array(value, name))
        if model.ir_version < 4 and name not in input_names:  # IR < 4: every initializer is also an input
            graph.input.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                             list(value.shape)))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
    return folded


def drop_inert_allowzero(model: onnx.ModelProto) -> int:
    """Remove ``allowzero=1`` from Reshape nodes whose constant shape has no 0; return how many."""
    graph = model.graph
    shapes = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = numpy_helper.to_array(a.t)
    changed = 0
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        keep = [a for a in node.attribute if not (a.name == "allowzero" and a.i == 1)]
        shape = shapes.get(node.input[1])
        if len(keep) != len(node.attribute) and shape is not None and not (shape == 0).any():
            del node.attribute[:]
            node.attribute.extend(keep)
            changed += 1
    return changed


def drop_unused_outputs(model: onnx.ModelProto) -> int:
    """Trim trailing node outputs that no node and no graph output reads; return how many were removed."""
    graph = model.graph
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    removed = 0
    for node in graph.node:
        n = len(node.output)
        while n > 1 and (node.output[n - 1] == "" or node.output[n - 1] not in read):
            n -= 1
        if n < len(node.output):
            removed += len(node.output) - n
            del node.output[n:]
    return removed

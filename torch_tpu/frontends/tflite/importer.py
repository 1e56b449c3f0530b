"""TFLite model -> TOP graph.

1. :func:`~torch_tpu.frontends.tflite.reader.read_tflite` parses and validates the flatbuffer.
2. Each operator, in file order, goes through its converter (``registry.py``). Operators on constants
   only are evaluated at import (weight DEQUANTIZE of int8/float16, DENSIFY of sparse weights, a
   TRANSPOSE of a weight ...), so weights reach the graph as float constants. The result is a
   :class:`TFLiteGraph` ``nn.Module``: one ``_OpModule`` per operator (``ops.<index>``) holding that
   operator's weights as buffers.
3. :func:`~torch_tpu.frontends.capture_module` exports it to core ATen.
4. Stable names are set from the TFLite file: inputs and operator outputs take their tensor names,
   weights their tensor names, the helper nodes of an operator ``<output name>.<op>`` (e.g. the NHWC ->
   NCHW permute before a convolution). Tensors that produce no node in float (QUANTIZE, DEQUANTIZE,
   same-shape RESHAPE) are listed in ``top.meta["tflite_aliases"]`` (tensor name -> stable name).
5. Quantized activations' parameters go to ``top.meta["tflite_quant"]``:
   ``{stable_name: {"scale": [...], "zero_point": [...], "dtype": "int8"}}``.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import struct
from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from tflite.TensorType import TensorType

from torch_tpu.errors import ModelFormatError, TorchTpuError
from torch_tpu.frontends.tflite.context import OpContext, OpFn
from torch_tpu.frontends.tflite.reader import ModelInfo, TensorInfo, operator_label, read_tflite
from torch_tpu.frontends.tflite.registry import FOLDERS, REGISTRY
from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.names import UniqueNames, module_path, op_short_name, set_stable_name
from torch_tpu.graph.top import TopGraph

_RUNTIME_DTYPES = {TensorType.INT32: torch.int32, TensorType.INT64: torch.int64, TensorType.BOOL: torch.bool}
_QUANT_TYPES = {TensorType.INT8: "int8", TensorType.UINT8: "uint8", TensorType.INT16: "int16"}
# What a corrupt options table or a converter tripping over inconsistent shapes raises.
_FORMAT_FAILURES = (struct.error, IndexError, ValueError, TypeError, AttributeError, OverflowError)


def runtime_dtype(t: TensorInfo) -> torch.dtype:
    """dtype of a tensor in the float TOP graph: quantized and float types are float32."""
    return _RUNTIME_DTYPES.get(t.type, torch.float32)


class _OpModule(torch.nn.Module):
    """One TFLite operator: its weights as buffers ``w<slot>`` and the converter's computation."""

    def __init__(self, fn: OpFn, n_slots: int, act_slots: list[int], weights: dict[int, torch.Tensor],
                 label: str, op: str, out_shapes: list[tuple[int, ...]], path: str):
        super().__init__()
        self.fn, self.n_slots, self.act_slots = fn, n_slots, act_slots
        self.label, self.op, self.out_shapes, self.path = label, op, out_shapes, path
        self.weight_slots = sorted(weights)
        for slot, w in weights.items():
            self.register_buffer(f"w{slot}", w)
        self.returned_slot: dict[int, int] = {}  # output j -> input slot it returns unchanged

    def forward(self, *acts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v: list[Any] = [None] * max(self.n_slots, max(self.weight_slots, default=-1) + 1)
        for slot, a in zip(self.act_slots, acts):
            v[slot] = a
        for slot in self.weight_slots:
            v[slot] = getattr(self, f"w{slot}")
        try:
            out = self.fn(v)
        except (RuntimeError, *_FORMAT_FAILURES) as e:
            raise ModelFormatError(self.path, f"the operator does not compute on its tensors: {e}",
                                   node=self.label, op=self.op) from None
        outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != len(self.out_shapes):
            raise ModelFormatError(self.path, f"{len(outs)} results for {len(self.out_shapes)} outputs",
                                   node=self.label, op=self.op)
        for j, (o, want) in enumerate(zip(outs, self.out_shapes)):
            if tuple(o.shape) != tuple(want):
                raise ModelFormatError(self.path, f"output {j} has shape {list(o.shape)}, the file says "
                                       f"{list(want)}", node=self.label, op=self.op)
            for slot, x in enumerate(v):
                if o is x:
                    self.returned_slot[j] = slot
        return outs


@dataclasses.dataclass
class _Step:
    module_index: int
    act_inputs: list[int]  # tensor ids, in the order of the module's activation slots
    outputs: list[int]


class TFLiteGraph(torch.nn.Module):
    """The TFLite subgraph as an ``nn.Module``: NHWC tensors in and out, operators in file order."""

    def __init__(self, model: ModelInfo, modules: list[_OpModule], steps: list[_Step]):
        super().__init__()
        self.ops = torch.nn.ModuleList(modules)
        self.steps = steps
        self.input_ids, self.output_ids = list(model.inputs), list(model.outputs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env = dict(zip(self.input_ids, inputs))
        for step in self.steps:
            outs = self.ops[step.module_index](*[env[t] for t in step.act_inputs])
            env.update(zip(step.outputs, outs))
        return tuple(env[t] for t in self.output_ids)


def _fold(ctx: OpContext, fn: OpFn) -> None:
    """Evaluate an operator whose inputs are all constants; its outputs become float constants."""
    v: list[Any] = [ctx.weights.get(i) for i in range(max(ctx.n_inputs, max(ctx.weights, default=-1) + 1))]
    for i in range(ctx.n_inputs):
        if v[i] is None and ctx.has_input(i):
            v[i] = ctx.const_float(i)
    with torch.no_grad():
        out = fn(v)
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    for t, value in zip(ctx.op.outputs, outs):
        if tuple(value.shape) != ctx.model.tensors[t].shape:
            raise ctx.error(f"folded output has shape {list(value.shape)}, the file says "
                            f"{list(ctx.model.tensors[t].shape)}")
        ctx.consts[t] = value.detach().to(torch.float32).numpy().copy()


def _build(model: ModelInfo) -> tuple[TFLiteGraph, dict[int, np.ndarray], list[OpContext]]:
    consts: dict[int, np.ndarray] = {t.index: t.data for t in model.tensors if t.data is not None}
    available = set(model.inputs) | set(consts)
    modules, steps, contexts = [], [], []
    for op in model.operators:
        ctx = OpContext(model, op, consts)
        label = operator_label(model, op)
        missing = [model.tensors[t].name for t in op.inputs
                   if t >= 0 and t not in available and model.tensors[t].sparse is None]
        if missing:
            raise model.error(f"reads tensor(s) {missing} before any operator produces them", op=op)
        try:
            if op.op in FOLDERS and len(op.outputs) == 1 and all(
                    t in consts or model.tensors[t].sparse is not None for t in op.inputs if t >= 0):
                consts[op.outputs[0]] = FOLDERS[op.op](ctx)
                available.add(op.outputs[0])
                continue
            fn = REGISTRY.lookup(op.op, name=label, location=model.path)(ctx)
            if op.inputs and all(t in consts for t in op.inputs if t >= 0):
                _fold(ctx, fn)  # e.g. a TRANSPOSE of a weight: computed once, here
                available.update(op.outputs)
                continue
        except TorchTpuError:
            raise
        except (RuntimeError, *_FORMAT_FAILURES) as e:
            raise model.error(f"cannot read the operator: {type(e).__name__}: {e}", op=op) from None
        act_slots = [i for i, t in enumerate(op.inputs) if t >= 0 and t not in consts]
        modules.append(_OpModule(fn, len(op.inputs), act_slots, ctx.weights, label, op.op,
                                 [model.tensors[t].shape for t in op.outputs], model.path))
        steps.append(_Step(len(modules) - 1, [op.inputs[i] for i in act_slots], list(op.outputs)))
        contexts.append(ctx)
        available.update(op.outputs)
    for t in model.outputs:
        if t not in available:
            raise model.error(f"graph output '{model.tensors[t].name}' is never produced")
        if t in consts:
            raise model.error(f"graph output '{model.tensors[t].name}' is a constant; nothing to compute")
    return TFLiteGraph(model, modules, steps), consts, contexts


def _example_inputs(model: ModelInfo) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    out = []
    for t in (model.tensors[i] for i in model.inputs):
        dt = runtime_dtype(t)
        out.append(torch.randn(t.shape, generator=g) if dt.is_floating_point else torch.zeros(t.shape, dtype=dt))
    return tuple(out)


_Namer = UniqueNames


def _op_outputs(group: list[fx.Node], members: set[fx.Node], n_out: int) -> list[fx.Node | None]:
    """Which node of an operator's group carries each of its outputs."""
    external = [n for n in group if any(u not in members for u in n.users)]
    if n_out == 1:
        return [external[-1] if external else None]
    if external and all(n.target is operator.getitem for n in external):
        by_index = {n.args[1]: n for n in external}
        return [by_index.get(j) for j in range(n_out)]
    return (external + [None] * n_out)[:n_out]


def _rename(top: TopGraph, model: ModelInfo, graph: TFLiteGraph, contexts: list[OpContext]) -> dict[int, str]:
    """Set stable names from the TFLite file; return tensor id -> stable name of the node carrying it."""
    gm, namer = top.gm, _Namer()
    tensor_name: dict[int, str] = {}
    for n, t in zip(top.input_nodes, model.inputs):
        set_stable_name(n, namer(model.tensors[t].name))
        tensor_name[t] = n.meta["stable_name"]
    weight_names = {f"ops.{k}.w{slot}": name for k, ctx in enumerate(contexts)
                    for slot, name in ctx.weight_names.items()}
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            set_stable_name(n, namer(weight_names.get(str(n.target), str(n.target))))
    groups: dict[int, list[fx.Node]] = defaultdict(list)
    loose = []
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        parts = module_path(n).split(".")
        if len(parts) >= 2 and parts[0] == "ops" and parts[1].isdigit():
            groups[int(parts[1])].append(n)
        else:
            loose.append(n)
    carriers: dict[int, list[fx.Node | None]] = {}
    for k, step in enumerate(graph.steps):
        group = groups.get(k, [])
        carriers[k] = _op_outputs(group, set(group), len(step.outputs))
        for t, node in zip(step.outputs, carriers[k]):
            if node is not None:
                set_stable_name(node, namer(model.tensors[t].name))
                tensor_name[t] = node.meta["stable_name"]
    for k, step in enumerate(graph.steps):  # outputs that are an input passed through (no node)
        module = graph.ops[k]
        for j, t in enumerate(step.outputs):
            if t in tensor_name:
                continue
            slot = module.returned_slot.get(j)
            if slot is not None:
                src = contexts[k].op.inputs[slot]
                tensor_name[t] = tensor_name.get(src) or contexts[k].weight_names.get(slot, "")
    for k, group in groups.items():
        own = set(carriers.get(k, []))
        base = model.tensors[graph.steps[k].outputs[0]].name if k < len(graph.steps) else f"op{k}"
        for n in group:
            if n not in own:
                set_stable_name(n, namer(f"{base}.{op_short_name(n.target)}"))
    for n in loose:
        set_stable_name(n, namer(op_short_name(n.target)))
    return tensor_name


def _quant_meta(model: ModelInfo, tensor_name: dict[int, str], consts: dict[int, np.ndarray]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    order = list(model.inputs) + [t for op in model.operators for t in op.outputs]
    for t in order:
        info = model.tensors[t]
        if t in consts or info.quant is None or info.type not in _QUANT_TYPES or t not in tensor_name:
            continue
        key = tensor_name[t]
        if key and key not in out:
            out[key] = {"scale": list(info.quant.scale), "zero_point": list(info.quant.zero_point),
                        "dtype": _QUANT_TYPES[info.type]}
    return out


def _preprocess_meta(preprocess: Any) -> Any:
    if preprocess is None or isinstance(preprocess, dict):
        return preprocess
    if hasattr(preprocess, "to_dict"):
        return preprocess.to_dict()
    if dataclasses.is_dataclass(preprocess):
        return dataclasses.asdict(preprocess)
    raise TorchTpuError(f"preprocess must be a dict, a dataclass or have to_dict(); got {type(preprocess).__name__}")


def import_tflite_model(model: ModelInfo, *, preprocess: Any = None) -> TopGraph:
    """A parsed TFLite model -> TOP graph (see the module doc for the naming and meta rules)."""
    graph, consts, contexts = _build(model)
    meta = {"source_file": model.path, "preprocess": _preprocess_meta(preprocess)}
    example = _example_inputs(model)
    with torch.no_grad():  # eager run first: shape errors name the operator; identity outputs are recorded
        graph(*example)
    top = capture_module(graph, example, meta=meta)
    top.source = "tflite"
    tensor_name = _rename(top, model, graph, contexts)
    top.meta["tflite_quant"] = _quant_meta(model, tensor_name, consts)
    top.meta["tflite_aliases"] = {model.tensors[t].name: name for t, name in tensor_name.items()
                                  if name and model.tensors[t].name != name}
    return top


def load_tflite(path: str | os.PathLike, *, preprocess: Any = None) -> TopGraph:
    """Import a ``.tflite`` model (float, or pre-quantized int8 imported in float) as a TOP graph.

    The graph takes and returns tensors in the model's own layout (NHWC images) and dtype — quantized
    inputs and outputs become float32 carrying the real values ``(q - zero_point) * scale``.

    Args:
        path: the ``.tflite`` file.
        preprocess: a preprocessing config (dict, dataclass or object with ``to_dict()``) stored in
            ``top.meta["preprocess"]``.

    Returns:
        The TOP graph (``top.source == "tflite"``), with quantization facts in ``top.meta["tflite_quant"]``.

    Raises:
        ModelFormatError: the file is truncated, corrupt or inconsistent.
        UnsupportedOpError: an operator has no converter (names the file, operator and op).

    Example:
        >>> top = load_tflite("face_detection_short_range.tflite")   # doctest: +SKIP
        >>> scores = top(torch.rand(1, 128, 128, 3))                   # doctest: +SKIP
    """
    return import_tflite_model(read_tflite(path), preprocess=preprocess)

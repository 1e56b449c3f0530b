"""ONNX -> TOP graph: read and check the file, convert with onnx2torch, capture to core ATen, name.

Pipeline of :func:`load_onnx`:

1. ``onnx.load`` + ``onnx.checker`` (any failure: :class:`ModelFormatError` naming the file);
2. input shapes fixed (``input_shapes`` for dynamic dims), exact ONNX-level rewrites
   (:mod:`onnx_converters.normalize`), strict shape inference;
3. every node must have a converter (onnx2torch's registry plus :mod:`onnx_converters`), else
   :class:`UnsupportedOpError` naming the file, node and ``op-version``;
4. ``onnx2torch.convert`` -> an FX GraphModule with one submodule per ONNX node; each ONNX value is
   wrapped in a ``torch_tpu_onnx::value_name`` marker op that carries its ONNX name through capture;
5. :func:`capture_module` (``torch.export`` + core ATen decompositions);
6. naming: the ATen node a marker wraps takes the ONNX value name; the other ATen nodes of the same
   ONNX node (known from ``nn_module_stack``) are ``<output>.<op>``; weights take their initializer
   names, inputs the ONNX input names. The markers are then removed.

Example:
    >>> top = load_onnx("resnet18.onnx", input_shapes={"input": [1, 3, 224, 224]})   # doctest: +SKIP
    >>> report = validate_onnx(top, "resnet18.onnx", top.example_inputs())        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import operator
import os
import re
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch
import torch.fx as fx
from onnx import helper
from onnx2torch.node_converters.registry import get_converter
from onnx2torch.onnx_graph import OnnxGraph

from torch_tpu.errors import ModelFormatError, TorchTpuError, UnsupportedOpError, VerificationError
from torch_tpu.frontends.onnx_converters import register_all
from torch_tpu.frontends.onnx_converters.normalize import (drop_inert_allowzero, drop_unused_outputs,
                                                          fold_constant_producers)
from torch_tpu.frontends.onnx_converters.static_args import bake_constant_args
from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.names import op_short_name, set_stable_name, stable_name
from torch_tpu.graph.top import TopGraph


@torch.library.custom_op("torch_tpu_onnx::value_name", mutates_args=())
def value_name(x: torch.Tensor, name: str) -> torch.Tensor:
    """Marker: ``x`` is the ONNX value ``name``. Lives only between conversion and naming."""
    return x.clone()


@value_name.register_fake
def _value_name_fake(x: torch.Tensor, name: str) -> torch.Tensor:
    return torch.empty_like(x)


_MARKER = torch.ops.torch_tpu_onnx.value_name.default
MAX_INPUT_ELEMENTS = 1 << 28  # example inputs larger than this mean a corrupt or mis-set shape
_MODULE_PREFIX = "onnx_node_"


@dataclasses.dataclass(frozen=True)
class OnnxNodeInfo:
    """What the naming step needs to know about one converted ONNX node."""

    name: str
    op_type: str
    outputs: tuple[str, ...]
    initializer_inputs: tuple[str, ...]


# -- reading and checking --------------------------------------------------------------------------
def _node_label(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _read_model(path: str) -> onnx.ModelProto:
    if not os.path.isfile(path):
        raise ModelFormatError(path, "no such file")
    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf and onnx raise many types on corrupt files
        raise ModelFormatError(path, f"cannot parse the ONNX protobuf ({type(e).__name__}: {e})") from None
    if not model.graph.node:
        raise ModelFormatError(path, "the graph has no nodes (empty or not an ONNX model)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # onnx.checker.ValidationError and C++ errors surfaced as other types
        text = str(e).strip()
        m = re.search(r"Name: (.*?) OpType: (\S+)", text)
        raise ModelFormatError(path, f"onnx.checker: {text.splitlines()[0] if text else type(e).__name__}",
                               node=m.group(1) if m else None, op=m.group(2) if m else None) from None
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The true inputs (IR < 4 lists initializers as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _fix_input_shapes(path: str, model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None) -> None:
    inputs = _graph_inputs(model)
    names = [i.name for i in inputs]
    unknown = sorted(set(input_shapes or {}) - set(names))
    if unknown:
        raise ModelFormatError(path, f"input_shapes names {unknown} are not inputs of the model "
                               f"(inputs: {names})")
    for vi in inputs:
        if not vi.type.HasField("tensor_type"):
            raise ModelFormatError(path, f"input '{vi.name}' is not a tensor")
        tt = vi.type.tensor_type
        if input_shapes and vi.name in input_shapes:
            shape = [int(d) for d in input_shapes[vi.name]]
            if tt.HasField("shape") and len(tt.shape.dim) not in (0, len(shape)):
                raise ModelFormatError(path, f"input_shapes['{vi.name}'] = {shape} has rank {len(shape)}, "
                                       f"the model's input has rank {len(tt.shape.dim)}")
            tt.shape.Clear()
            for d in shape:
                tt.shape.dim.add().dim_value = d
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        if not tt.HasField("shape") or any(not isinstance(d, int) or d < 0 for d in dims):
            raise ModelFormatError(path, f"input '{vi.name}' has dynamic or unknown dims {dims}; pass "
                                   f"input_shapes={{'{vi.name}': [...]}}")
    if input_shapes:  # shape inference re-derives every other shape from the new input shapes
        del model.graph.value_info[:]
        for out in model.graph.output:
            if out.type.HasField("tensor_type"):
                out.type.tensor_type.ClearField("shape")


def _infer_shapes(path: str, model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx.shape_inference.InferenceError and C++ errors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        m = re.search(r"\(op_type:(\w+), node name: ([^)]*)\)", msg)
        raise ModelFormatError(path, f"shape inference failed: {msg}", node=m.group(2) if m else None,
                               op=m.group(1) if m else None) from None


def _opsets(path: str, model: onnx.ModelProto) -> dict[str, int]:
    opsets = {o.domain if o.domain != "ai.onnx" else "": o.version for o in model.opset_import}
    for node in model.graph.node:
        if (node.domain if node.domain != "ai.onnx" else "") not in opsets:
            raise ModelFormatError(path, f"no opset imported for domain '{node.domain}'", node=_node_label(node),
                                   op=node.op_type)
    return opsets


def _check_converters(path: str, model: onnx.ModelProto, opsets: dict[str, int]) -> None:
    for node in model.graph.node:
        domain = node.domain if node.domain != "ai.onnx" else ""
        try:
            get_converter(operation_type=node.op_type, version=opsets[domain], domain=domain)
        except NotImplementedError:
            since = _since_version(node.op_type, opsets[domain], domain)
            raise UnsupportedOpError(f"{node.op_type}-{since}", name=_node_label(node), where="onnx",
                                     location=path, reason=f"no converter for {domain or 'ai.onnx'} "
                                     f"{node.op_type} at opset {opsets[domain]}") from None


def _since_version(op: str, opset: int, domain: str) -> int | str:
    try:
        return onnx.defs.get_schema(op, max_inclusive_version=opset, domain=domain).since_version
    except Exception:  # unknown op: no schema
        return opset


def _locate_conversion_error(path: str, model: onnx.ModelProto, opsets: dict[str, int], error: Exception
                             ) -> TorchTpuError:
    """Re-run the converters one node at a time to name the node that ``onnx2torch.convert`` failed on."""
    graph = OnnxGraph(model.graph)
    for node in graph.nodes.values():
        converter = get_converter(operation_type=node.operation_type, version=opsets[node.domain],
                                  domain=node.domain)
        try:
            converter(node, graph)
        except Exception as e:  # converters raise NotImplementedError, KeyError, ValueError ...
            return UnsupportedOpError(node.operation_type, name=node.name or node.output_values[0], where="onnx",
                                      location=path, reason=f"{type(e).__name__}: {e}")
    return ModelFormatError(path, f"onnx2torch could not convert the graph ({type(error).__name__}: {error})")


# -- conversion ------------------------------------------------------------------------------------
def _convert(path: str, model: onnx.ModelProto, opsets: dict[str, int]
             ) -> tuple[fx.GraphModule, list[OnnxNodeInfo], dict[str, str]]:
    """onnx2torch GraphModule with submodules renamed ``onnx_node_<i>`` and ONNX outputs in order.

    Returns:
        The GraphModule, one :class:`OnnxNodeInfo` per ONNX node, and the initializer buffer names.
    """
    import onnx2torch

    try:
        gm = onnx2torch.convert(model, attach_onnx_mapping=True)
    except Exception as e:  # onnx2torch raises NotImplementedError, KeyError, ValueError ...
        raise _locate_conversion_error(path, model, opsets, e) from None
    init_by_buffer = _initializer_buffers(gm, model)
    inits = {i.name for i in model.graph.initializer}
    infos = [OnnxNodeInfo(_node_label(node), node.op_type, tuple(node.output),
                          tuple(x for x in node.input if x in inits)) for node in model.graph.node]
    by_old_name = {old: i for i, old in enumerate(OnnxGraph(model.graph).nodes)}
    gm = _rename_modules(gm, by_old_name)
    bake_constant_args(gm)
    _rebuild_outputs(path, gm, model, infos)
    return gm, infos, init_by_buffer


def _rename_modules(gm: fx.GraphModule, by_old_name: dict[str, int]) -> fx.GraphModule:
    """A GraphModule whose node modules are ``onnx_node_<index of the ONNX node>`` (names free of any
    character export might mangle); built on a fresh root so that no new name can clash with an old one."""
    root = torch.nn.Module()
    if hasattr(gm, "initializers"):  # only present when some node reads an initializer
        root.add_module("initializers", gm.get_submodule("initializers"))
    for n in gm.graph.nodes:
        if n.op == "call_module":
            new = f"{_MODULE_PREFIX}{by_old_name[n.target]}"
            root.add_module(new, gm.get_submodule(n.target))
            n.target = new
    return fx.GraphModule(root, gm.graph)


def _rebuild_outputs(path: str, gm: fx.GraphModule, model: onnx.ModelProto, infos: list[OnnxNodeInfo]) -> None:
    """Return exactly the ONNX graph outputs, in order, each as one tensor (getitem of multi-output nodes)."""
    g = gm.graph
    modules = {n.target: n for n in g.nodes if n.op == "call_module"}
    placeholders = [n for n in g.nodes if n.op == "placeholder"]
    values: dict[str, fx.Node] = {vi.name: p for vi, p in zip(_graph_inputs(model), placeholders)}
    out_node = next(n for n in g.nodes if n.op == "output")
    graph_outputs = {o.name for o in model.graph.output}
    for i, info in enumerate(infos):
        mod = modules.get(f"{_MODULE_PREFIX}{i}")
        if mod is None:
            continue
        if len(info.outputs) == 1:
            values[info.outputs[0]] = mod
            continue
        existing = {u.args[1]: u for u in mod.users if u.op == "call_function" and u.target is operator.getitem}
        for k, name in enumerate(info.outputs):
            if name == "" or (k not in existing and name not in graph_outputs):
                continue  # an output nothing reads (Dropout's mask, MaxPool's indices)
            if k not in existing:
                with g.inserting_after(mod):
                    existing[k] = g.call_function(operator.getitem, (mod, k))
            values[name] = existing[k]
    outs = []
    for o in model.graph.output:
        if o.name not in values:
            raise UnsupportedOpError("constant graph output", name=o.name, where="onnx", location=path,
                                     reason="a graph output that is an initializer is not supported")
        outs.append(values[o.name])
    out_node.args = (tuple(outs),)
    gm.meta["onnx_values"] = values
    gm.recompile()


def _insert_markers(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor], path: str,
                    infos: list[OnnxNodeInfo]) -> None:
    """Run once eagerly (naming the ONNX node of any failure), then wrap every tensor value in a marker."""
    values: dict[str, fx.Node] = gm.meta.pop("onnx_values")
    owner = {f"{_MODULE_PREFIX}{i}": info for i, info in enumerate(infos)}

    class _Probe(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            try:
                out = super().run_node(n)
            except Exception as e:  # report which ONNX node failed and why
                info = owner.get(str(n.target))
                raise UnsupportedOpError(info.op_type if info else str(n.target), name=info.name if info else None,
                                         where="onnx", location=path,
                                         reason=f"{type(e).__name__}: {e}") from None
            n.meta["_is_tensor"] = isinstance(out, torch.Tensor)
            return out

    gm.eval()  # inference semantics (BatchNorm must not update its statistics)
    with torch.no_grad():
        _Probe(gm).run(*example_inputs)
    g = gm.graph
    for name, node in values.items():
        if node.op == "placeholder" or not node.meta.get("_is_tensor"):
            continue
        users = list(node.users)
        with g.inserting_after(node):
            marker = g.call_function(_MARKER, (node, name))
        for u in users:
            u.replace_input_with(node, marker)
    for n in g.nodes:
        n.meta.pop("_is_tensor", None)
    g.lint()
    gm.recompile()


# -- naming ----------------------------------------------------------------------------------------
def _onnx_node_index(n: fx.Node) -> int | None:
    stack = n.meta.get("nn_module_stack") or {}
    for path, _ in stack.values():
        m = re.search(rf"{_MODULE_PREFIX}(\d+)", str(path))
        if m:
            return int(m.group(1))
    return None


def _weight_name(gm: fx.GraphModule, target: str, infos: list[OnnxNodeInfo], init_arrays: dict[str, np.ndarray],
                 init_by_buffer: dict[str, str]) -> str | None:
    if target in init_by_buffer:
        return init_by_buffer[target]
    m = re.match(rf"{_MODULE_PREFIX}(\d+)\.(.+)$", target)
    if not m:
        return None
    info = infos[int(m.group(1))]
    value = gm.get_parameter(target) if target in dict(gm.named_parameters()) else gm.get_buffer(target)
    for name in info.initializer_inputs:
        arr = init_arrays[name]
        if tuple(arr.shape) == tuple(value.shape) and np.array_equal(arr, value.detach().cpu().numpy()):
            return name
    return f"{info.outputs[0]}.{m.group(2).split('.')[-1]}"


def _initializer_buffers(gm_before: fx.GraphModule, model: onnx.ModelProto) -> dict[str, str]:
    """``initializers.onnx_initializer_<k>`` -> initializer name (replays onnx2torch's numbering)."""
    inits = {i.name for i in model.graph.initializer}
    order: dict[str, str] = {}
    k = 0
    for n in gm_before.graph.nodes:
        if n.op != "call_module":
            continue
        mapping = getattr(gm_before.get_submodule(n.target), "onnx_mapping", None)
        for name in (mapping.inputs if mapping else ()):
            if name in inits:
                order[f"initializers.onnx_initializer_{k}"] = name
                k += 1
    return order


def _apply_names(top: TopGraph, infos: list[OnnxNodeInfo], input_names: list[str], output_names: list[str],
                 init_arrays: dict[str, np.ndarray], init_by_buffer: dict[str, str]) -> dict[str, str]:
    """Name every node of ``top`` after the ONNX model; remove the markers; return ``{alias: kept name}``."""
    gm, g = top.gm, top.gm.graph
    for p, name in zip(top.input_nodes, input_names):
        set_stable_name(p, name)
    named: dict[fx.Node, str] = {}
    aliases: dict[str, str] = {}
    outputs = set(output_names)
    for n in list(g.nodes):
        if n.op != "call_function" or n.target is not _MARKER:
            continue
        src, name = n.args
        if src.op == "call_function" and src not in named:
            named[src] = name
        elif name in outputs:  # an output that is another value (input, weight, identity): give it a node
            with g.inserting_after(n):
                copy = g.call_function(torch.ops.aten.clone.default, (src,))
            copy.meta["val"] = src.meta.get("val")
            named[copy] = name
            aliases[name] = named.get(src, stable_name(src))
            src = copy
        else:
            aliases[name] = named.get(src, stable_name(src))
        n.replace_all_uses_with(src)
        g.erase_node(n)
    for n, name in named.items():
        set_stable_name(n, name)
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for n in g.nodes:
        if n.op == "get_attr":
            name = _weight_name(gm, str(n.target), infos, init_arrays, init_by_buffer)
            if name:
                set_stable_name(n, name)
        if n.op != "call_function" or n in named:
            continue
        if n.target is operator.getitem:
            continue
        idx = _onnx_node_index(n)
        if idx is None:
            continue
        short = op_short_name(n.target)
        k = counts[(idx, short)]
        counts[(idx, short)] += 1
        base = f"{infos[idx].outputs[0]}.{short}" + (f"_{k}" if k else "")
        set_stable_name(n, base + ("#tuple" if isinstance(n.meta.get("val"), (tuple, list)) else ""))
    for n in g.nodes:  # getitems of unnamed tuples follow the tuple: element 0 base, i > 0 base#i
        if n.op == "call_function" and n.target is operator.getitem and n not in named:
            base = stable_name(n.args[0]).removesuffix("#tuple")
            set_stable_name(n, base if n.args[1] == 0 else f"{base}#{n.args[1]}")
    for n in g.nodes:  # a tuple whose element 0 carries an ONNX name is <name>#tuple
        if isinstance(n.meta.get("val"), (tuple, list)) and n.op == "call_function":
            first = [u for u in n.users if u.target is operator.getitem and u.args[1] == 0]
            if first and first[0] in named:
                set_stable_name(n, named[first[0]] + "#tuple")
    _make_unique(g)
    g.eliminate_dead_code()
    g.lint()
    gm.recompile()
    return aliases


def _make_unique(g: fx.Graph) -> None:
    used: set[str] = set()
    for n in g.nodes:
        if n.op == "output":
            continue
        name = stable_name(n)
        if name in used:
            k = 1
            while f"{name}_{k}" in used:
                k += 1
            name = f"{name}_{k}"
            set_stable_name(n, name)
        used.add(name)


# -- public API ------------------------------------------------------------------------------------
_ONNX_TO_TORCH = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8, onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool,
}


def example_inputs_for(model: onnx.ModelProto, seed: int = 0, path: str = "<model>") -> tuple[torch.Tensor, ...]:
    """Deterministic inputs shaped like the model's (static) inputs: N(0, 1) floats, zeros otherwise."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for vi in _graph_inputs(model):
        tt = vi.type.tensor_type
        dtype = _ONNX_TO_TORCH.get(tt.elem_type)
        if dtype is None:
            raise UnsupportedOpError(f"input dtype {helper.tensor_dtype_to_string(tt.elem_type)}", name=vi.name,
                                     where="onnx", location=path)
        shape = [d.dim_value for d in tt.shape.dim]
        if float(np.prod(np.array(shape, dtype=np.float64))) > MAX_INPUT_ELEMENTS:
            raise ModelFormatError(path, f"input '{vi.name}' of shape {shape} has more than {MAX_INPUT_ELEMENTS} "
                                   "elements")
        out.append(torch.randn(shape, generator=gen).to(dtype) if dtype.is_floating_point
                   else torch.zeros(shape, dtype=dtype))
    return tuple(out)


def load_onnx(path: str | os.PathLike, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
              preprocess: Any = None) -> TopGraph:
    """Read an ONNX model into a TOP graph whose stable names are the ONNX value names.

    Args:
        path: the ``.onnx`` file (external data next to it is read by ``onnx.load``).
        input_shapes: ``{input name: shape}`` for inputs with dynamic dims (or to override static ones).
        preprocess: a :class:`~torch_tpu.frontends.preprocess.PreprocessConfig` (or its dict), stored in
            ``top.meta["preprocess"]``.

    Returns:
        The TOP graph (``source="onnx"``, ``meta["source_file"]``, ``meta["onnx_aliases"]`` for ONNX values
        that are the same tensor as another named value).

    Raises:
        ModelFormatError: unreadable, corrupt or invalid file, dynamic dims without ``input_shapes``.
        UnsupportedOpError: an op (or op version / attribute) without a converter.

    Example:
        >>> top = load_onnx("model.onnx", input_shapes={"images": [1, 3, 224, 224]})   # doctest: +SKIP
        >>> top.output_names                                                           # doctest: +SKIP
        ['logits']
    """
    path = str(path)
    register_all()
    model = _read_model(path)
    _fix_input_shapes(path, model, input_shapes)
    try:
        fold_constant_producers(model)
        drop_inert_allowzero(model)
        drop_unused_outputs(model)
    except ValueError as e:
        raise ModelFormatError(path, str(e)) from None
    model = _infer_shapes(path, model)
    opsets = _opsets(path, model)
    _check_converters(path, model, opsets)
    example = example_inputs_for(model, path=path)
    gm, infos, init_by_buffer = _convert(path, model, opsets)
    _insert_markers(gm, example, path, infos)
    meta: dict[str, Any] = {"source_file": os.path.abspath(path)}
    if preprocess is not None:
        meta["preprocess"] = preprocess if isinstance(preprocess, dict) else preprocess.to_dict()
    try:
        top = capture_module(gm, example, meta=meta)
    except UnsupportedOpError as e:
        raise UnsupportedOpError(e.op, name=e.name, where="onnx capture", location=path, reason=e.reason) from e
    init_arrays = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    input_names = [vi.name for vi in _graph_inputs(model)]
    output_names = [o.name for o in model.graph.output]
    aliases = _apply_names(top, infos, input_names, output_names, init_arrays, init_by_buffer)
    top.source = "onnx"
    top.out_spec = None  # outputs are the flat list of ONNX graph outputs
    if aliases:
        top.meta["onnx_aliases"] = aliases
    return top


@dataclasses.dataclass(frozen=True)
class OutputMatch:
    """TOP vs onnxruntime for one output.

    ``cosine = <a, b> / (|a| |b|)``; ``max_abs = max |a - b|``; ``rel = max_abs / max(max |b|, eps)``.
    """

    name: str
    cosine: float
    max_abs: float
    rel: float
    passed: bool


def validate_onnx(top: TopGraph, path: str | os.PathLike, inputs: Sequence[torch.Tensor],
                  tol: tuple[float, float] = (1e-4, 0.99999), *, check: bool = False) -> dict[str, OutputMatch]:
    """Run ``top`` and onnxruntime on ``inputs``; compare every output.

    Args:
        tol: ``(rel, cosine)``: an output passes when ``rel <= tol[0]`` and ``cosine >= tol[1]``.
        check: raise :class:`VerificationError` when an output fails.

    Returns:
        ``{output name: OutputMatch}`` in output order.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {name: t.detach().cpu().numpy() for name, t in zip(top.input_names, inputs)}
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    got = top.run_flat(*inputs)
    report: dict[str, OutputMatch] = {}
    for name, value in zip(top.output_names, got):
        if name not in ref:
            raise VerificationError(f"{path}: TOP output '{name}' is not an onnxruntime output ({sorted(ref)})")
        a = value.detach().double().reshape(-1)
        b = torch.from_numpy(np.asarray(ref[name])).double().reshape(-1)
        if a.shape != b.shape:
            raise VerificationError(f"{path}: output '{name}' has {a.numel()} elements, onnxruntime {b.numel()}")
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        rel = diff / max(float(b.abs().max()) if b.numel() else 0.0, 1e-12)
        denom = float(a.norm() * b.norm())
        cos = float(a @ b) / denom if denom > 0 else (1.0 if diff == 0 else 0.0)
        report[name] = OutputMatch(name, cos, diff, rel, rel <= tol[0] and cos >= tol[1])
    if check and not all(m.passed for m in report.values()):
        bad = [f"{m.name}: cosine {m.cosine:.6f}, max abs {m.max_abs:.3g}, rel {m.rel:.3g}"
               for m in report.values() if not m.passed]
        raise VerificationError(f"{path}: TOP differs from onnxruntime beyond {tol}: " + "; ".join(bad))
    return report


__all__ = ["OutputMatch", "example_inputs_for", "load_onnx", "validate_onnx"]

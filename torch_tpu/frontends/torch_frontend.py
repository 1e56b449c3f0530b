"""PyTorch -> TOP graph, for both faces.

* :func:`capture_module` (``torch_tpu.transform(nn.Module)``): ``torch.export`` (non-strict), core ATen
  decompositions, then the TOP normal form.
* :func:`capture_dynamo` (``torch.compile(backend="tpu")``): the graph dynamo hands a backend has the
  module's parameters as inputs; they are frozen into attributes (inference compiler: weights are
  constants, as with Inductor's freezing), then the same export + decomposition runs on it. Dynamo's
  ``nn_module_stack`` survives, so both faces give the same stable names.

The TOP normal form (checked by :func:`torch_tpu.fx_passes.checker.check_top`): flat tensor inputs,
a tuple of tensors out, only core ATen ``call_function`` nodes (plus ``getitem``), weights as
``get_attr``, ``meta["val"]`` and ``meta["stable_name"]`` on every node.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from torch_tpu.errors import UnsupportedOpError
from torch_tpu.graph.names import assign_module_names, normalize_module_path
from torch_tpu.graph.top import TopGraph, flatten_codegen


def _decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    return ep.run_decompositions()


def _export(model: torch.nn.Module, args: tuple, kwargs: dict | None, what: str) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model, args, kwargs=kwargs or None, strict=False)
    except Exception as e:  # export raises many types; report which model and why
        raise UnsupportedOpError(type(e).__name__, where=f"torch.export of {what}",
                                 reason=str(e).splitlines()[0] if str(e) else "") from e


_ASSERT_OPS = {
    torch.ops.aten._assert_tensor_metadata.default,
    torch.ops.aten._assert_scalar.default,
    torch.ops.aten.sym_constrain_range_for_size.default,
    torch.ops.aten._assert_async.msg,
}


def _drop_runtime_asserts(gm: fx.GraphModule) -> None:
    """Export's run-time checks (dtype/shape asserts of ``.to()``, symbolic ranges) are not TOP ops."""
    for n in list(gm.graph.nodes):
        if n.op == "call_function" and n.target in _ASSERT_OPS and not n.users:
            gm.graph.erase_node(n)
    gm.recompile()


def _to_top(ep: torch.export.ExportedProgram, *, input_names: Sequence[str], source: str,
            meta: dict | None, out_spec: pytree.TreeSpec | None,
            attr_name: Callable[[fx.Node], str] | None = None) -> TopGraph:
    out_spec = out_spec if out_spec is not None else ep.call_spec.out_spec
    gm = flatten_codegen(ep.module())
    _drop_runtime_asserts(gm)
    gm.meta.pop("dynamo_flat_name_to_original_fqn", None)
    assign_module_names(gm, placeholder_names=input_names, attr_name=attr_name)
    return TopGraph(gm, source=source, meta=meta, out_spec=out_spec)


def capture_module(model: torch.nn.Module, example_inputs: Sequence[Any], *,
                   example_kwargs: dict | None = None, meta: dict | None = None) -> TopGraph:
    """``nn.Module`` -> TOP graph (the module is put in eval mode; weights are taken as constants)."""
    model = model.eval()
    args = tuple(example_inputs)
    with torch.no_grad():
        ep = _decompose(_export(model, args, example_kwargs, type(model).__name__))
    input_names = [spec.arg.name for spec in ep.graph_signature.input_specs
                   if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    return _to_top(ep, input_names=input_names, source="torch", meta=meta, out_spec=None)


def _grapharg_source(node: fx.Node) -> str:
    ga = node.meta.get("grapharg")
    src = getattr(ga, "source", None)
    if src is None:
        return node.name
    name = src.name
    return name() if callable(name) else name


def freeze_dynamo_params(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> tuple[list[int], list[str]]:
    """Turn dynamo's parameter/buffer placeholders into attributes; return (user input positions, names)."""
    user_pos, user_names = [], []
    phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, (n, v) in enumerate(zip(phs, example_inputs)):
        src = _grapharg_source(n)
        if isinstance(v, torch.Tensor) and ("_parameters[" in src or "_buffers[" in src):
            attr = f"_frozen_{i}"
            gm.register_buffer(attr, v.detach())
            with gm.graph.inserting_before(n):
                a = gm.graph.get_attr(attr)
            a.meta.update(n.meta)
            a.meta["param_path"] = normalize_module_path(src)
            n.replace_all_uses_with(a)
            gm.graph.erase_node(n)
        else:
            user_pos.append(i)
            user_names.append(normalize_module_path(src) or n.name)
    gm.recompile()
    return user_pos, user_names


def capture_frozen(gm: fx.GraphModule, user_args: Sequence[Any], user_names: Sequence[str], *,
                   meta: dict | None = None) -> TopGraph:
    """Export a dynamo graph whose parameters were frozen by :func:`freeze_dynamo_params`."""
    paths = {str(n.target): n.meta["param_path"] for n in gm.graph.nodes if n.op == "get_attr"
             and "param_path" in n.meta}
    with torch.no_grad():
        ep = _decompose(_export(gm, tuple(user_args), None, "the torch.compile graph"))

    def attr_name(n: fx.Node) -> str:
        return paths.get(str(n.target), str(n.target))

    return _to_top(ep, input_names=user_names, source="torch", meta=meta, out_spec=None, attr_name=attr_name)


def capture_dynamo(gm: fx.GraphModule, example_inputs: Sequence[Any], *, meta: dict | None = None) -> tuple[
        TopGraph, list[int]]:
    """Dynamo graph -> (TOP graph, positions of the user inputs among dynamo's inputs)."""
    user_pos, user_names = freeze_dynamo_params(gm, example_inputs)
    top = capture_frozen(gm, [example_inputs[i] for i in user_pos], user_names, meta=meta)
    return top, user_pos

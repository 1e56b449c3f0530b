"""Caffe layers -> an ``nn.Module`` (:class:`CaffeModule`) and the naming plan for its TOP graph.

:func:`plan_network` walks the layers in order, converts each with the registry, and runs the
converted functions on ``meta`` tensors to get every blob's shape (a shape error there is reported
against the layer). :class:`CaffeModule` replays the plan in ``forward``; each top's computation runs
under ``torch.fx.traceback.annotate({"caffe_layer": i, "caffe_top": k})`` so that the nodes
``torch.export`` records can be mapped back to the layer and top that produced them.

Naming rule (stable names of the TOP graph):

* a value written to blob ``t`` is named ``t`` when it is the blob's final value; an earlier value of
  an in-place chain is named ``<t>.<layer>`` (``conv1 -> bn1 -> relu1`` all writing ``conv1`` gives
  ``conv1.conv1``, ``conv1.bn1`` and ``conv1``);
* other nodes a layer creates are named ``<value>.<op>`` (``_1``, ``_2`` on repeats); a multi-output op
  is ``<value>#tuple`` with element 0 named ``<value>`` (as in :mod:`torch_tpu.graph.names`);
* a layer that computes nothing (Split, Dropout, identity Reshape) creates no node: its top is an
  *alias* of the bottom's value, recorded in ``top.meta["caffe"]["aliases"]``; an in-place no-op
  (``Dropout`` with top == bottom) does not count as a new value of the blob;
* weights are ``<layer>.<key>`` (``conv1.weight``, ``conv1.bias``, ``bn1.mean``, ``bn1.variance``);
  graph inputs are named by their blob.

The graph outputs are the blobs whose final value no later layer reads, in the order they are written.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Mapping, Sequence

import torch
import torch.fx as fx
import torch.fx.traceback as fx_traceback

from torch_tpu.errors import ModelFormatError, TorchTpuError
from torch_tpu.frontends.caffe.context import Converted, LayerContext, TopFn
from torch_tpu.frontends.caffe.reader import CaffeLayer, CaffeNet
from torch_tpu.frontends.caffe.registry import INPUT_TYPES, LayerRegistry
from torch_tpu.graph.names import UniqueNames, op_short_name, set_stable_name

LAYER_KEY, TOP_KEY = "caffe_layer", "caffe_top"


@dataclasses.dataclass
class Step:
    """One converted layer in the plan."""

    layer: CaffeLayer
    fns: tuple[TopFn, ...]
    weight_attrs: dict[str, str]           # key -> buffer attribute name
    value_names: list[str]                 # per top
    alias_of: list[int | None]             # per top: index of the bottom it returns unchanged
    shapes: list[tuple[int, ...]]          # per top


@dataclasses.dataclass
class Plan:
    """Everything needed to build and name the graph."""

    inputs: list[tuple[str, tuple[int, ...]]]
    steps: list[Step]
    outputs: list[str]                     # blob names
    weights: dict[str, torch.Tensor]       # buffer attribute -> tensor
    weight_names: dict[str, str]           # buffer attribute -> stable name
    aliases: dict[str, str]                # alias value name -> name of the value it stands for
    shapes: dict[str, tuple[int, ...]]     # value name -> shape


def _input_shapes(net: CaffeNet, overrides: Mapping[str, Sequence[int]] | Sequence[Sequence[int]] | None
                  ) -> list[tuple[str, tuple[int, ...] | None, str]]:
    """(name, shape, declared-by) for every graph input, in order, before overrides."""
    found: list[tuple[str, tuple[int, ...] | None, str]] = [(n, s, "net input") for n, s in net.inputs]
    for layer in net.layers:
        if layer.type in INPUT_TYPES:
            shapes = [tuple(int(d) for d in s.dim) for s in layer.param.input_param.shape]
            if len(shapes) not in (0, 1, len(layer.tops)):
                raise ModelFormatError(net.prototxt, f"{len(shapes)} shapes for {len(layer.tops)} tops",
                                       node=layer.name, op=layer.type)
            for k, top in enumerate(layer.tops):
                found.append((top, shapes[k] if len(shapes) > 1 else shapes[0] if shapes else None, layer.name))
    return found


def _apply_overrides(net: CaffeNet, found, overrides) -> list[tuple[str, tuple[int, ...]]]:
    names = [n for n, _, _ in found]
    if overrides is None:
        table: dict[str, Sequence[int]] = {}
    elif isinstance(overrides, Mapping):
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ModelFormatError(net.prototxt, f"input_shapes names unknown input(s) {unknown}; "
                                   f"inputs are {names}")
        table = dict(overrides)
    else:
        overrides = list(overrides)
        if len(overrides) != len(names):
            raise ModelFormatError(net.prototxt, f"{len(overrides)} input_shapes for {len(names)} inputs {names}")
        table = dict(zip(names, overrides))
    out = []
    for name, shape, by in found:
        shape = tuple(int(d) for d in table[name]) if name in table else shape
        if shape is None or len(shape) == 0:
            raise ModelFormatError(net.prototxt, f"input '{name}' (from {by}) has no shape; pass input_shapes=")
        if any(d < 1 for d in shape):
            raise ModelFormatError(net.prototxt, f"input '{name}' has a non-positive dimension in {list(shape)}")
        out.append((name, shape))
    return out


def _attr(index: int, key: str) -> str:
    return f"caffe_{index}_{''.join(c if c.isalnum() else '_' for c in key)}"


def _meta_run(ctx: LayerContext, converted: Converted) -> tuple[list[tuple[int, ...]], list[int | None]]:
    """Run the converted functions on meta tensors: output shapes and which tops alias a bottom."""
    xs = [torch.empty(s, device="meta") for s in ctx.bottom_shapes]
    w = {k: v.to("meta") for k, v in converted.weights.items()}
    shapes, alias = [], []
    for fn in converted.fns:
        try:
            with torch.no_grad():
                y = fn(xs, w)
        except TorchTpuError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            raise ctx.error(f"cannot run on bottoms of shape {[list(s) for s in ctx.bottom_shapes]}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        shapes.append(tuple(y.shape))
        alias.append(next((i for i, x in enumerate(xs) if y is x), None))
    return shapes, alias


def plan_network(net: CaffeNet, registry: LayerRegistry,
                 input_shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]] | None = None) -> Plan:
    """Convert every layer and decide shapes, graph outputs and stable names (rules in the module doc)."""
    inputs = _apply_overrides(net, _input_shapes(net, input_shapes), input_shapes)
    shape_of: dict[str, tuple[int, ...]] = dict(inputs)       # blob -> current shape
    consumed: dict[str, bool] = {n: True for n, _ in inputs}  # inputs are never outputs
    written_order: list[str] = []
    steps: list[Step] = []
    weights: dict[str, torch.Tensor] = {}
    weight_names: dict[str, str] = {}
    writes: list[tuple[int, int]] = []                        # (step, top) of real (non in-place-alias) writes
    for layer in net.layers:
        if layer.type in INPUT_TYPES:
            continue
        for b in layer.bottoms:
            if b not in shape_of:
                raise ModelFormatError(net.prototxt, f"bottom '{b}' is not produced by any earlier layer",
                                       node=layer.name, op=layer.type)
        ctx = LayerContext(layer=layer, prototxt=net.prototxt, caffemodel=net.caffemodel,
                           bottom_shapes=tuple(shape_of[b] for b in layer.bottoms))
        converted = registry.lookup(ctx)(ctx)
        if len(converted.fns) != len(layer.tops):
            raise ctx.error(f"converter produced {len(converted.fns)} outputs for {len(layer.tops)} tops")
        shapes, alias = _meta_run(ctx, converted)
        attrs = {}
        for key, t in converted.weights.items():
            attr = _attr(layer.index, key)
            weights[attr] = t.detach().to(torch.float32).contiguous()
            weight_names[attr] = f"{layer.name}.{key}"
            attrs[key] = attr
        for b in layer.bottoms:
            consumed[b] = True
        step = Step(layer=layer, fns=converted.fns, weight_attrs=attrs, value_names=[""] * len(layer.tops),
                    alias_of=alias, shapes=shapes)
        for k, (top, shape) in enumerate(zip(layer.tops, shapes)):
            shape_of[top] = shape
            # an in-place no-op (Dropout top == bottom) writes a new version of the blob for Caffe, so the
            # blob can be a graph output again, but it is the same value: it does not rename anything
            inplace_noop = alias[k] is not None and layer.bottoms[alias[k]] == top
            if not inplace_noop:
                writes.append((len(steps), k))
            consumed[top] = False
            if top in written_order:
                written_order.remove(top)
            written_order.append(top)
        steps.append(step)
    # names: the last real write of a blob is the blob's name, earlier writes are <top>.<layer>
    last_write = {steps[s].layer.tops[k]: (s, k) for s, k in writes}
    for s, k in writes:
        top = steps[s].layer.tops[k]
        steps[s].value_names[k] = top if last_write[top] == (s, k) else f"{top}.{steps[s].layer.name}"
    aliases: dict[str, str] = {}
    shapes_by_name: dict[str, tuple[int, ...]] = {n: s for n, s in inputs}
    current = {n: n for n, _ in inputs}
    for step in steps:
        bottom_values = [current[b] for b in step.layer.bottoms]
        for k, top in enumerate(step.layer.tops):
            if step.alias_of[k] is not None:
                target = bottom_values[step.alias_of[k]]
                if step.value_names[k] and step.value_names[k] != target:
                    aliases[step.value_names[k]] = target
                current[top] = target
            else:
                current[top] = step.value_names[k]
    for step in steps:
        for name, shape in zip(step.value_names, step.shapes):
            if name:
                shapes_by_name[name] = shape
    outputs = [b for b in written_order if not consumed[b]]
    if not outputs:
        raise ModelFormatError(net.prototxt, "the network has no output (every blob is consumed)")
    return Plan(inputs=inputs, steps=steps, outputs=outputs, weights=weights, weight_names=weight_names,
                aliases=aliases, shapes=shapes_by_name)


class CaffeModule(torch.nn.Module):
    """Executes a :class:`Plan`; weights are buffers ``caffe_<layer index>_<key>``."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan
        for attr, t in plan.weights.items():
            self.register_buffer(attr, t)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        blobs = {name: x for (name, _), x in zip(self.plan.inputs, inputs)}
        for step in self.plan.steps:
            xs = [blobs[b] for b in step.layer.bottoms]
            w = {key: getattr(self, attr) for key, attr in step.weight_attrs.items()}
            outs = []
            for k, fn in enumerate(step.fns):
                with fx_traceback.annotate({LAYER_KEY: step.layer.index, TOP_KEY: k}):
                    outs.append(fn(xs, w))
            for top, y in zip(step.layer.tops, outs):
                blobs[top] = y
        return tuple(blobs[b] for b in self.plan.outputs)


_Names = UniqueNames


def name_graph(gm: fx.GraphModule, plan: Plan) -> None:
    """Set ``meta["stable_name"]`` on every node from the plan (rules in the module doc); drop the annotations."""
    names = _Names()
    nodes = list(gm.graph.nodes)
    index_of_step = {step.layer.index: step for step in plan.steps}
    for n, (name, _) in zip([n for n in nodes if n.op == "placeholder"], plan.inputs):
        set_stable_name(n, names.take(name))
    for n in nodes:
        if n.op == "get_attr":
            set_stable_name(n, names.take(plan.weight_names.get(str(n.target), str(n.target))))
    groups: dict[tuple[int, int], list[fx.Node]] = {}
    for n in nodes:
        custom = n.meta.get("custom") or {}
        if n.op == "call_function" and LAYER_KEY in custom:
            groups.setdefault((custom[LAYER_KEY], custom[TOP_KEY]), []).append(n)
    for (li, k), group in groups.items():
        step = index_of_step[li]
        value = step.value_names[k] or f"{step.layer.tops[k]}.{step.layer.name}"
        members = set(group)
        outs = [n for n in group if any(u not in members for u in n.users)]
        out = outs[-1] if outs else group[-1]
        counts: dict[str, int] = {}
        for n in group:
            if n.target is operator.getitem:
                continue
            if n is out:
                base = value
            elif any(u is out and u.target is operator.getitem and u.args[1] == 0 for u in n.users):
                base = value  # the tuple whose element 0 is the layer's value
            else:
                short = op_short_name(n.target)
                c = counts.get(short, 0)
                counts[short] = c + 1
                base = f"{value}.{short}" if c == 0 else f"{value}.{short}_{c}"
            if isinstance(n.meta.get("val"), (tuple, list)):
                n.meta["_caffe_base"] = base
                set_stable_name(n, names.take(base + "#tuple"))
            else:
                set_stable_name(n, names.take(base))
        for n in group:
            if n.target is operator.getitem:
                parent, idx = n.args[0], n.args[1]
                base = parent.meta.get("_caffe_base", value)
                set_stable_name(n, names.take(base if idx == 0 else f"{base}#{idx}"))
    for n in nodes:
        n.meta.pop("_caffe_base", None)
        n.meta.pop("custom", None)

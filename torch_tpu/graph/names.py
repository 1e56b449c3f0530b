"""Stable names: the key every table, dump and comparison uses for a tensor.

A stable name carries over from the source model: the ``nn.Module`` path for PyTorch
(``layer1.0.conv1``), the ONNX output name, the Caffe top name, the TFLite tensor name. It lives in
``node.meta["stable_name"]``; FX's own ``node.name`` is only an identifier.

Rules for PyTorch modules (both ``torch_tpu.transform`` and ``torch.compile`` use them):

* the value a module call returns gets the module path; the other values computed inside it get
  ``<path>.<op>`` with ``_1``, ``_2``... on repeats (``encoder.layer.0.attention.self.matmul_1``); a module
  called a second time gets ``<path>_1`` (so eager forward hooks and TOP values meet by name);
* ops at the top level of ``forward`` are named by their op (``flatten``, ``add_3``);
* element 0 of a multi-output op (BatchNorm's tuple, max-pool's values and indices) takes the base name,
  element ``i > 0`` takes ``<base>#i``, the tuple itself ``<base>#tuple``;
* parameters and buffers are named by their path (``layer1.0.conv1.weight``), inputs by the forward argument.

When a pass replaces a chain of nodes by one (conv + BatchNorm), the new node takes the name of the
*last* node it replaces, so the tensor still compares against the source at the same name.
"""

from __future__ import annotations

import operator
import re
from collections import defaultdict
from typing import Callable, Iterable

import torch
import torch.fx as fx

STABLE_NAME = "stable_name"

_DYNAMO_ROOT = re.compile(r"^(L\['self'\]|L__self__|self)\.?")


def normalize_module_path(path: str) -> str:
    """Turn a dynamo / export module path into a dotted module path.

    >>> normalize_module_path("L['self'].layer1[0].conv1")
    'layer1.0.conv1'
    >>> normalize_module_path("L['self']._modules['fc']._parameters['weight']")
    'fc.weight'
    """
    p = _DYNAMO_ROOT.sub("", path.strip())
    p = re.sub(r"getattr\((.*?), '([^']*)'\)", r"\1.\2", p)
    p = re.sub(r"\._(?:modules|parameters|buffers)\['([^']*)'\]", r".\1", p)
    p = re.sub(r"^_(?:modules|parameters|buffers)\['([^']*)'\]", r"\1", p)
    p = re.sub(r"\[(\d+)\]", r".\1", p)
    p = re.sub(r"\['([^']*)'\]", r".\1", p)
    p = re.sub(r"^L\.", "", p)
    return p.strip(".")


def stable_name(node: fx.Node) -> str:
    """The node's stable name (its FX name if it has none yet)."""
    return node.meta.get(STABLE_NAME) or node.name


def set_stable_name(node: fx.Node, name: str) -> None:
    node.meta[STABLE_NAME] = name


def inherit_name(new: fx.Node, old: fx.Node) -> fx.Node:
    """Give ``new`` the stable name (and source location) of ``old``, which it replaces."""
    new.meta[STABLE_NAME] = stable_name(old)
    for key in ("stack_trace", "nn_module_stack", "source_loc"):
        if key in old.meta and key not in new.meta:
            new.meta[key] = old.meta[key]
    return new


def op_short_name(target) -> str:
    """``aten.convolution.default`` -> ``convolution``; ``tpu.conv2d.default`` -> ``conv2d``."""
    if target is operator.getitem:
        return "getitem"
    name = getattr(target, "__name__", None) or str(target)
    if isinstance(target, (torch._ops.OpOverload,)):
        name = target._schema.name.split("::")[-1]
    elif isinstance(target, torch._ops.OpOverloadPacket):
        name = target._qualified_op_name.split("::")[-1]
    return name.split(".")[0]


def module_path(node: fx.Node) -> str:
    """Innermost nn.Module path of a node (``""`` at the top level)."""
    return module_call(node)[1]


def module_call(node: fx.Node) -> tuple[str, str]:
    """(call key, module path) of the innermost module call; a module called twice has two keys."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return "", ""
    key, (path, _) = list(stack.items())[-1]
    path = normalize_module_path(path)
    return f"{key}|{path}", path


def source_location(node: fx.Node) -> str | None:
    """``file:line`` of the user code that produced the node, when known."""
    if node.meta.get("source_loc"):
        return node.meta["source_loc"]
    trace = node.meta.get("stack_trace")
    if not trace:
        return None
    matches = re.findall(r'File "([^"]+)", line (\d+)', trace)
    return f"{matches[-1][0]}:{matches[-1][1]}" if matches else None


def _unique(name: str, used: set[str]) -> str:
    if name not in used:
        used.add(name)
        return name
    k = 1
    while f"{name}_{k}" in used:
        k += 1
    used.add(f"{name}_{k}")
    return f"{name}_{k}"


class UniqueNames:
    """Hands out stable names, suffixing ``_1``, ``_2``... when one is taken (the rule every level uses).

    >>> n = UniqueNames(); n("conv"), n("conv"), n.take("conv")
    ('conv', 'conv_1', 'conv_2')
    """

    def __init__(self, used: Iterable[str] = ()):
        self.used: set[str] = set(used)

    def __call__(self, name: str) -> str:
        return _unique(name, self.used)

    take = __call__


def assign_module_names(gm: fx.GraphModule,
                        placeholder_names: Iterable[str] | None = None,
                        attr_name: Callable[[fx.Node], str] | None = None) -> None:
    """Assign stable names to every node of a PyTorch-derived graph (rules in the module doc).

    Args:
        placeholder_names: names for the inputs, in order (default: the FX placeholder names).
        attr_name: name of a ``get_attr`` node (default: its target, i.e. the parameter path).
    """
    nodes = list(gm.graph.nodes)
    used: set[str] = set()
    ph = [n for n in nodes if n.op == "placeholder"]
    names = list(placeholder_names) if placeholder_names is not None else [n.name for n in ph]
    for n, name in zip(ph, names):
        set_stable_name(n, _unique(name, used))
    for n in nodes:
        if n.op == "get_attr":
            set_stable_name(n, _unique(attr_name(n) if attr_name else str(n.target), used))

    compute = [n for n in nodes if n.op == "call_function" and n.target is not operator.getitem]
    by_call: dict[str, list[fx.Node]] = defaultdict(list)
    for n in compute:
        by_call[module_call(n)[0]].append(n)
    for key, group in by_call.items():
        path = key.split("|", 1)[1] if key else ""
        call_key = key.split("|", 1)[0]

        def escapes(n: fx.Node) -> bool:
            """Is ``n`` used outside this module call (its whole subtree of calls)?"""
            users = [w for u in n.users for w in (u.users if u.target is operator.getitem else [u])]
            return any(u.op == "output" or call_key not in (u.meta.get("nn_module_stack") or {}) for u in users)

        outs = [n for n in group if escapes(n)] if path else []
        main = outs[0] if len(outs) == 1 else None
        counts: dict[str, int] = defaultdict(int)
        for n in group:
            short = op_short_name(n.target)
            if n is main:
                base = path
            else:
                k = counts[short]
                counts[short] += 1
                stem = f"{path}.{short}" if path else short
                base = stem if k == 0 else f"{stem}_{k}"
            if isinstance(n.meta.get("val"), (tuple, list)):
                set_stable_name(n, _unique(base + "#tuple", used))
                n.meta["_base_name"] = base
            else:
                set_stable_name(n, _unique(base, used))
    for n in nodes:
        if n.op == "call_function" and n.target is operator.getitem:
            parent, idx = n.args[0], n.args[1]
            base = parent.meta.get("_base_name") or stable_name(parent).removesuffix("#tuple")
            set_stable_name(n, _unique(base if idx == 0 else f"{base}#{idx}", used))
    for n in nodes:
        n.meta.pop("_base_name", None)


def node_by_name(gm: fx.GraphModule) -> dict[str, fx.Node]:
    """Map stable name -> node."""
    return {stable_name(n): n for n in gm.graph.nodes if n.op != "output"}

"""The TPU graph under construction: nodes, constants, casts, stable names and ``meta['val']``.

The driver owns one :class:`GraphBuilder` per lowering. It maps each TOP value to the TPU node that
holds it, materialises TOP constants once per dtype (as ``get_attr`` buffers), inserts ``tpu.cast``
nodes lazily where a consumer needs another dtype (named ``<value>.cast_<dtype>``, one per value and
dtype), and computes ``meta['val']`` of every new node by running the op's fake implementation.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode

from torch_tpu.errors import VerificationError
from torch_tpu.graph.names import UniqueNames, STABLE_NAME, stable_name
from torch_tpu.graph.printer import dtype_str, op_str
from torch_tpu.tpu_ops import define_all, op_defs, tpu_op

#: tpu op -> its fake implementation, called directly (no dispatcher round trip) to compute vals.
_FAKES = {define_all()[name]: d.fake for name, d in op_defs().items()}

#: meta keys copied from the TOP node to every TPU node lowered from it (source location, module path).
LOCATION_KEYS = ("stack_trace", "nn_module_stack", "source_loc")


def fetch_attr(gm: torch.nn.Module, target: str) -> torch.Tensor:
    """The tensor behind a ``get_attr`` target (dotted path)."""
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class GraphBuilder:
    """Builds one TPU ``fx.Graph`` and its constant buffers.

    Attributes:
        graph: the graph being built.
        root: module holding the constants (``_c0``, ``_c1``... buffers).
        env: TOP node -> TPU node (or tuple of TPU nodes for tuple-valued TOP nodes).
        consts: TOP constant node -> its tensor (not yet emitted).
    """

    def __init__(self) -> None:
        self.graph = fx.Graph()
        self.root = torch.nn.Module()
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.env: dict[fx.Node, Any] = {}
        self.consts: dict[fx.Node, torch.Tensor] = {}
        self._const_cache: dict[tuple[fx.Node, torch.dtype], fx.Node] = {}
        self._cast_cache: dict[tuple[fx.Node, torch.dtype], fx.Node] = {}
        self._names = UniqueNames()
        self._n_consts = 0

    # -- names ---------------------------------------------------------------------------------
    def unique_name(self, name: str) -> str:
        """``name``, or ``name_1``, ``name_2``... if already used in this graph."""
        return self._names(name)

    def _tag(self, new: fx.Node, name: str, origin: fx.Node | None) -> fx.Node:
        new.meta[STABLE_NAME] = self.unique_name(name)
        if origin is not None:
            for key in LOCATION_KEYS:
                if key in origin.meta:
                    new.meta[key] = origin.meta[key]
        return new

    # -- values --------------------------------------------------------------------------------
    def placeholder(self, top: fx.Node) -> fx.Node:
        """A graph input with the TOP input's name, shape and dtype."""
        v = top.meta["val"]
        node = self.graph.placeholder(re.sub(r"\W", "_", stable_name(top)) or "input")
        with self.mode:
            node.meta["val"] = torch.empty(tuple(v.shape), dtype=v.dtype)
        return self._tag(node, stable_name(top), top)

    def add_const(self, tensor: torch.Tensor, name: str, origin: fx.Node | None = None) -> fx.Node:
        """A new constant buffer and its ``get_attr`` node named ``name``."""
        attr = f"_c{self._n_consts}"
        self._n_consts += 1
        self.root.register_buffer(attr, tensor.detach().contiguous())
        node = self.graph.get_attr(attr)
        node.meta["val"] = self.mode.from_tensor(getattr(self.root, attr))
        return self._tag(node, name, origin)

    def emit(self, op: Any, args: tuple, kwargs: dict | None, name: str, origin: fx.Node | None) -> fx.Node:
        """A ``call_function`` node of ``op`` (a ``tpu`` op name or overload); its val is computed by the
        op's fake implementation."""
        target = tpu_op(op) if isinstance(op, str) else op
        kwargs = kwargs or {}
        node = self.graph.call_function(target, args, kwargs)
        fake_args = fx.node.map_arg(args, lambda n: n.meta["val"])
        fake_kwargs = fx.node.map_arg(kwargs, lambda n: n.meta["val"])
        fake_fn = _FAKES.get(target, target)
        try:
            with self.mode:
                node.meta["val"] = fake_fn(*fake_args, **fake_kwargs)
        except Exception as e:  # shape errors of a rule: say which op and node
            raise VerificationError(f"lowering/builder.py: {op_str(target)} for node '{name}' does not accept its "
                                    f"operands: {type(e).__name__}: {e}") from e
        return self._tag(node, name, origin)

    def value(self, top: fx.Node, dtype: torch.dtype | None = None) -> fx.Node:
        """The TPU node holding TOP value ``top``, cast to ``dtype`` if given and different."""
        if top in self.consts:
            return self.const_node(top, dtype)
        if top not in self.env:
            raise VerificationError(f"lowering/builder.py: value '{stable_name(top)}' used before it was lowered")
        node = self.env[top]
        if isinstance(node, tuple):
            raise VerificationError(f"lowering/builder.py: '{stable_name(top)}' is a tuple; use its elements")
        return self.cast(node, dtype) if dtype is not None else node

    def cast(self, node: fx.Node, dtype: torch.dtype) -> fx.Node:
        """``node`` cast to ``dtype`` (one ``tpu.cast`` per value and dtype, named ``<value>.cast_<dtype>``)."""
        if node.meta["val"].dtype == dtype:
            return node
        key = (node, dtype)
        if key not in self._cast_cache:
            with self.graph.inserting_after(node):
                self._cast_cache[key] = self.emit("cast", (node, dtype), None,
                                                  f"{stable_name(node)}.cast_{dtype_str(dtype)}", node)
        return self._cast_cache[key]

    def const_node(self, top: fx.Node, dtype: torch.dtype | None) -> fx.Node:
        """The constant ``top`` converted to ``dtype`` once, as a ``get_attr`` node.

        The first version emitted keeps the constant's stable name; other dtypes get ``<name>.<dtype>``.
        """
        tensor = self.consts[top]
        dtype = dtype or tensor.dtype
        key = (top, dtype)
        if key not in self._const_cache:
            first = not any(k[0] is top for k in self._const_cache)
            name = stable_name(top) if first else f"{stable_name(top)}.{dtype_str(dtype)}"
            first_op = self._first_non_input()
            with self.graph.inserting_before(first_op) if first_op is not None else contextlib.nullcontext():
                self._const_cache[key] = self.add_const(tensor.to(dtype), name, top)
        return self._const_cache[key]

    def _first_non_input(self) -> fx.Node | None:
        for n in self.graph.nodes:
            if n.op not in ("placeholder", "get_attr"):
                return n
        return None

    def finish(self) -> fx.GraphModule:
        """The built GraphModule (constants as buffers of its root)."""
        self.graph.lint()
        return fx.GraphModule(self.root, self.graph)

"""Shared editing tools for TOP -> TOP passes: one :class:`GraphEditor` per pass run.

The editor keeps the TOP invariants while a pass rewrites the graph:

* a new node gets ``meta["val"]`` computed for that node only (its op run on the inputs' fake tensors),
  so no pass re-propagates the whole graph;
* a replacement takes the stable name of the node it replaces (:func:`torch_tpu.graph.names.inherit_name`),
  and stable names stay unique (the editor tracks the set of live names);
* new constants become buffers of the GraphModule with a ``get_attr`` node; attributes that no
  ``get_attr`` reads any more are deleted when the pass finishes (:meth:`GraphEditor.finish`).

Example:
    >>> ed = GraphEditor(gm)                                            # doctest: +SKIP
    >>> new = ed.call(torch.ops.aten.silu.default, (x,), before=mul)    # doctest: +SKIP
    >>> ed.replace(mul, new)          # new takes mul's stable name     # doctest: +SKIP
    >>> return ed.finish()            # DCE, drop unused attributes, lint, recompile  # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from torch_tpu.errors import VerificationError
from torch_tpu.fx_passes.checker import find_fake_mode
from torch_tpu.fx_passes.manager import PassResult
from torch_tpu.graph.names import STABLE_NAME, inherit_name, stable_name


def same_layout(a: Any, b: Any) -> bool:
    """True when two tensor vals have the same shape, dtype and strides (a removable identity)."""
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and a.dtype == b.dtype and a.stride() == b.stride())


def _sanitize(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", name)


class GraphEditor:
    """Edits one GraphModule for one pass run (see the module docstring).

    Args:
        gm: the graph module to edit in place.
    """

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.graph = gm.graph
        self.mode = find_fake_mode(gm)
        self.names: set[str] = {stable_name(n) for n in gm.graph.nodes if n.op != "output"}
        self.modified = False

    # -- reading ----------------------------------------------------------------------------------
    def const(self, a: Any) -> torch.Tensor | None:
        """The tensor behind a ``get_attr`` node, else None."""
        return constant_value(self.gm, a)

    def scalar(self, a: Any) -> float | None:
        """A Python number, or the value of a one-element 0-d constant tensor; else None."""
        if isinstance(a, bool):
            return None
        if isinstance(a, (int, float)):
            return float(a)
        t = self.const(a)
        if t is not None and t.dim() == 0 and t.dtype.is_floating_point:
            return float(t)
        return None

    # -- naming -----------------------------------------------------------------------------------
    def set_name(self, node: fx.Node, name: str) -> str:
        """Give ``node`` the stable name ``name`` (``name_1``, ``name_2`` ... if it is taken)."""
        old = node.meta.get(STABLE_NAME)
        if old is not None:
            self.names.discard(old)
        final, k = name, 1
        while final in self.names:
            final = f"{name}_{k}"
            k += 1
        node.meta[STABLE_NAME] = final
        self.names.add(final)
        return final

    # -- creating ---------------------------------------------------------------------------------
    def add_constant(self, tensor: torch.Tensor, name: str, *, before: fx.Node) -> fx.Node:
        """Register ``tensor`` as a buffer and return a ``get_attr`` node for it named ``name``."""
        tensor = tensor.detach().contiguous()
        base = "_c_" + _sanitize(name)
        target, k = base, 1
        while hasattr(self.gm, target):
            target = f"{base}_{k}"
            k += 1
        self.gm.register_buffer(target, tensor)
        with self.graph.inserting_before(before):
            node = self.graph.get_attr(target)
        node.meta["val"] = self.mode.from_tensor(tensor, static_shapes=True)
        self.set_name(node, name)
        self.modified = True
        return node

    def fake_value(self, target: Any, args: tuple, kwargs: dict | None = None) -> Any:
        """Run ``target`` on the fake tensors of ``args`` (the new node's ``meta["val"]``)."""
        fargs, fkwargs = pytree.tree_map_only(fx.Node, lambda a: a.meta["val"], (args, kwargs or {}))
        with self.mode:
            return target(*fargs, **fkwargs)

    def call(self, target: Any, args: tuple, kwargs: dict | None = None, *, before: fx.Node,
             name: str | None = None, val: Any = None) -> fx.Node:
        """Insert ``target(*args, **kwargs)`` before ``before`` with its ``meta["val"]``.

        The val is computed on fake tensors unless the caller passes the ``val`` it already knows
        (a rewrite that keeps the replaced node's shape, dtype and strides).
        """
        if val is None:
            val = self.fake_value(target, args, kwargs)
        with self.graph.inserting_before(before):
            node = self.graph.call_function(target, tuple(args), dict(kwargs or {}))
        node.meta["val"] = val
        for key in ("stack_trace", "nn_module_stack", "source_loc"):
            if key in before.meta:
                node.meta[key] = before.meta[key]
        self.set_name(node, name or node.name)
        self.modified = True
        return node

    def try_call(self, target: Any, args: tuple, kwargs: dict | None = None, *, before: fx.Node,
                 name: str | None = None) -> fx.Node | None:
        """Like :meth:`call`, but None when the op refuses these operands (e.g. an impossible view)."""
        try:
            self.fake_value(target, args, kwargs)
        except (RuntimeError, ValueError, TypeError, IndexError):
            return None
        return self.call(target, args, kwargs, before=before, name=name)

    # -- replacing --------------------------------------------------------------------------------
    def replace(self, old: fx.Node, new: fx.Node) -> fx.Node:
        """Route every use of ``old`` to ``new``, erase what died, and give ``new`` old's stable name."""
        name = stable_name(old)
        inherit_name(new, old)
        old.replace_all_uses_with(new)
        self.erase_dead([old])
        self.set_name(new, name)
        self.modified = True
        return new

    def erase_dead(self, nodes: Iterable[fx.Node]) -> None:
        """Erase the given nodes if nothing uses them, then their inputs that died with them."""
        stack = list(nodes)
        while stack:
            n = stack.pop()
            if n.graph is not self.graph or n.op not in ("call_function", "get_attr") or n.users:
                continue
            if getattr(n, "_erased", False):
                continue
            inputs = list(n.all_input_nodes)
            self.names.discard(stable_name(n))
            self.graph.erase_node(n)
            self.modified = True
            stack.extend(inputs)

    # -- finishing --------------------------------------------------------------------------------
    def finish(self) -> PassResult:
        """Remove dead nodes and unused attributes, lint, recompile; return the pass result."""
        if self.modified:
            drop_unused_attributes(self.gm)
            try:
                self.graph.lint()
            except RuntimeError as e:
                raise VerificationError(f"graph lint failed: {e}") from e
            self.gm.recompile()
        return PassResult(self.gm, self.modified)


def drop_unused_attributes(gm: fx.GraphModule) -> bool:
    """Delete dead nodes and every tensor attribute (parameter, buffer, constant) no ``get_attr`` reads.

    Returns whether anything was removed. Submodules left empty are removed too.
    """
    changed = gm.graph.eliminate_dead_code()
    used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    for mod_name, mod in list(gm.named_modules(remove_duplicate=False)):
        if isinstance(mod, fx.GraphModule) and mod is not gm:
            continue
        prefix = mod_name + "." if mod_name else ""
        names = list(mod._parameters) + list(mod._buffers) + [
            k for k, v in vars(mod).items() if isinstance(v, torch.Tensor) and not k.startswith("__")]
        for attr in names:
            if prefix + attr not in used and hasattr(mod, attr):
                delattr(mod, attr)
                changed = True
    _drop_empty_modules(gm)
    return changed


def _drop_empty_modules(mod: torch.nn.Module) -> bool:
    """Remove child modules (recursively) that hold no tensors and no children; True if ``mod`` is empty."""
    for name, child in list(mod.named_children()):
        if isinstance(child, fx.GraphModule):
            continue
        if _drop_empty_modules(child):
            delattr(mod, name)
    return (not mod._parameters and not mod._buffers and not mod._modules
            and not any(isinstance(v, torch.Tensor) for v in vars(mod).values()))


def constant_value(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor a ``get_attr`` node reads (None for any other argument)."""
    if not (isinstance(node, fx.Node) and node.op == "get_attr"):
        return None
    obj: Any = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.Tensor) else None


def bypass(ed: GraphEditor, node: fx.Node, src: fx.Node) -> None:
    """Route every use of ``node`` to ``src`` (an existing value that keeps its own name) and erase ``node``."""
    node.replace_all_uses_with(src)
    ed.erase_dead([node])
    ed.modified = True

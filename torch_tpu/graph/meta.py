"""Shape/dtype metadata and named execution for FX graphs of any level.

* :func:`refresh_meta` recomputes ``node.meta["val"]`` (fake tensors) for every node, so passes that
  create nodes keep the invariant "every value has a val".
* :func:`run_named` executes a graph and returns every tensor value keyed by stable name — the basis of
  stage-by-stage comparison and calibration.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from torch_tpu.graph.names import stable_name


def example_from_meta(gm: fx.GraphModule, fill: str = "randn", seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Concrete inputs shaped like the graph's placeholders (for re-tracing and self-checks)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in gm.graph.nodes:
        if n.op != "placeholder":
            continue
        v = n.meta["val"]
        if v.dtype.is_floating_point and fill == "randn":
            out.append(torch.randn(tuple(v.shape), generator=g).to(v.dtype))
        elif v.dtype.is_floating_point:
            out.append(torch.zeros(tuple(v.shape), dtype=v.dtype))
        else:
            out.append(torch.zeros(tuple(v.shape), dtype=v.dtype))
    return tuple(out)


def refresh_meta(gm: fx.GraphModule, inputs: Sequence[torch.Tensor] | None = None) -> fx.GraphModule:
    """Recompute ``meta["val"]`` of every node with fake tensors (placeholders keep their vals)."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    if inputs is None:
        fake_inputs = []
        for n in gm.graph.nodes:
            if n.op == "placeholder":
                v = n.meta["val"]
                fake_inputs.append(mode.from_tensor(v) if not isinstance(v, torch._subclasses.FakeTensor)
                                   or v.fake_mode is not mode else v)
    else:
        fake_inputs = [mode.from_tensor(t) for t in inputs]
    FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*fake_inputs)
    return gm


class _NamedRecorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, keep: Callable[[fx.Node], bool] | None,
                 hook: Callable[[fx.Node, Any], Any] | None, recurse: bool = False):
        super().__init__(gm, garbage_collect_values=True)
        self.recurse = recurse
        self.values: dict[str, torch.Tensor] = {}
        self.keep = keep
        self.hook = hook

    def call_module(self, target, args, kwargs):
        sub = self.fetch_attr(target)
        if self.recurse and isinstance(sub, fx.GraphModule):
            inner = _NamedRecorder(sub, self.keep, self.hook, recurse=True)
            out = inner.run(*args, **kwargs)
            self.values.update(inner.values)
            return out
        return super().call_module(target, args, kwargs)

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if self.hook is not None and n.op not in ("output",):
            replaced = self.hook(n, out)
            if replaced is not None:
                out = replaced
        if isinstance(out, torch.Tensor) and n.op in ("call_function", "placeholder", "call_module") and (
                self.keep is None or self.keep(n)):
            self.values[stable_name(n)] = out.detach()
        return out


def run_named(gm: fx.GraphModule, *inputs: torch.Tensor, keep: Callable[[fx.Node], bool] | None = None,
              hook: Callable[[fx.Node, Any], Any] | None = None,
              recurse: bool = True) -> tuple[Any, dict[str, torch.Tensor]]:
    """Run ``gm`` and return ``(outputs, {stable_name: tensor})`` for every tensor value (in graph order).

    ``keep`` filters which nodes are recorded; ``hook(node, value)`` may observe (or replace, by
    returning a tensor) each value as it is produced — calibration observers use it. With ``recurse``,
    values inside GraphModule children (the partitions of a lowered graph) are recorded too.
    """
    rec = _NamedRecorder(gm, keep, hook, recurse)
    with torch.no_grad():
        out = rec.run(*inputs)
    return out, rec.values


def is_value_node(n: fx.Node) -> bool:
    """A node that produces one tensor (not a tuple, not the output)."""
    return n.op in ("placeholder", "get_attr", "call_function", "call_module") and isinstance(
        n.meta.get("val"), torch.Tensor)


def getitem_users(n: fx.Node) -> dict[int, fx.Node]:
    return {u.args[1]: u for u in n.users if u.op == "call_function" and u.target is operator.getitem}

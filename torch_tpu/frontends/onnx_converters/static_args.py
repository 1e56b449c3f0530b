"""Bake constant shape-like inputs (Reshape shape, Slice starts/ends, Unsqueeze axes ...) into modules.

onnx2torch feeds such inputs to its modules as tensors and reads them as data at run time
(``torch.Size(shape)``, ``axes.tolist()``). Under ``torch.export`` every tensor is symbolic, so that read
is a data-dependent guard and capture fails. When the input is an initializer (a constant, which is
what exporters write), the module is replaced here by one holding the values as Python ints; the ONNX
semantics are re-stated in each replacement:

* Reshape: ``0`` copies the input dim at that position (``allowzero=0``), ``-1`` is inferred;
* Unsqueeze: axes refer to the output rank, inserted in ascending order;
* Squeeze: removes the given axes (all size-1 axes when none are given);
* Expand: ``y = x`` broadcast bidirectionally with ``shape`` (numpy rules);
* Tile: ``y = x`` repeated ``repeats[i]`` times along axis i;
* Slice: per axis, ``start``/``end`` clamped to ``[0, d]`` (``[0, d-1]`` / ``[-1, d-1]`` for a negative
  step), negative values counted from the end, elements ``start, start+step, ...`` before ``end``;
* Pad (opset 11/13 with run-time ``pads`` input): see :mod:`.pad`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.fx as fx
from torch import nn
from onnx2torch.node_converters.expand import OnnxExpand
from onnx2torch.node_converters.pad import OnnxPadDynamic
from onnx2torch.node_converters.reshape import OnnxReshape
from onnx2torch.node_converters.slice import OnnxSlice
from onnx2torch.node_converters.squeeze import OnnxSqueezeDynamicAxes
from onnx2torch.node_converters.tile import OnnxTile
from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeDynamicAxes
from onnx2torch.utils.common import OnnxToTorchModule

from torch_tpu.frontends.onnx_converters._common import ConverterError
from torch_tpu.frontends.onnx_converters.pad import OnnxPadStatic

Ints = list[int]


class StaticReshape(nn.Module, OnnxToTorchModule):
    """ONNX Reshape (allowzero=0) with a constant target shape."""

    def __init__(self, shape: Ints):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.reshape(x, [x.shape[i] if s == 0 else s for i, s in enumerate(self.shape)])


class StaticUnsqueeze(nn.Module, OnnxToTorchModule):
    """ONNX Unsqueeze with constant axes (relative to the output rank)."""

    def __init__(self, axes: Ints):
        super().__init__()
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rank = x.dim() + len(self.axes)
        for a in sorted(a % rank for a in self.axes):
            x = torch.unsqueeze(x, a)
        return x


class StaticSqueeze(nn.Module, OnnxToTorchModule):
    """ONNX Squeeze with constant axes (None: every size-1 axis)."""

    def __init__(self, axes: Ints | None):
        super().__init__()
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.axes:
            return torch.squeeze(x)
        return torch.squeeze(x, sorted(a % x.dim() for a in self.axes))


class StaticExpand(nn.Module, OnnxToTorchModule):
    """ONNX Expand: bidirectional broadcast of ``x`` with a constant shape."""

    def __init__(self, shape: Ints):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = torch.broadcast_shapes(tuple(x.shape), tuple(self.shape))
        return x.expand(out)


class StaticTile(nn.Module, OnnxToTorchModule):
    """ONNX Tile with constant repeats."""

    def __init__(self, repeats: Ints):
        super().__init__()
        self.repeats = repeats

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.repeat(self.repeats)


class StaticSlice(nn.Module, OnnxToTorchModule):
    """ONNX Slice with constant starts, ends, axes and steps."""

    def __init__(self, starts: Ints, ends: Ints, axes: Ints | None, steps: Ints | None):
        super().__init__()
        if steps is not None and any(s == 0 for s in steps):
            raise ConverterError("Slice: a step of 0 is invalid")
        self.starts, self.ends, self.axes, self.steps = starts, ends, axes, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        axes = self.axes if self.axes is not None else list(range(len(self.starts)))
        steps = self.steps if self.steps is not None else [1] * len(self.starts)
        for start, end, axis, step in zip(self.starts, self.ends, axes, steps):
            axis %= x.dim()
            d = x.shape[axis]
            start = start + d if start < 0 else start
            end = end + d if end < 0 else end
            if step > 0:
                start, end = min(max(start, 0), d), min(max(end, 0), d)
                x = x[(slice(None),) * axis + (slice(start, end, step),)]
            else:  # walk the flipped axis forwards: index j of the flip is d - 1 - j of the input
                start, end = min(max(start, 0), d - 1), min(max(end, -1), d - 1)
                x = torch.flip(x, [axis])[(slice(None),) * axis + (slice(d - 1 - start, d - 1 - end, -step),)]
        return x


def _ints(t: torch.Tensor | None) -> Ints | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _pad(module: OnnxPadDynamic, pads: torch.Tensor, value: torch.Tensor | None = None) -> nn.Module:
    fill = 0.0 if value is None or value.numel() == 0 else float(value.reshape(-1)[0])
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[module.mode]
    return OnnxPadStatic(_ints(pads), None, mode, fill)


# module class -> (names of the constant arguments after the data input, builder)
BAKERS: dict[type, tuple[tuple[str, ...], Callable[..., nn.Module]]] = {
    OnnxReshape: (("shape",), lambda m, shape: StaticReshape(_ints(shape))),
    OnnxUnsqueezeDynamicAxes: (("axes",), lambda m, axes: StaticUnsqueeze(_ints(axes))),
    OnnxSqueezeDynamicAxes: (("axes",), lambda m, axes=None: StaticSqueeze(_ints(axes))),
    OnnxExpand: (("shape",), lambda m, shape: StaticExpand(_ints(shape))),
    OnnxTile: (("repeats",), lambda m, repeats: StaticTile(_ints(repeats))),
    OnnxSlice: (("starts", "ends", "axes", "steps"),
                lambda m, starts, ends, axes=None, steps=None: StaticSlice(_ints(starts), _ints(ends), _ints(axes),
                                                                           _ints(steps))),
    OnnxPadDynamic: (("pads", "constant_value"), _pad),
}


def bake_constant_args(gm: fx.GraphModule) -> int:
    """Replace modules of :data:`BAKERS` whose shape-like inputs are all ``get_attr`` constants.

    Returns:
        How many modules were replaced.
    """
    replaced = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_module":
            continue
        module = gm.get_submodule(n.target)
        entry = BAKERS.get(type(module))
        if entry is None:
            continue
        names, build = entry
        given = dict(zip(names, n.args[1:]))
        given.update({k: v for k, v in n.kwargs.items() if k in names})
        if not all(isinstance(v, fx.Node) and v.op == "get_attr" for v in given.values()):
            continue
        consts = {k: gm.get_buffer(str(v.target)) for k, v in given.items()}
        new = build(module, **consts)
        if hasattr(module, "onnx_mapping"):
            new.onnx_mapping = module.onnx_mapping
        gm.add_submodule(str(n.target), new)
        n.args, n.kwargs = (n.args[0],), {}
        replaced += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return replaced

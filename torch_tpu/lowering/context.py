"""The one object a lowering rule receives: :class:`LowerCtx`.

A rule reads the TOP node's operands and parameters from the context and emits TPU nodes through it::

    def lower_relu(ctx: LowerCtx) -> fx.Node:
        return ctx.emit("relu", ctx.operand(0))

* ``ctx.operand(i)`` is the TPU value of the i-th tensor argument, cast to the precision's storage dtype
  (``ctx.dtype``) if it is a float; ``ctx.operand(i, torch.float32)`` asks for f32 instead (a target
  without a low-precision softmax, say). Integer and bool values are never cast.
* ``ctx.const(i)`` is the tensor of a constant argument (a weight), or None when the argument is computed.
* ``ctx.add_const(tensor, "weight")`` adds a new constant named ``<node>.weight`` (stored as given; use
  ``ctx.to_storage`` to convert a float constant to ``ctx.dtype``).
* ``ctx.emit(op, *args, suffix=None, **kwargs)`` adds a ``tpu`` op; without a suffix the node takes the
  TOP node's stable name (the node that replaces the TOP node must), with one ``<name>.<suffix>``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.fx as fx

from torch_tpu.graph.names import stable_name
from torch_tpu.lowering.builder import GraphBuilder
from torch_tpu.targets import Target


def bind_params(node: fx.Node) -> dict[str, Any]:
    """Every schema argument of a TOP node by name (positional, keyword or default)."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return {f"arg{i}": a for i, a in enumerate(node.args)} | dict(node.kwargs)
    out: dict[str, Any] = {}
    for i, a in enumerate(schema.arguments):
        if i < len(node.args) and not a.kwarg_only:
            out[a.name] = node.args[i]
        elif a.name in node.kwargs:
            out[a.name] = node.kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
        else:
            out[a.name] = None
    return out


@dataclasses.dataclass(frozen=True)
class LowerCtx:
    """Everything a rule may use (frozen: rules do not change it).

    Attributes:
        node: the TOP node being lowered.
        name: its stable name.
        params: its schema arguments by name (``bind_params``).
        target: the chip.
        precision: ``f32``, ``bf16`` or ``f16``.
        dtype: storage dtype of float values at this precision.
        builder: the graph under construction (rules use the methods below rather than this).
        quant: INT8 lowering only: the :class:`~torch_tpu.lowering.qparams.QuantParams` of the graph
            (``quant.of(node)`` gives a TOP value's scale and zero point); None for float lowering.
        fused_act: INT8 lowering only: the relu / hardtanh / clamp TOP node fused into this conv/linear
            (its scale is the output scale, its bounds the saturation bounds), else None.
        float_out: INT8 lowering only: every consumer of this conv/linear/matmul (or of its fused
            activation) reads it in float, so its int32 accumulator is dequantized straight to f32
            (``tpu.*_int8_f32``) instead of being requantized to int8.
    """

    node: fx.Node
    name: str
    params: Mapping[str, Any]
    target: Target
    precision: str
    dtype: torch.dtype
    builder: GraphBuilder
    quant: Any = None
    fused_act: fx.Node | None = None
    float_out: bool = False

    # -- reading the TOP node ------------------------------------------------------------------
    def arg(self, key: int | str) -> Any:
        """A raw argument by position or schema name (fx.Node for tensors)."""
        if isinstance(key, str):
            return self.params[key]
        return list(self.params.values())[key]

    def val(self, key: int | str | fx.Node) -> torch.Tensor:
        """``meta['val']`` (shape, dtype) of a TOP operand, or of the node itself for ``"out"``."""
        if key == "out":
            return self.node.meta["val"]
        n = key if isinstance(key, fx.Node) else self.arg(key)
        return n.meta["val"]

    def const(self, key: int | str | fx.Node) -> torch.Tensor | None:
        """The tensor of a constant operand (weights, folded constants), None when it is computed."""
        n = key if isinstance(key, fx.Node) else self.arg(key)
        return self.builder.consts.get(n) if isinstance(n, fx.Node) else None

    def is_float(self, key: int | str | fx.Node) -> bool:
        return self.val(key).dtype.is_floating_point

    # -- building ------------------------------------------------------------------------------
    def storage_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype a TOP value of ``dtype`` is stored in at this precision (floats -> ``self.dtype``)."""
        return self.dtype if dtype.is_floating_point else dtype

    def operand(self, key: int | str | fx.Node, dtype: torch.dtype | None = None) -> fx.Node:
        """The TPU value of a tensor operand; floats cast to ``dtype`` (default: the precision's dtype)."""
        n = key if isinstance(key, fx.Node) else self.arg(key)
        v = n.meta["val"]
        want = (dtype or self.dtype) if v.dtype.is_floating_point else None
        return self.builder.value(n, want)

    def to_storage(self, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A float constant converted to ``dtype`` (default: the precision's dtype); others unchanged."""
        return tensor.to(dtype or self.dtype) if tensor.dtype.is_floating_point else tensor

    def add_const(self, tensor: torch.Tensor, suffix: str) -> fx.Node:
        """A new constant named ``<node>.<suffix>``, stored as given."""
        return self.builder.add_const(tensor, f"{self.name}.{suffix}", self.node)

    def emit(self, op: str, *args: Any, suffix: str | None = None, **kwargs: Any) -> fx.Node:
        """Add ``tpu.<op>(*args, **kwargs)``; named after the TOP node (``<name>.<suffix>`` with a suffix)."""
        name = self.name if suffix is None else f"{self.name}.{suffix}"
        return self.builder.emit(op, args, kwargs, name, self.node)

    def cast(self, node: fx.Node, dtype: torch.dtype) -> fx.Node:
        """``node`` cast to ``dtype`` (shared cast node, see :meth:`GraphBuilder.cast`)."""
        return self.builder.cast(node, dtype)


def make_ctx(node: fx.Node, target: Target, precision: str, dtype: torch.dtype, builder: GraphBuilder, *,
             quant: Any = None, fused_act: fx.Node | None = None) -> LowerCtx:
    """The context for lowering ``node`` (``quant``/``fused_act``: INT8 lowering, see :class:`LowerCtx`)."""
    return LowerCtx(node=node, name=stable_name(node), params=bind_params(node), target=target,
                    precision=precision, dtype=dtype, builder=builder, quant=quant, fused_act=fused_act)

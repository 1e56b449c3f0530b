"""Binary element-wise ops with numpy broadcasting: ADD, SUB, MUL, DIV (fused activations), MAXIMUM,
MINIMUM, SQUARED_DIFFERENCE, POW.

One generic rule serves the family (``functools.partial`` over the torch function); a constant operand
becomes a weight named by its tensor name. ``y = act(f(a, b))``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from torch_tpu.frontends.tflite.common import fused_activation
from torch_tpu.frontends.tflite.context import OpContext, OpFn


def _squared_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = a - b
    return d * d


def convert_binary(ctx: OpContext, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   fused: bool) -> OpFn:
    """``y = act(fn(a, b))`` for both operands activations or constants."""
    if ctx.n_inputs != 2:
        raise ctx.error(f"expects 2 inputs, has {ctx.n_inputs}")
    for i in (0, 1):
        ctx.operand(i)
    act = fused_activation(ctx) if fused and ctx.op.options is not None else fused_activation(ctx, 0)
    name = ctx.op.op.lower()

    def binary(v: list) -> torch.Tensor:
        return act(fn(v[0], v[1]))

    binary.__name__ = name
    return binary


CONVERTERS = {
    "ADD": partial(convert_binary, fn=torch.add, fused=True),
    "SUB": partial(convert_binary, fn=torch.sub, fused=True),
    "MUL": partial(convert_binary, fn=torch.mul, fused=True),
    "DIV": partial(convert_binary, fn=torch.div, fused=True),
    "MAXIMUM": partial(convert_binary, fn=torch.maximum, fused=False),
    "MINIMUM": partial(convert_binary, fn=torch.minimum, fused=False),
    "SQUARED_DIFFERENCE": partial(convert_binary, fn=_squared_difference, fused=False),
    "POW": partial(convert_binary, fn=torch.pow, fused=False),
}

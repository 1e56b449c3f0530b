"""Unary activations and math functions, each ``y = round(f(f32(x)))`` with the f32 formula below.

======================  ===========================================================
relu                    max(x, 0)
leaky_relu(slope)       x if x >= 0 else slope * x
clip(min, max)          min(max(x, min), max)       (hardtanh, relu6, clamp)
sigmoid                 1 / (1 + exp(-x))
silu                    x * sigmoid(x)
gelu(approximate)       none: x/2 * (1 + erf(x / sqrt(2)));  tanh: x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
tanh                    tanh(x)
hardswish               x * clip(x + 3, 0, 6) / 6
hardsigmoid             clip(x + 3, 0, 6) / 6
exp, erf, log, sqrt     as named
rsqrt                   1 / sqrt(x)
neg, abs                -x, |x|
pow(exponent)           x ** exponent
======================  ===========================================================
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from torch_tpu.tpu_ops._common import OpDef, fake_like, finish, up

#: name -> f32 formula of the parameterless unary ops.
UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "tanh": torch.tanh,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "exp": torch.exp,
    "erf": torch.erf,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "neg": torch.neg,
    "abs": torch.abs,
}


def _make_unary(name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> OpDef:
    def impl(x: torch.Tensor) -> torch.Tensor:
        return finish(fn(up(x)), x.dtype, x)

    impl.__name__ = name
    impl.__doc__ = f"Element-wise ``{name}`` in f32, rounded once (formula in the module docstring)."
    return OpDef(name, impl, fake_like)


def leaky_relu(x: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """``y = x if x >= 0 else negative_slope * x``."""
    return finish(F.leaky_relu(up(x), negative_slope), x.dtype, x)


def clip(x: torch.Tensor, min: float, max: float) -> torch.Tensor:  # noqa: A002 - schema names
    """``y = min(max(x, min), max)`` (hardtanh, relu6, clamp)."""
    return finish(torch.clamp(up(x), min, max), x.dtype, x)


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU, exact (``erf``) or ``tanh`` approximation (formulas in the module docstring)."""
    return finish(F.gelu(up(x), approximate=approximate), x.dtype, x)


def pow(x: torch.Tensor, exponent: float) -> torch.Tensor:  # noqa: A001 - op name
    """``y = x ** exponent`` with a constant exponent."""
    return finish(torch.pow(up(x), exponent), x.dtype, x)


OPS = (
    *(_make_unary(n, f) for n, f in UNARY.items()),
    OpDef("leaky_relu", leaky_relu, fake_like),
    OpDef("clip", clip, fake_like),
    OpDef("gelu", gelu, fake_like),
    OpDef("pow", pow, fake_like),
)

"""Unary activations and math: LOGISTIC, TANH, RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1, HARD_SWISH,
LEAKY_RELU, PRELU, ELU, GELU, EXP, LOG, SQRT, RSQRT, ABS, NEG, SQUARE, SOFTMAX, LOG_SOFTMAX.

Formulas: ``hard_swish(x) = x * relu6(x + 3) / 6``; ``prelu(x) = x if x >= 0 else alpha * x`` (alpha
broadcast NHWC-style, a weight); ``leaky_relu(x) = x if x >= 0 else alpha * x`` (scalar alpha);
``softmax(x) = exp(beta x) / sum(exp(beta x))`` over the last axis.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from torch_tpu.frontends.tflite.context import OpContext, OpFn


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0.0, 6.0)


def _relu_n1_to_1(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, -1.0, 1.0)


def _relu_0_to_1(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0.0, 1.0)


def _square(x: torch.Tensor) -> torch.Tensor:
    return x * x


def convert_unary(ctx: OpContext, fn: Callable[[torch.Tensor], torch.Tensor]) -> OpFn:
    """``y = fn(x)``."""
    if ctx.is_const(0):
        raise ctx.unsupported("constant input (fold it before conversion)")
    name = ctx.op.op.lower()

    def unary(v: list) -> torch.Tensor:
        return fn(v[0])

    unary.__name__ = name
    return unary


def convert_prelu(ctx: OpContext) -> OpFn:
    """PRELU: ``y = where(x >= 0, x, alpha * x)`` with alpha a weight broadcast against NHWC ``x``."""
    ctx.operand(1)

    def prelu(v: list) -> torch.Tensor:
        x = v[0]
        return torch.where(x >= 0, x, x * v[1])

    return prelu


def convert_leaky_relu(ctx: OpContext) -> OpFn:
    """LEAKY_RELU: ``y = where(x >= 0, x, alpha * x)``, alpha from the options."""
    alpha = float(ctx.options.Alpha())

    def leaky_relu(v: list) -> torch.Tensor:
        return F.leaky_relu(v[0], alpha)

    return leaky_relu


def convert_gelu(ctx: OpContext) -> OpFn:
    """GELU: exact (erf) or tanh approximation per ``approximate``."""
    approximate = "tanh" if ctx.op.options is not None and ctx.options.Approximate() else "none"

    def gelu(v: list) -> torch.Tensor:
        return F.gelu(v[0], approximate=approximate)

    return gelu


def convert_softmax(ctx: OpContext, log: bool = False) -> OpFn:
    """SOFTMAX / LOG_SOFTMAX over the last axis; SOFTMAX scales by ``beta`` first."""
    beta = float(ctx.options.Beta()) if not log else 1.0

    def softmax(v: list) -> torch.Tensor:
        x = v[0] if beta == 1.0 else v[0] * beta
        return torch.log_softmax(x, dim=-1) if log else torch.softmax(x, dim=-1)

    softmax.__name__ = "log_softmax" if log else "softmax"
    return softmax


CONVERTERS = {
    "LOGISTIC": partial(convert_unary, fn=torch.sigmoid),
    "TANH": partial(convert_unary, fn=torch.tanh),
    "RELU": partial(convert_unary, fn=torch.relu),
    "RELU6": partial(convert_unary, fn=_relu6),
    "RELU_N1_TO_1": partial(convert_unary, fn=_relu_n1_to_1),
    "RELU_0_TO_1": partial(convert_unary, fn=_relu_0_to_1),
    "HARD_SWISH": partial(convert_unary, fn=F.hardswish),
    "ELU": partial(convert_unary, fn=F.elu),
    "EXP": partial(convert_unary, fn=torch.exp),
    "LOG": partial(convert_unary, fn=torch.log),
    "SQRT": partial(convert_unary, fn=torch.sqrt),
    "RSQRT": partial(convert_unary, fn=torch.rsqrt),
    "ABS": partial(convert_unary, fn=torch.abs),
    "NEG": partial(convert_unary, fn=torch.neg),
    "SQUARE": partial(convert_unary, fn=_square),
    "PRELU": convert_prelu,
    "LEAKY_RELU": convert_leaky_relu,
    "GELU": convert_gelu,
    "SOFTMAX": convert_softmax,
    "LOG_SOFTMAX": partial(convert_softmax, log=True),
}

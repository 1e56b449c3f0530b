"""Helpers shared by the converters: fused activations, TFLite padding, layout permutes."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.Padding import Padding

from torch_tpu.frontends.tflite.context import OpContext

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


def _relu_n1_to_1(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, -1.0, 1.0)


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0.0, 6.0)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


_FUSED: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    ActivationFunctionType.NONE: _identity,
    ActivationFunctionType.RELU: torch.relu,
    ActivationFunctionType.RELU_N1_TO_1: _relu_n1_to_1,
    ActivationFunctionType.RELU6: _relu6,
    ActivationFunctionType.TANH: torch.tanh,
}


def fused_activation(ctx: OpContext, code: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fused activation of the operator (``FusedActivationFunction()`` of its options)."""
    if code is None:
        code = int(ctx.options.FusedActivationFunction())
    if code not in _FUSED:
        raise ctx.unsupported(f"fused activation {code}")
    return _FUSED[code]


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite SAME padding of one spatial dimension, as ``(before, after)``.

    ``out = ceil(size / stride)``; ``total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)``;
    ``before = total // 2``, ``after = total - before`` (the extra pixel goes after: asymmetric).

    >>> same_padding(224, 3, 2)
    (0, 1)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def spatial_padding(ctx: OpContext, padding: int, hw: tuple[int, int], kernel: tuple[int, int],
                    stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` for a TFLite ``Padding`` enum value."""
    if padding == Padding.VALID:
        return 0, 0, 0, 0
    if padding != Padding.SAME:
        raise ctx.unsupported(f"padding mode {padding}")
    t, b = same_padding(hw[0], kernel[0], stride[0], dilation[0])
    left, r = same_padding(hw[1], kernel[1], stride[1], dilation[1])
    return t, b, left, r


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(*NHWC_TO_NCHW)


def to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(*NCHW_TO_NHWC)


def pad_nchw(x: torch.Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    """Pad an NCHW tensor by ``(top, bottom, left, right)``."""
    t, b, left, r = pads
    return F.pad(x, (left, r, t, b), value=value) if any(pads) else x


def require_rank(ctx: OpContext, i: int, rank: int) -> None:
    shape = ctx.in_shape(i)
    if len(shape) != rank:
        raise ctx.error(f"input {i} must have rank {rank}, has shape {list(shape)}")


def axis(ctx: OpContext, a: int, rank: int) -> int:
    """Normalize a possibly negative axis, refusing one out of range."""
    if not -rank <= a < rank:
        raise ctx.error(f"axis {a} out of range for rank {rank}")
    return a % rank

"""Convolution family: ``tpu.conv2d`` (grouped / depthwise, dilation, stride, 4-sided padding, fused activation).

Semantics (f32 accumulation, one rounding)::

    xp  = zero-pad(x, top, bottom, left, right)                       # stored dtype, exact
    acc[n, o, i, j] = sum_{c in group(o), u, v} f32(xp[n, c, i*sh + u*dh, j*sw + v*dw]) * f32(w[o, c, u, v])
    acc += f32(bias[o])                                               # when a bias is given
    y = round_to_dtype(act(acc))   with act in none | relu | relu6 | clip(act_min, act_max)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from torch_tpu.tpu_ops._common import OpDef, fake_by_reference, finish, up

ACTIVATIONS = ("none", "relu", "relu6", "clip")


def apply_fused_activation(y: torch.Tensor, act: str, act_min: float, act_max: float) -> torch.Tensor:
    """The activation fused into conv/linear, in f32: relu ``max(y, 0)``, relu6 ``clamp(y, 0, 6)``,
    clip ``clamp(y, act_min, act_max)``."""
    if act == "none":
        return y
    if act == "relu":
        return torch.relu(y)
    if act == "relu6":
        return torch.clamp(y, 0.0, 6.0)
    if act == "clip":
        return torch.clamp(y, act_min, act_max)
    raise ValueError(f"tpu_ops/conv.py: unknown fused activation '{act}' (known: {', '.join(ACTIVATIONS)})")


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
           padding: list[int], dilation: list[int], groups: int, act: str = "none", act_min: float = 0.0,
           act_max: float = 0.0) -> torch.Tensor:
    """2-D convolution, NCHW input, OIHW weight (``O = out channels``, ``I = in channels / groups``).

    Args:
        padding: ``[top, bottom, left, right]`` zero padding.
        act: fused activation (``none``, ``relu``, ``relu6``, ``clip`` with ``act_min``/``act_max``).

    Formula: see the module docstring; the output dtype is ``x.dtype``.
    """
    pt, pb, pl, pr = padding
    xf = up(x)
    if pt == pb and pl == pr:
        pad_arg = [pt, pl]
    else:
        xf = F.pad(xf, [pl, pr, pt, pb])
        pad_arg = [0, 0]
    y = F.conv2d(xf, up(weight), None if bias is None else up(bias), stride, pad_arg, dilation, groups)
    return finish(apply_fused_activation(y, act, act_min, act_max), x.dtype)


OPS = (OpDef("conv2d", conv2d, fake_by_reference(conv2d)),)

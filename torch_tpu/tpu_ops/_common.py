"""Shared pieces of the TPU op set: the op definition record and the numeric convention.

Numeric convention (every op follows it; the cmodel kernels implement the same semantics):

* operands are stored in the op's dtype (f32, bf16 or f16; indices int64/int32, masks bool);
* float operands are upcast to f32 and all arithmetic is done in f32;
* the result is rounded ONCE to the output dtype (round to nearest even, as ``Tensor.to``).

Integer and bool operands (indices, comparison masks) are computed exactly in their own dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclasses.dataclass(frozen=True)
class OpDef:
    """One TPU op: its name in the ``tpu`` namespace, reference and fake implementations.

    Attributes:
        name: op name (``conv2d`` becomes ``torch.ops.tpu.conv2d``).
        impl: the reference implementation (the definition of the op's semantics); its type hints give
            the schema.
        fake: shape/dtype inference on fake tensors (``register_fake``).
    """

    name: str
    impl: Callable[..., torch.Tensor]
    fake: Callable[..., torch.Tensor]


def up(x: torch.Tensor) -> torch.Tensor:
    """Upcast a float operand to f32 (integers and bools are returned unchanged)."""
    return x.float() if x.dtype in FLOAT_DTYPES else x


def finish(y: torch.Tensor, dtype: torch.dtype, *inputs: torch.Tensor) -> torch.Tensor:
    """Round an f32 result once to ``dtype``; never return storage shared with an input."""
    y = y.to(dtype)
    for x in inputs:
        if isinstance(x, torch.Tensor) and (y is x or y._base is not None and (y._base is x or y._base is x._base)):
            return y.clone()
    return y


def fake_like(x: torch.Tensor, *_args, **_kwargs) -> torch.Tensor:
    """Fake implementation of an op whose output has the shape and dtype of its first operand."""
    return torch.empty_like(x)


def fake_by_reference(impl: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Shape inference by running the reference on fake tensors (the meta kernels compute the shapes).

    Used where the output shape follows a torch formula (conv, pooling windows, resizing) so the
    shape logic lives in exactly one place.
    """

    def fake(*args, **kwargs):
        return impl(*args, **kwargs)

    fake.__name__ = f"{impl.__name__}_fake"
    return fake


def broadcast_shape(*shapes: torch.Size) -> torch.Size:
    """Numpy-style broadcast of shapes."""
    return torch.broadcast_shapes(*shapes)

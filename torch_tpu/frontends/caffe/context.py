"""What a layer converter receives (:class:`LayerContext`) and returns (:class:`Converted`).

A converter is a plain function ``convert_<family>(ctx) -> Converted``. It checks the layer's
parameters and blobs (raising through ``ctx.error`` / ``ctx.unsupported``, which name the file, the
layer and its type) and returns one torch function per top plus the weights those functions read.
The functions are traced later by ``torch.export``, so they must be plain tensor code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import torch

from torch_tpu.errors import ModelFormatError, UnsupportedOpError
from torch_tpu.frontends.caffe.reader import CaffeLayer

TopFn = Callable[[Sequence[torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Converted:
    """A converted layer.

    Attributes:
        fns: one function per top: ``fn(bottoms, weights) -> tensor``.
        weights: constant tensors by short key (``weight``, ``bias``, ``mean`` ...); their stable
            names are ``<layer>.<key>``.
    """

    fns: tuple[TopFn, ...]
    weights: Mapping[str, torch.Tensor] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class LayerContext:
    """One layer with the shapes of its bottoms, and error helpers that name file, layer and type."""

    layer: CaffeLayer
    prototxt: str
    caffemodel: str | None
    bottom_shapes: tuple[tuple[int, ...], ...]

    @property
    def name(self) -> str:
        """The layer name."""
        return self.layer.name

    @property
    def type(self) -> str:
        """The layer type."""
        return self.layer.type

    def param(self, field: str) -> Any:
        """The ``<field>`` sub-message of the layer (its defaults when the prototxt leaves it out)."""
        return getattr(self.layer.param, field)

    def has_param(self, field: str, sub: str) -> bool:
        """Whether ``<field>.<sub>`` is set explicitly in the prototxt."""
        msg = self.layer.param
        return msg.HasField(field) and getattr(msg, field).HasField(sub)

    # -- errors ----------------------------------------------------------------------------------
    def error(self, message: str, *, weights: bool = False) -> ModelFormatError:
        """A ModelFormatError about this layer (in the .caffemodel when ``weights``)."""
        path = self.caffemodel if weights and self.caffemodel else self.prototxt
        return ModelFormatError(path, message, node=self.name, op=self.type)

    def unsupported(self, reason: str) -> UnsupportedOpError:
        """An UnsupportedOpError for a parameter value this importer does not handle."""
        return UnsupportedOpError(self.type, name=self.name, where="caffe", location=self.prototxt, reason=reason)

    # -- checks ----------------------------------------------------------------------------------
    def expect_bottoms(self, low: int, high: int | None = None) -> None:
        """Refuse a layer whose number of bottoms is outside ``[low, high]`` (``high`` defaults to ``low``)."""
        high = low if high is None else high
        n = len(self.layer.bottoms)
        if not low <= n <= high:
            want = str(low) if low == high else f"{low}..{high}" if high < 1 << 30 else f">= {low}"
            raise self.error(f"expects {want} bottom(s), got {n}")

    def expect_tops(self, n: int) -> None:
        """Refuse a layer that does not have exactly ``n`` tops."""
        if len(self.layer.tops) != n:
            raise self.error(f"expects {n} top(s), got {len(self.layer.tops)}")

    def expect_blobs(self, low: int, high: int | None = None) -> None:
        """Refuse a layer whose number of weight blobs is outside ``[low, high]``."""
        high = low if high is None else high
        n = len(self.layer.blobs)
        if not low <= n <= high:
            want = str(low) if low == high else f"{low} to {high}"
            hint = "" if n or self.caffemodel else " (no .caffemodel was given)"
            raise self.error(f"expects {want} weight blob(s), got {n}{hint}", weights=True)

    def blob(self, index: int, shape: Sequence[int]) -> torch.Tensor:
        """Blob ``index``, which must have ``shape`` up to leading 1s (Caffe's rule for old 4-D blobs:
        an InnerProduct weight stored as ``(1, 1, N, K)``, a bias as ``(1, 1, 1, N)``)."""
        t = self.layer.blobs[index]
        shape = tuple(int(s) for s in shape)

        def strip(dims: Sequence[int]) -> tuple[int, ...]:
            dims = tuple(dims)
            while dims and dims[0] == 1:
                dims = dims[1:]
            return dims

        if tuple(t.shape) != shape and strip(t.shape) != strip(shape):
            raise self.error(f"blob {index} has shape {list(t.shape)}, expected {list(shape)}", weights=True)
        return t.reshape(shape).contiguous()

    def axis(self, axis: int, ndim: int, what: str = "axis") -> int:
        """Caffe's CanonicalAxisIndex: ``axis`` in ``[-ndim, ndim)`` -> ``[0, ndim)``."""
        if not -ndim <= axis < ndim:
            raise self.error(f"{what} {axis} is out of range for a {ndim}-D bottom")
        return axis % ndim

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of bottom 0."""
        return self.bottom_shapes[0]


def single(fn: TopFn, weights: Mapping[str, torch.Tensor] | None = None) -> Converted:
    """A one-top result."""
    return Converted(fns=(fn,), weights=dict(weights or {}))


def broadcast_shape(ndim: int, axis: int, shape: Sequence[int]) -> tuple[int, ...]:
    """Shape that places a ``shape`` parameter at ``axis`` of an ``ndim``-D tensor (ones elsewhere)."""
    return (1,) * axis + tuple(shape) + (1,) * (ndim - axis - len(shape))

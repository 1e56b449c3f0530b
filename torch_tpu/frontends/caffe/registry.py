"""The layer-type -> converter table (registration happens here, in one explicit place).

:class:`LayerRegistry` refuses a second converter for a type and answers a miss with an
:class:`~torch_tpu.errors.UnsupportedOpError` naming the file, the layer and its type.
:func:`supported_layers` lists the table for ``docs/support_caffe.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from torch_tpu.errors import UnsupportedOpError
from torch_tpu.frontends.caffe.context import Converted, LayerContext
from torch_tpu.frontends.caffe.converters import activation, conv, eltwise, linear, norm, pooling, resize, shape

Converter = Callable[[LayerContext], Converted]

#: layer types handled by the graph builder itself (they declare graph inputs, not computations).
INPUT_TYPES = {"Input": "graph inputs from input_param.shape (or input_shapes=); also the legacy net-level "
                        "input / input_shape / input_dim fields"}


@dataclasses.dataclass(frozen=True)
class Entry:
    type: str
    convert: Converter
    notes: str


class LayerRegistry:
    """Caffe layer type -> converter function."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def add(self, layer_type: str, convert: Converter, notes: str) -> None:
        """Register ``convert`` for ``layer_type``; a second registration is a programming error."""
        if layer_type in self._entries or layer_type in INPUT_TYPES:
            raise ValueError(f"caffe layer type {layer_type!r} is already registered")
        self._entries[layer_type] = Entry(layer_type, convert, notes)

    def lookup(self, ctx: LayerContext) -> Converter:
        """The converter for ``ctx``'s layer type, or an UnsupportedOpError naming file, layer and type."""
        entry = self._entries.get(ctx.type)
        if entry is None:
            raise UnsupportedOpError(ctx.type, name=ctx.name, where="caffe", location=ctx.prototxt,
                                     reason=f"no converter for Caffe layer type {ctx.type!r}; supported: "
                                            f"{', '.join(sorted([*self._entries, *INPUT_TYPES]))}")
        return entry.convert

    def __contains__(self, layer_type: str) -> bool:
        return layer_type in self._entries

    def entries(self) -> list[Entry]:
        """The registered entries, sorted by type."""
        return [self._entries[k] for k in sorted(self._entries)]


def _default_registry() -> LayerRegistry:
    r = LayerRegistry()
    r.add("Convolution", conv.convert_convolution, "2-D; group, dilation, pad/kernel/stride and their _h/_w forms")
    r.add("Deconvolution", conv.convert_deconvolution, "2-D transposed convolution; group, dilation, _h/_w forms")
    r.add("InnerProduct", linear.convert_inner_product, "axis, transpose, bias_term")
    r.add("BatchNorm", norm.convert_batch_norm, "stored statistics only (use_global_stats); scale_factor blob "
          "folded into mean/variance")
    r.add("Scale", norm.convert_scale, "learned or second-bottom scale; axis, num_axes, bias_term")
    r.add("Bias", norm.convert_bias, "learned or second-bottom bias; axis, num_axes")
    r.add("ReLU", activation.convert_relu, "negative_slope (leaky ReLU)")
    r.add("PReLU", activation.convert_prelu, "per-channel or channel_shared slopes")
    r.add("Sigmoid", activation.convert_sigmoid, "")
    r.add("TanH", activation.convert_tanh, "")
    r.add("AbsVal", activation.convert_absval, "")
    r.add("ELU", activation.convert_elu, "alpha")
    r.add("Power", activation.convert_power, "(shift + scale*x)^power")
    r.add("Softmax", activation.convert_softmax, "axis")
    r.add("Pooling", pooling.convert_pooling, "MAX/AVE, global_pooling, Caffe's ceil rounding and clipping "
          "(round_mode FLOOR too); no STOCHASTIC, no mask top")
    r.add("Eltwise", eltwise.convert_eltwise, "SUM with coeff, PROD, MAX")
    r.add("Concat", shape.convert_concat, "axis or concat_dim")
    r.add("Slice", shape.convert_slice, "axis or slice_dim; slice_point or equal parts")
    r.add("Split", shape.convert_split, "alias of the bottom (no node)")
    r.add("Dropout", shape.convert_dropout, "identity at inference (no node)")
    r.add("Silence", shape.convert_silence, "no output")
    r.add("Flatten", shape.convert_flatten, "axis, end_axis")
    r.add("Reshape", shape.convert_reshape, "0 copies a dim, -1 infers one; axis, num_axes")
    r.add("Permute", shape.convert_permute, "SSD's permute_param.order")
    r.add("Crop", shape.convert_crop, "axis, one or per-axis offsets")
    r.add("Interp", resize.convert_interp, "bilinear, align corners; height/width, zoom_factor, shrink_factor, "
          "second bottom; no pad_beg/pad_end")
    r.add("Upsample", resize.convert_upsample, "nearest by integer scale / scale_h / scale_w (one bottom)")
    return r


#: the default table used by :func:`torch_tpu.frontends.caffe.load_caffe`.
REGISTRY = _default_registry()


def supported_layers() -> list[tuple[str, str]]:
    """``(layer type, notes)`` for every supported Caffe layer type, sorted by type.

    Example:
        >>> ("Convolution" in dict(supported_layers()), "Input" in dict(supported_layers()))
        (True, True)
    """
    rows = [(e.type, e.notes) for e in REGISTRY.entries()] + list(INPUT_TYPES.items())
    return sorted(rows)


def support_table() -> str:
    """:func:`supported_layers` as a Markdown table (the body of ``docs/support_caffe.md``)."""
    lines = ["| Caffe layer type | notes |", "|---|---|"]
    lines += [f"| {t} | {notes.replace('|', '/')} |" for t, notes in supported_layers()]
    return "\n".join(lines) + "\n"

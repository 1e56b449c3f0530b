"""Resize-18 and Resize-19 (``antialias``, ``axes``, ``keep_aspect_ratio_policy``, half_pixel_symmetric).

Only the combinations that ``torch.nn.functional.interpolate`` computes exactly are accepted; the
others are refused by name instead of giving a silently different result:

* ``nearest`` + ``asymmetric`` + ``floor``: ``x_in = floor(x_out / s)`` -> mode ``nearest``;
* ``nearest`` + ``half_pixel`` + ``round_prefer_ceil``: ``x_in = floor((x_out + 0.5) / s)`` -> ``nearest-exact``;
* ``linear`` / ``cubic`` + ``half_pixel`` (or ``pytorch_half_pixel``): ``x_in = (x_out + 0.5) / s - 0.5``
  -> ``bilinear`` / ``bicubic`` (``linear`` on 3-D and 5-D inputs) with ``align_corners=False``;
  cubic needs ``cubic_coeff_a = -0.75`` (torch's A) and ``exclude_outside = 0``;
* ``align_corners``: ``x_in = x_out (L_in - 1) / (L_out - 1)`` -> ``align_corners=True``.

``scales`` (input 2) or ``sizes`` (input 3) must be constants; only the spatial axes (2 and up) may
change. ``pytorch_half_pixel`` differs from ``half_pixel`` only for an output length of 1, refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult

from torch_tpu.frontends.onnx_converters._common import (ConverterError, check_attribute, const_input,
                                                         const_ints, tensor_mapping)

_LINEAR = {3: "linear", 4: "bilinear", 5: "trilinear"}


class OnnxResizeStatic(nn.Module, OnnxToTorchModule):
    """``F.interpolate`` with a constant output size or constant scale factors over the spatial axes."""

    def __init__(self, mode: str, align_corners: bool | None, sizes: list[int] | None,
                 scales: list[float] | None):
        super().__init__()
        self.mode, self.align_corners, self.sizes, self.scales = mode, align_corners, sizes, scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        mode = _LINEAR[x.dim()] if self.mode == "linear" else self.mode
        if self.sizes is not None:
            return F.interpolate(x, size=self.sizes, mode=mode, align_corners=self.align_corners)
        return F.interpolate(x, scale_factor=self.scales, mode=mode, align_corners=self.align_corners,
                             recompute_scale_factor=False)


def _full_rank(values: list, axes: list[int] | None, rank: int, fill) -> list:
    if axes is None:
        return list(values)
    out = [fill] * rank
    for a, v in zip(axes, values):
        out[a % rank] = v
    return out


def _torch_mode(node: OnnxNode) -> tuple[str, bool | None]:
    attrs = node.attributes
    mode = attrs.get("mode", "nearest")
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        nearest = attrs.get("nearest_mode", "round_prefer_floor")
        if ctm == "asymmetric" and nearest == "floor":
            return "nearest", None
        if ctm == "half_pixel" and nearest == "round_prefer_ceil":
            return "nearest-exact", None
        raise ConverterError(f"Resize: nearest with coordinate_transformation_mode={ctm!r} and "
                             f"nearest_mode={nearest!r} is not supported (asymmetric+floor, "
                             "half_pixel+round_prefer_ceil are)")
    check_attribute(node, "mode", ("linear", "cubic"), "nearest")
    check_attribute(node, "coordinate_transformation_mode", ("half_pixel", "pytorch_half_pixel", "align_corners"),
                    "half_pixel")
    if mode == "cubic":
        if abs(float(attrs.get("cubic_coeff_a", -0.75)) + 0.75) > 1e-12:
            raise ConverterError(f"Resize: cubic_coeff_a={attrs['cubic_coeff_a']} is not supported (-0.75 is)")
        check_attribute(node, "exclude_outside", (0,), 0)
    return ("bicubic" if mode == "cubic" else "linear"), ctm == "align_corners"


def convert_resize_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Resize with constant ``scales`` or ``sizes``; see the module doc for the accepted modes."""
    check_attribute(node, "antialias", (0,), 0)
    check_attribute(node, "keep_aspect_ratio_policy", ("stretch",), "stretch")
    mode, align_corners = _torch_mode(node)
    ctm = node.attributes.get("coordinate_transformation_mode", "half_pixel")
    axes = node.attributes.get("axes")
    rank = None
    info = graph.value_info.get(node.input_values[0])
    if info is not None and info.type.tensor_type.HasField("shape"):
        rank = len(info.type.tensor_type.shape.dim)
    scales_t = const_input(node, graph, 2, "scales")
    sizes = const_ints(node, graph, 3, "sizes")
    scales = None if scales_t is None or scales_t.numel() == 0 else [float(s) for s in scales_t.tolist()]
    if (scales is None) == (sizes is None or len(sizes) == 0):
        raise ConverterError("Resize: exactly one of 'scales' and 'sizes' must be given")
    if axes is not None and rank is None:
        raise ConverterError("Resize: 'axes' needs the input rank (run shape inference)")
    if scales is not None:
        full = _full_rank(scales, axes, rank or len(scales), 1.0)
        if full[:2] != [1.0, 1.0]:
            raise ConverterError(f"Resize: scales {full} change the batch or channel axis")
        module = OnnxResizeStatic(mode, align_corners if mode != "nearest" else None, None, full[2:])
    else:
        if axes is not None:
            shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
            full_sizes = _full_rank(sizes, axes, rank, None)
            sizes = [s if s is not None else shape[i] for i, s in enumerate(full_sizes)]
        if ctm == "pytorch_half_pixel" and 1 in sizes[2:]:
            raise ConverterError("Resize: pytorch_half_pixel with an output length of 1 is not supported")
        module = OnnxResizeStatic(mode, align_corners if mode not in ("nearest", "nearest-exact") else None,
                                  sizes[2:], None)
    if mode in ("nearest", "nearest-exact"):
        module.align_corners = None
    return OperationConverterResult(torch_module=module, onnx_mapping=tensor_mapping(node))


CONVERTERS = [("Resize", 18, convert_resize_18), ("Resize", 19, convert_resize_18)]

"""Float simulation of int8 (fake quantization) over a TOP graph, for tune, search and accuracy checks.

* activations: every float value whose stable name is in the given mapping is replaced, as it is
  produced, by ``fake_quantize(x, s, zp)`` (per-tensor int8, half away from zero) — what an int8 graph
  computes up to accumulator rounding. The mapping gives per name either a
  :class:`~torch_tpu.quant.tables.CalibrationEntry` — the grid is then
  :func:`torch_tpu.quant.qscheme.activation_qparams`'s, exactly the INT8 lowering's (unsigned ``[0, T]``
  for tensors that were never negative) — or a bare threshold ``T`` (signed grid ``s = T / 127``,
  ``zp = 0``, for search and tune candidates);
* weights (optional): every float ``get_attr`` with 2 or more dims is fake-quantized per output channel
  with ``scale_c = max|w_c| / 127``; the output-channel axis depends on the op reading the weight
  (table :data:`WEIGHT_AXIS`: 0 for convolution's ``[C_out, ...]``, the last dim for addmm/mm/bmm/matmul's
  ``[K, N]``, which is how a folded ``linear`` weight arrives), axis 0 when no reader is in the table;
  1-D constants (biases) stay float, as int32 biases are exact to ``scale_in · scale_w / 2``.

All quantize/dequantize arithmetic comes from :mod:`torch_tpu.fixed_point`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx as fx

from torch_tpu.fixed_point import fake_quantize, scale_from_threshold
from torch_tpu.graph.meta import run_named
from torch_tpu.graph.names import stable_name
from torch_tpu.quant.qscheme import ActivationSpec, activation_qparams


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors, flattened, in float64 (1.0 when both are all zeros)."""
    a = a.detach().flatten().to(torch.float64)
    b = b.detach().flatten().to(torch.float64)
    na, nb = a.norm(), b.norm()
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float((a @ b) / (na * nb))


def first_float(v: Any) -> torch.Tensor | None:
    """The value itself if it is a float tensor, else the first float tensor of a tuple/list."""
    if isinstance(v, torch.Tensor):
        return v if v.is_floating_point() else None
    if isinstance(v, (tuple, list)):
        for x in v:
            t = first_float(x)
            if t is not None:
                return t
    return None


aten = torch.ops.aten

# (op overload packet, argument index) -> the output-channel axis of the weight read there.
WEIGHT_AXIS: Mapping[tuple[Any, int], int] = {
    (aten.convolution, 1): 0,        # [C_out, C_in/g, kH, kW] (transposed: see weight_axis)
    (aten.addmm, 2): -1,             # mat2 [K, N]
    (aten.mm, 1): -1,
    (aten.bmm, 1): -1,
    (aten.matmul, 1): -1,
    (aten.linear, 1): 0,             # [N, K]
}


def weight_axis(reader: fx.Node, index: int) -> int | None:
    """Output-channel axis of the weight that ``reader`` takes as positional argument ``index``.

    ``None`` when the op is not in :data:`WEIGHT_AXIS` (then per tensor, or axis 0 in the hook) or for a
    grouped transposed convolution (whose output channels are not one axis).
    """
    packet = getattr(reader.target, "overloadpacket", reader.target)
    axis = WEIGHT_AXIS.get((packet, index))
    if packet is aten.convolution and axis is not None and len(reader.args) > 6 and reader.args[6] is True:
        return 1 if (len(reader.args) < 9 or reader.args[8] == 1) else None
    return axis


#: activations the INT8 lowering fuses into a preceding conv / linear as saturation bounds, and those producers
#: (:mod:`torch_tpu.lowering.int8_driver`, ``FUSIBLE_ACTS`` / ``FUSING_PRODUCERS``; quant cannot import lowering).
FUSIBLE_ACTS = frozenset({aten.relu.default, aten.hardtanh.default, aten.clamp.default, aten.clamp_min.default})
FUSING_PRODUCERS = frozenset({aten.convolution.default, aten.addmm.default, aten.mm.default,
                              aten.add.Tensor, aten.sub.Tensor})
#: producers that fuse only in their binary form (two activation operands; ``x + c`` is a lookup table)
BINARY_PRODUCERS = frozenset({aten.add.Tensor, aten.sub.Tensor})
#: curved activations the INT8 lowering fuses into a preceding 2-D convolution as an interpolated lookup table
#: on a 16-bit input grid (``tpu.conv2d_lut_int8``, :mod:`torch_tpu.tpu_ops.int8_eltwise`): the pre-activation
#: is never rounded to int8 where the curve bends (efficientnet's conv + silu, the squeeze-excite's
#: conv + sigmoid, mobilenet_v3's conv + hardswish).
LUT_FUSIBLE_ACTS = frozenset({aten.silu.default, aten.sigmoid.default, aten.hardswish.default,
                              aten.hardsigmoid.default, aten.gelu.default, aten.tanh.default})


def _lut_fusible(n: fx.Node, act: fx.Node) -> bool:
    """``n`` is a plain 2-D convolution (4-D output, not transposed) and ``act`` a curved activation of it."""
    return (act.op == "call_function" and act.target in LUT_FUSIBLE_ACTS and n.target == aten.convolution.default
            and len(n.args) > 6 and n.args[6] is False and n.meta["val"].dim() == 4
            and not any(isinstance(a, fx.Node) for a in act.args[1:]))


def fusible_pair(n: fx.Node) -> fx.Node | None:
    """The activation fused into ``n`` by the INT8 lowering, or None: ``n`` is a conv / linear, or an add / sub
    of two activations, whose only user is a relu / relu6 / clamp with constant bounds; or ``n`` is a 2-D
    convolution whose only user is a curved activation of :data:`LUT_FUSIBLE_ACTS`. The lowering then
    requantizes ``n``'s accumulator straight to the activation's grid with the activation's bounds, or (curved)
    onto a 16-bit grid that an interpolated table maps to the activation's grid."""
    if n.op != "call_function" or n.target not in FUSING_PRODUCERS or len(n.users) != 1:
        return None
    if n.target in BINARY_PRODUCERS and not all(isinstance(a, fx.Node) and a.op != "get_attr" for a in n.args[:2]):
        return None
    (act,) = n.users
    if act.op == "call_function" and act.target in FUSIBLE_ACTS and \
            not any(isinstance(a, fx.Node) for a in act.args[1:]):
        return act
    return act if _lut_fusible(n, act) else None


#: producers whose int8 form has a float output (``tpu.*_int8_f32``): conv, linear, matmul
#: (:func:`torch_tpu.lowering.int8_driver.float_output_macs`).
FLOAT_OUTPUT_PRODUCERS = frozenset({aten.convolution.default, aten.addmm.default, aten.mm.default,
                                    aten.bmm.default, aten.matmul.default})


def float_outputs(gm: fx.GraphModule) -> set[fx.Node]:
    """Values the INT8 lowering never quantizes because only the graph output reads them: a conv / linear /
    matmul whose value (or whose fused relu / relu6 / clip's, :func:`fusible_pair`) goes only to the output
    dequantizes its int32 accumulator straight to f32. Returns those producers and their fused activations.

    Structural on purpose (quant cannot see the lowering's rule table): the lowering also keeps a MAC in
    float when its consumers lack an int8 rule (softmax, layer norm); ``int8_driver.float_value_names``
    lists those too.
    """
    out: set[fx.Node] = set()
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in FLOAT_OUTPUT_PRODUCERS:
            continue
        act = fusible_pair(n)
        if act is not None and act.target not in FUSIBLE_ACTS:     # only bounds (relu / relu6 / clip) apply in f32
            continue
        value = act or n
        if value.users and all(u.op == "output" for u in value.users):
            out |= {n, value}
    return out


def fused_producers(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes :func:`fusible_pair` fuses: their own output is never an int8 tensor, so a faithful
    simulation does not quantize it (only the activation's output)."""
    return {n for n in gm.graph.nodes if fusible_pair(n) is not None}


def fake_quant_weight(w: torch.Tensor, axis: int | None = 0) -> torch.Tensor:
    """Symmetric int8 fake quantization of a weight, per channel along ``axis`` (per tensor if ``None``).

    ``scale_c = max|w_c| / 127``.
    """
    if axis is None:
        return fake_quantize(w, scale_from_threshold(w.detach().abs().amax()))
    axis = axis % w.ndim
    amax = w.detach().abs().transpose(0, axis).flatten(1).amax(dim=1)
    return fake_quantize(w, scale_from_threshold(amax), axis=axis)


def _hook_weight_axis(node: fx.Node) -> int:
    for user in node.users:
        for i, a in enumerate(user.args):
            if a is node and user.op == "call_function":
                axis = weight_axis(user, i)
                if axis is not None:
                    return axis
    return 0


def fake_quant_activation(x: torch.Tensor, spec: ActivationSpec) -> torch.Tensor:
    """``x`` on the int8 grid of ``spec`` (a table entry or a bare symmetric threshold, module doc)."""
    scale, zp = activation_qparams(spec)
    return fake_quantize(x, scale, zp)


def fake_quant_hook(thresholds: Mapping[str, ActivationSpec], quantize_weights: bool = False
                    ) -> Callable[[fx.Node, Any], Any]:
    """A :func:`run_named` hook that fake-quantizes activations (and optionally weights) as they appear."""
    def hook(node: fx.Node, value: Any) -> Any:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return None
        if node.op == "get_attr":
            return fake_quant_weight(value, _hook_weight_axis(node)) if quantize_weights and value.ndim >= 2 else None
        t = thresholds.get(stable_name(node))
        if t is None:
            return None
        return fake_quant_activation(value, t)
    return hook


def run_fake_quant(gm: fx.GraphModule, inputs: Sequence[torch.Tensor], thresholds: Mapping[str, ActivationSpec], *,
                   quantize_weights: bool = False) -> tuple[torch.Tensor, ...]:
    """Run ``gm`` with the activations named in ``thresholds`` fake-quantized; returns the flat outputs.

    ``thresholds``: per stable name a calibration entry (the lowering's grid) or a bare threshold (module doc).
    """
    out, _ = run_named(gm, *inputs, keep=lambda n: False, hook=fake_quant_hook(thresholds, quantize_weights))
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def run_float(gm: fx.GraphModule, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = gm(*inputs)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def output_similarity(ref: Sequence[Any], got: Sequence[Any]) -> float:
    """Mean cosine over the float outputs."""
    sims = [cosine(r, g) for r, g in zip(ref, got)
            if isinstance(r, torch.Tensor) and r.is_floating_point()]
    return sum(sims) / len(sims) if sims else 1.0


class _EnvRecorder(fx.Interpreter):
    """Runs a graph and keeps every node's value (one sample's activations)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=False)


def run_env(gm: fx.GraphModule, inputs: Sequence[torch.Tensor]) -> dict[fx.Node, Any]:
    """``{node: value}`` for every node of one run (memory: one sample's activations)."""
    rec = _EnvRecorder(gm)
    with torch.no_grad():
        rec.run(*inputs)
    return rec.env


def eval_node(node: fx.Node, env: Mapping[fx.Node, Any], subst: Mapping[fx.Node, Any]) -> Any:
    """Re-run one ``call_function`` node with some of its inputs replaced (``subst``), others from ``env``."""
    def value(n: fx.Node) -> Any:
        return subst[n] if n in subst else env[n]
    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    with torch.no_grad():
        return node.target(*args, **kwargs)

"""Data-aware rounding of int8 weights (GPTQ-style error feedback), as a TOP-to-TOP step before calibration.

Round-to-nearest picks every integer weight on its own. With per-channel ``s_w = max|W[o]| / 127`` the error
of one layer's output is ``(W - s_w·Q) X`` for the layer's inputs ``X``; its expectation over the data is
``tr(ΔW H ΔWᵀ)/2`` with ``H = 2 X Xᵀ``. Rounding the columns of ``W`` one at a time and moving each
column's rounding error onto the columns not yet rounded, weighted by ``H⁻¹`` (Frantar et al., "GPTQ",
arXiv 2210.17323, after Optimal Brain Quantization), lowers that error a lot at no cost on the chip: the
result is still one int8 weight per element and one scale per output channel.

:func:`round_weights` returns a new :class:`~torch_tpu.graph.top.TopGraph` whose weights lie on the INT8
lowering's grid: ``W'[o] = s_w[o] · Q[o]`` with ``s_w`` unchanged, and the largest weight of each channel
keeps its nearest value (``±127``), so the lowering's own ``max|W'[o]| / 127`` gives back ``s_w`` and
``round(W' / s_w) = Q`` exactly (:func:`torch_tpu.lowering.qparams.quantize_weight`). Nothing else changes:
calibrate the returned graph and lower it as usual; the float graph itself now carries the weight rounding,
so comparing it with the source model shows the weight error alone.

What is rounded (:func:`rounding_layers`): weights (``get_attr`` constants with one reader) of 1-D/2-D
convolutions (not transposed; per group for grouped and depthwise ones), ``addmm``/``mm``/``linear`` and 2-D
``matmul`` weights. ``H`` is accumulated over the data, streaming (memory: one ``K x K`` matrix per layer,
``K`` = inputs per output channel; layers with ``K`` above ``max_inputs``, 8192 by default, keep
round-to-nearest), from the float graph's own activations. Details of the solve: columns
in decreasing ``diag(H)`` order, damping ``damp · mean(diag H)`` (raised tenfold, up to three times, if the
Cholesky factorisation fails), lazy block updates of ``block`` columns.

Example:
    >>> top = torch_tpu.transform(model, (x,))                                   # doctest: +SKIP
    >>> top = round_weights(top, images[:64])                                    # doctest: +SKIP
    >>> table = torch_tpu.calibrate(top, images)                                 # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F
from tqdm.auto import tqdm

from torch_tpu.fixed_point import round_float, scale_from_threshold
from torch_tpu.graph.names import stable_name
from torch_tpu.quant.calibrate import graph_module, load_samples, run_samples
from torch_tpu.quant.observers import CalibrationError

aten = torch.ops.aten

#: the largest integer weight magnitude of the symmetric grid (``s_w = max|W| / QMAX_W``)
QMAX_W = 127
DEFAULT_DAMP = 0.01
DEFAULT_BLOCK = 128
#: layers with more inputs per output channel keep round-to-nearest: ``H`` alone is ``K² · 4`` bytes (256 MiB
#: at 8192) and the solve grows as ``K³`` (vgg's first fc, ``K = 25088``: 2.5 GB and hours)
DEFAULT_MAX_INPUTS = 8192

log = logging.getLogger(__name__)


@dataclass
class RoundingLayer:
    """One weight to round: the reader ``node`` and its weight ``get_attr``.

    ``kind``: ``conv`` (weight ``[O, C/g, *k]``), ``linear`` (``[O, K]``) or ``kn`` (``[K, O]``: addmm/mm/matmul).
    ``data``: the argument index of the activation the weight multiplies.
    """
    node: fx.Node
    weight: fx.Node
    kind: str
    data: int

    @property
    def name(self) -> str:
        return stable_name(self.node)


#: (op, weight argument index, activation argument index, layout)
_READERS = {
    aten.convolution.default: (1, 0, "conv"),
    aten.addmm.default: (2, 1, "kn"),
    aten.mm.default: (1, 0, "kn"),
    aten.matmul.default: (1, 0, "kn"),
    aten.linear.default: (1, 0, "linear"),
}


def rounding_layers(gm: fx.GraphModule) -> list[RoundingLayer]:
    """The weights :func:`round_weights` rounds, in graph order (module doc)."""
    out = []
    for n in gm.graph.nodes:
        spec = _READERS.get(n.target) if n.op == "call_function" else None
        if spec is None or len(n.args) <= max(spec[0], spec[1]):
            continue
        w_idx, x_idx, kind = spec
        w = n.args[w_idx]
        if not (isinstance(w, fx.Node) and w.op == "get_attr" and len(w.users) == 1):
            continue
        val = w.meta.get("val")
        if val is None or not val.is_floating_point():
            continue
        if kind == "conv":
            transposed = len(n.args) > 6 and n.args[6] is True
            if transposed or val.dim() not in (3, 4):
                continue
        elif val.dim() != 2 or not isinstance(n.args[x_idx], fx.Node):
            continue
        out.append(RoundingLayer(n, w, kind, x_idx))
    return out


def _conv_columns(layer: RoundingLayer, x: torch.Tensor) -> torch.Tensor:
    """The convolution's input patches, ``[groups, K/groups, positions]`` (``K = C · prod(kernel)``)."""
    n = layer.node
    w = n.args[1].meta["val"]
    stride, padding, dilation = (list(n.args[i]) for i in (3, 4, 5))
    groups = n.args[8] if len(n.args) > 8 else 1
    if w.dim() == 3:                       # conv1d as a 2-D convolution of height 1
        x = x.unsqueeze(2)
        kernel, stride, padding, dilation = (1, w.shape[2]), [1, *stride], [0, *padding], [1, *dilation]
    else:
        kernel = tuple(w.shape[2:])
    u = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)     # [N, C·k, L]
    b, ck, positions = u.shape
    return u.view(b, groups, ck // groups, positions).permute(1, 2, 0, 3).reshape(groups, ck // groups, b * positions)


def _columns(layer: RoundingLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as ``[groups, K, samples]`` in float32."""
    x = x.detach().to(torch.float32)
    if layer.kind == "conv":
        return _conv_columns(layer, x)
    return x.reshape(-1, x.shape[-1]).T.unsqueeze(0)


def inputs_per_channel(layer: RoundingLayer) -> int:
    """``K``: the inputs one output channel of the layer reads (per group), the size of its ``H``."""
    shape = tuple(layer.weight.meta["val"].shape)
    if layer.kind == "kn":
        return shape[0]
    return math.prod(shape[1:])


def weight_matrix(layer: RoundingLayer, w: torch.Tensor) -> torch.Tensor:
    """The weight as ``[groups, O/groups, K]`` float64 (rows: output channels)."""
    w = w.detach().to(torch.float64)
    if layer.kind == "kn":
        w = w.T
    groups = layer.node.args[8] if layer.kind == "conv" and len(layer.node.args) > 8 else 1
    return w.reshape(groups, w.shape[0] // groups, -1)


def _from_matrix(layer: RoundingLayer, m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    m = m.reshape(-1, m.shape[-1])
    if layer.kind == "kn":
        m = m.T
    return m.reshape(like.shape).to(like.dtype).contiguous()


def hessians(gm: fx.GraphModule, layers: list[RoundingLayer], data: Iterable[Any], num_samples: int,
             progress: bool = True) -> tuple[dict[fx.Node, torch.Tensor], int]:
    """``H = 2 Σ X Xᵀ`` per layer (``[groups, K, K]`` float32) over up to ``num_samples`` items of ``data``."""
    readers: dict[fx.Node, list[RoundingLayer]] = {}
    for layer in layers:
        readers.setdefault(layer.node.args[layer.data], []).append(layer)
    hs: dict[fx.Node, torch.Tensor] = {}

    def hook(node: fx.Node, value: Any) -> None:
        for layer in readers.get(node, ()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                u = _columns(layer, value)
                if layer.node in hs:
                    hs[layer.node].baddbmm_(u, u.transpose(1, 2), alpha=2)
                else:
                    hs[layer.node] = torch.bmm(u, u.transpose(1, 2)).mul_(2)

    _, count = run_samples(gm, data, num_samples, hook, progress=progress, desc="round weights: statistics",
                           who="round_weights", sample="round_weights: sample")
    return hs, count


def _upper_inverse_factor(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper triangular ``U`` with ``Uᵀ U = (H + λI)⁻¹`` per group, ``λ = damp · mean(diag H)`` (raised tenfold
    on failure). With ``J`` the reversal and ``J (H + λI) J = L Lᵀ``: ``U = J L⁻¹ J`` (one factorisation and
    one triangular inverse)."""
    k = h.shape[-1]
    eye = torch.eye(k, dtype=h.dtype)
    mean = torch.diagonal(h, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[:, None, None]
    flipped = h.flip(-1, -2)
    for attempt in range(4):
        chol, info = torch.linalg.cholesky_ex(flipped + damp * 10 ** attempt * mean * eye)
        if not bool((info != 0).any()):
            inv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
            return inv.flip(-1, -2)
    raise CalibrationError("round_weights: the input statistics are not positive definite even with damping")


def gptq_round(w: torch.Tensor, h: torch.Tensor, *, damp: float = DEFAULT_DAMP,
               block: int = DEFAULT_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer weights for ``w`` (``[G, O, K]``) given ``H`` (``[G, K, K]``): ``(Q [G, O, K], s [G, O])``.

    ``s = max|w[g, o]| / 127`` per row (the lowering's scale); the largest weight of each row keeps its
    nearest value ``±127``; every other weight lies in ``[-127, 127]``.
    """
    w64 = w.to(torch.float64)
    g, o, k = w.shape
    s64 = scale_from_threshold(w64.abs().amax(-1))                 # [G, O], the lowering's scale
    w, s, h = w64.to(torch.float32), s64.to(torch.float32), h.to(torch.float32).clone()
    diag = torch.diagonal(h, dim1=-2, dim2=-1)
    dead = diag == 0                                               # inputs that were always zero
    diag[dead] = 1.0
    perm = torch.argsort(diag, dim=-1, descending=True)            # [G, K]
    inv_perm = torch.argsort(perm, dim=-1)
    wp = torch.gather(w, 2, perm[:, None, :].expand(g, o, k)).clone()
    hp = torch.gather(torch.gather(h, 1, perm[:, :, None].expand(g, k, k)), 2, perm[:, None, :].expand(g, k, k))
    u = _upper_inverse_factor(hp, damp)
    # the column of each row's largest weight (after the permutation): kept at its nearest value
    keep_col = torch.gather(inv_perm, 1, w.abs().argmax(-1))      # [G, O]
    keep_val = round_float(torch.gather(w64, 2, w.abs().argmax(-1, keepdim=True))[..., 0] / s64).to(torch.float32)
    q = torch.empty_like(wp)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = wp[:, :, i1:i2].clone()
        e1 = torch.empty_like(w1)
        u1 = u[:, i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = w1[:, :, j]
            qc = round_float(col / s).clamp_(-QMAX_W, QMAX_W)
            qc = torch.where(keep_col == i1 + j, keep_val, qc)
            q[:, :, i1 + j] = qc
            err = (col - qc * s) / u1[:, j, j][:, None]
            w1[:, :, j:] -= err[:, :, None] * u1[:, j, j:][:, None, :]
            e1[:, :, j] = err
        if i2 < k:
            wp[:, :, i2:] -= torch.bmm(e1, u[:, i1:i2, i2:])
    return torch.gather(q, 2, inv_perm[:, None, :].expand(g, o, k)).to(torch.float64), s64


def round_weights(top: Any, data: Iterable[Any], num_samples: int = 64, *, damp: float = DEFAULT_DAMP,
                  block: int = DEFAULT_BLOCK, max_inputs: int = DEFAULT_MAX_INPUTS, progress: bool = True) -> Any:
    """A copy of ``top`` whose weights are rounded onto the int8 grid with error feedback (module doc).

    Args:
        top: a :class:`~torch_tpu.graph.top.TopGraph` (or its GraphModule; the result is then one too).
        data: as for :func:`~torch_tpu.quant.calibrate.calibrate` (samples, or a folder of .npy/.npz).
        num_samples: how many samples feed the input statistics.
        damp: relative damping of ``H`` (fraction of its mean diagonal).
        block: columns per lazy update block.
        max_inputs: layers with more inputs per output channel (per group) keep round-to-nearest (logged, and
            listed in the result's ``meta["weight_rounding_nearest"]``).

    Returns:
        The new graph; ``top`` is not changed. A layer whose reader never ran keeps its weights.
    """
    if num_samples <= 0 or damp <= 0 or block <= 0 or max_inputs <= 0:
        raise CalibrationError(f"round_weights: num_samples, damp, block and max_inputs must be > 0 "
                               f"(got {num_samples}, {damp}, {block}, {max_inputs})")
    gm = graph_module(top)
    if isinstance(data, (str, os.PathLike)):
        data = load_samples(data, [stable_name(n) for n in gm.graph.nodes if n.op == "placeholder"])
    layers, too_wide = [], []
    for layer in rounding_layers(gm):
        k = inputs_per_channel(layer)
        (too_wide if k > max_inputs else layers).append(layer)
    if too_wide:
        log.warning("round_weights: %d layer(s) with more than %d inputs per output channel keep round-to-nearest "
                    "weights: %s", len(too_wide), max_inputs, ", ".join(x.name for x in too_wide))
    hs, _ = hessians(gm, layers, data, num_samples, progress=progress)
    new_gm = copy.deepcopy(gm)
    by_name = {n.name: n for n in new_gm.graph.nodes}
    for layer in tqdm(layers, desc="round weights: solve", disable=not progress):
        if layer.node not in hs:
            continue
        target = by_name[layer.weight.name].target
        w = attr_value(new_gm, target)
        h = hs[layer.node]
        if not bool(torch.isfinite(h).all()):
            raise CalibrationError(f"round_weights: layer '{layer.name}' ({layer.node.target}): its inputs were "
                                   "not finite (NaN or Inf) on the data")
        try:
            q, s = gptq_round(weight_matrix(layer, w), h, damp=damp, block=block)
        except CalibrationError as e:
            raise CalibrationError(f"{e} (layer '{layer.name}', {layer.node.target})") from None
        rounded = _from_matrix(layer, q * s[..., None], w)
        _set_attr(new_gm, target, rounded)
    if top is gm:
        return new_gm
    out = copy.copy(top)
    out.gm = new_gm
    out.meta = {**top.meta, "weight_rounding": "gptq", "weight_rounding_nearest": [x.name for x in too_wide]}
    return out


def attr_value(gm: fx.GraphModule, target: str) -> torch.Tensor:
    """The tensor a ``get_attr`` target (a dotted path) names in ``gm``."""
    obj: Any = gm
    for p in target.split("."):
        obj = getattr(obj, p)
    return obj


def _set_attr(gm: fx.GraphModule, target: str, value: torch.Tensor) -> None:
    *path, leaf = target.split(".")
    mod = gm
    for p in path:
        mod = getattr(mod, p)
    old = getattr(mod, leaf)
    if isinstance(old, torch.nn.Parameter):
        setattr(mod, leaf, torch.nn.Parameter(value, requires_grad=old.requires_grad))
    elif leaf in getattr(mod, "_buffers", {}):
        mod._buffers[leaf] = value
    else:
        setattr(mod, leaf, value)

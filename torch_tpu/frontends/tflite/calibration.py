"""Calibration table from a pre-quantized TFLite model: INT8 lowering without calibration data.

A pre-quantized int8 ``.tflite`` is imported in float (:func:`load_tflite`), and every int8 activation's
quantization is kept by stable name in ``top.meta["tflite_quant"]`` (``{name: {"scale": [s],
"zero_point": [zp], "dtype": "int8"}}``; tensors that QUANTIZE/DEQUANTIZE made identities are in
``top.meta["tflite_aliases"]``). :func:`calibration_table_from_tflite` turns those into the
:class:`CalibrationTable` the INT8 lowering reads (``lowering/qparams.py``), so the model keeps TFLite's own
scales::

    >>> top = load_tflite("model_int8.tflite")                                     # doctest: +SKIP
    >>> run_pipeline(top.gm)                                                       # doctest: +SKIP
    >>> table = calibration_table_from_tflite(top)                                 # doctest: +SKIP
    >>> lower(top.gm, "bm1684x", "int8", calibration_table=table, asymmetric=True)  # doctest: +SKIP

**Entry of a tensor with TFLite qparams** (``x ≈ (q - zp) · s``, ``q`` in ``[qmin, qmax] = [-128, 127]``):

* ``min = (qmin - zp) · s``, ``max = (qmax - zp) · s`` — exactly the int8 grid, so ``asymmetric=True``
  gives back ``(s, zp)`` (``fixed_point.asymmetric_qparams``);
* ``threshold = s · 127`` when ``zp == 0`` (the symmetric scale ``threshold / 127`` is then exactly ``s``),
  else ``s · max(|qmin - zp|, |qmax - zp|)`` — the whole grid's magnitude, so nothing TFLite represents is
  clipped; the symmetric lowering then uses a coarser scale, so lower models with non-zero zero points
  with ``asymmetric=True`` (:func:`needs_asymmetric`).

**Every other float activation** (helper nodes ``<output>.<op>`` the importer adds around a TFLite op —
layout permutes, padding, the pre-activation of a fused activation —, values made by ``fx_passes``) gets
the entry of its nearest named neighbour, tried in this order (TPU-MLIR's propagation through
range-preserving ops, producer first):

1. **own name**: the stable name (or its alias) has TFLite qparams (fx_passes keep the stable name of the
   node they replace, so rewritten values land here);
2. **producer**: a range-preserving op (``quant.propagate.preserving_input``: permute, view/reshape,
   max pool, relu, slice, getitem of those ...; and ``constant_pad_nd`` with pad value 0, on every grid
   here, or ``-inf``, a max pool's padding that saturates to ``qmin`` and never wins) takes its input's
   entry — no requantization, as in the lowering;
3. **own op**: a helper named ``<output>.<suffix>`` takes the entry of the longest dotted prefix that has
   TFLite qparams (it is a step of the TFLite op producing ``<output>``: e.g. ``fc.addmm`` once the
   final ``view`` was folded away, ``add.add`` before the fused relu);
4. **consumer**: a value whose only users lead, through range-preserving ops and clamps (fused
   activations: TFLite quantizes a conv/add output *after* its fused activation), to a tensor with an
   entry takes that entry — the threshold flowing backward, as for concat inputs in TPU-MLIR.

Nodes still without an entry are left out; the lowering then raises ``QuantizationError`` naming them.
"""

from __future__ import annotations

import operator
from typing import Mapping

import torch
import torch.fx as fx

from torch_tpu.graph.names import stable_name
from torch_tpu.quant.propagate import is_activation, preserving_input
from torch_tpu.quant.tables import CalibrationEntry, CalibrationTable

aten = torch.ops.aten
QMIN, QMAX = -128, 127

#: ops through which an entry flows backward from a consumer (range-preserving + fused activations)
_BACKWARD_OPS = frozenset({aten.clamp, aten.hardtanh, aten.relu, aten.relu6})


def entry_from_qparams(scale: float, zero_point: int, qmin: int = QMIN, qmax: int = QMAX) -> CalibrationEntry:
    """The calibration entry of one per-tensor TFLite quantization (module doc)."""
    s, zp = float(scale), int(zero_point)
    threshold = s * 127.0 if zp == 0 else s * max(abs(qmin - zp), abs(qmax - zp))
    return CalibrationEntry(threshold, (qmin - zp) * s, (qmax - zp) * s)


def _tflite_entries(meta: Mapping) -> dict[str, CalibrationEntry]:
    quant = meta.get("tflite_quant") or {}
    out: dict[str, CalibrationEntry] = {}
    for name, q in quant.items():
        if q.get("dtype", "int8") != "int8" or len(q["scale"]) != 1:
            continue   # per-axis activations do not occur in TFLite; other dtypes are not int8 tensors
        out[name] = entry_from_qparams(q["scale"][0], q["zero_point"][0])
    for alias, canon in (meta.get("tflite_aliases") or {}).items():
        if canon in out and alias not in out:
            out[alias] = out[canon]
    return out


def needs_asymmetric(top) -> bool:
    """Whether any int8 activation of the TFLite model has a non-zero zero point."""
    quant = top.meta.get("tflite_quant") or {}
    return any(z != 0 for q in quant.values() if q.get("dtype", "int8") == "int8" for z in q["zero_point"])


def _packet(target):
    return getattr(target, "overloadpacket", target)


def _producer(node: fx.Node) -> fx.Node | None:
    src = preserving_input(node)
    if src is not None:
        return src
    if (node.op == "call_function" and _packet(node.target) is aten.constant_pad_nd and node.args
            and isinstance(node.args[0], fx.Node)):
        value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0.0)
        if float(value) in (0.0, float("-inf")):   # zeros; -inf (max pool padding) saturates to qmin
            return node.args[0]
    return None


def _passes_backward(node: fx.Node) -> bool:
    return node.op == "call_function" and (
        preserving_input(node) is not None or _packet(node.target) in _BACKWARD_OPS
        or node.target is operator.getitem)


def _by_prefix(name: str, known: Mapping[str, CalibrationEntry]) -> CalibrationEntry | None:
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        e = known.get(".".join(parts[:k]))
        if e is not None:
            return e
    return None


def calibration_table_from_tflite(top) -> CalibrationTable:
    """A :class:`CalibrationTable` for every float activation of ``top.gm`` from the TFLite qparams.

    Args:
        top: a :class:`TopGraph` from :func:`load_tflite` of a pre-quantized int8 model, before or after
            ``fx_passes.run_pipeline`` (build the table from the graph you lower).

    Returns:
        Entries in graph order, keyed by stable name, ``method="tflite"`` (module doc for the rules).
    """
    direct = _tflite_entries(top.meta)
    gm: fx.GraphModule = top.gm
    acts = [n for n in gm.graph.nodes if is_activation(n)]
    got: dict[fx.Node, CalibrationEntry] = {}
    # 1 + 2 + 3, forward in graph order (a producer is decided before its users)
    for n in acts:
        name = stable_name(n)
        if name in direct:
            got[n] = direct[name]
            continue
        src = _producer(n)
        if src is not None and src in got:
            got[n] = got[src]
            continue
        e = _by_prefix(name, direct)
        if e is not None:
            got[n] = e
    # 4, backward in reverse graph order (a consumer chain is resolved before its producer)
    for n in reversed(acts):
        if n in got:
            continue
        users = [u for u in n.users if u.op != "output"]
        if len(users) == 1 and _passes_backward(users[0]) and users[0] in got:
            got[n] = got[users[0]]
    # a forward pass again: range-preserving users of values found in step 4
    for n in acts:
        if n not in got:
            src = _producer(n)
            if src is not None and src in got:
                got[n] = got[src]
    entries = {stable_name(n): got[n] for n in acts if n in got}
    return CalibrationTable(entries, method="tflite", sample_number=0, tune_number=0)


def missing_activations(top, table: CalibrationTable) -> list[str]:
    """Stable names of ``top.gm``'s float activations that ``table`` has no entry for."""
    return [stable_name(n) for n in top.gm.graph.nodes if is_activation(n) and stable_name(n) not in table]

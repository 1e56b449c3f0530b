"""INT8 lowering: a TOP graph -> one TPU graph with int8 activations, driven by a calibration table and a qtable.

Steps (see README.md, "INT8"):

1. Constants are folded as for the float lowering; qparams come from the calibration table
   (:mod:`torch_tpu.lowering.qparams`); the qtable gives each layer's mode (default ``INT8``).
2. Conv / linear, and add / sub of two activations, followed by their only user relu / relu6 / clip are
   fused (:func:`~torch_tpu.quant.simulate.fusible_pair`): the accumulator is requantized straight to the
   activation's scale with the activation as saturation bounds (a residual add + relu lands on the relu's
   unsigned grid); the fused node takes the activation's stable name (the last node it replaces). A 2-D
   conv followed by a curved activation (silu, sigmoid, hardswish, ...) fuses the same way into
   ``tpu.conv2d_lut_int8`` (:func:`~torch_tpu.lowering.rules.int8_eltwise.lower_conv_lut`): a 16-bit
   pre-activation and an interpolated table instead of an int8 pre-activation and a 256-entry one.
3. A binary element-wise op whose every consumer reads it in float (layer norm, softmax, ... or another
   such op) runs in float (:func:`float_by_consumers`: a pre-norm transformer's residual stream).
4. Each node is lowered by its ``int8`` rule when its mode is INT8 and the rule accepts it; otherwise by the
   float rule of its qtable mode (``F32``/``BF16``/``F16``), or, for INT8 nodes without an int8 rule
   (softmax, layer norm, ...), of the target's fallback float precision: **f32 where the target has it
   (bm1684x, bm1688: accuracy first; these ops are a small share of the work), bf16 otherwise (cv183x)**.
5. A conv / linear / matmul whose value (or its fused activation's) is read only in float -- the graph
   output, ops without an int8 rule, :func:`float_by_consumers` nodes -- dequantizes its int32 accumulator
   straight to f32 (``tpu.*_int8_f32``, :func:`float_output_macs`) instead of requantizing it to int8
   (targets with f32).
6. Precision boundaries get casts: ``tpu.quantize_int8`` (``<value>.quantize``) where an int8 op reads a
   float value -- graph inputs included -- and ``tpu.dequantize_int8`` (``<value>.dequantize_<dtype>``)
   where a float op reads an int8 value; graph outputs are dequantized to f32.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import torch
import torch.fx as fx

from torch_tpu.errors import TargetError
from torch_tpu.graph.names import stable_name
from torch_tpu.graph.printer import dtype_str
from torch_tpu.lowering.builder import GraphBuilder
from torch_tpu.lowering.const_fold import copy_graph_module, fold_constants
from torch_tpu.lowering.context import make_ctx
from torch_tpu.lowering.driver import finish_tpu, walk_top
from torch_tpu.fixed_point import quantize
from torch_tpu.lowering.qparams import QuantParams, check_mode, load_calibration_table, load_qtable
from torch_tpu.lowering.registry import Rule, RuleTable
from torch_tpu.quant.calibrate import as_inputs, graph_module
from torch_tpu.quant.simulate import FUSIBLE_ACTS, LUT_FUSIBLE_ACTS, fusible_pair
from torch_tpu.quant.tables import CalibrationTable, QTable
from torch_tpu.targets import PRECISION_DTYPES, Target, get_target

MODE_PRECISION = {"F32": "f32", "BF16": "bf16", "F16": "f16", "INT8": "int8"}
#: node meta key of an int8 TPU value's ``(scale, zero_point)``: real = (q - zero_point) * scale
QPARAMS = "qparams"
aten = torch.ops.aten



def fallback_precision(target: Target) -> str:
    """The float precision for INT8-graph ops without an int8 rule: f32 if the target has it, else bf16."""
    for p in ("f32", "bf16", "f16"):
        if p in target.precisions:
            return p
    raise TargetError(f"target {target.name} has no float precision for ops without an int8 rule")


class QuantGraphBuilder(GraphBuilder):
    """A :class:`GraphBuilder` whose values convert between int8 and float with quantize/dequantize ops.

    ``value(top, torch.int8)`` of a float value emits ``tpu.quantize_int8`` with ``top``'s qparams (constants
    are quantized once per tensor); ``value(top, float dtype)`` of an int8 value emits ``tpu.dequantize_int8``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.qp: QuantParams | None = None
        self._q_cache: dict[tuple[fx.Node, torch.dtype], fx.Node] = {}

    def value(self, top: fx.Node, dtype: torch.dtype | None = None) -> fx.Node:
        if dtype == torch.int8 and top in self.consts and self.consts[top].dtype.is_floating_point:
            key = (top, dtype)
            if key not in self._q_cache:
                qp = self.qp.of(top)
                q = quantize(self.consts[top].to(torch.float64), qp.scale, qp.zero_point, dtype=torch.int8)
                self._q_cache[key] = self.add_const(q, f"{stable_name(top)}.int8", top)
            return self._q_cache[key]
        if top in self.consts and dtype is not None and dtype.is_floating_point:
            return super().value(top, dtype)  # the constant converted once (as the float lowering), no cast op
        node = super().value(top, None)
        if dtype is None or isinstance(node, tuple):
            return node
        have = node.meta["val"].dtype
        if have == dtype:
            return node
        if dtype == torch.int8 and have.is_floating_point:
            return self._convert(top, node, dtype, "quantize_int8")
        if have == torch.int8 and dtype.is_floating_point:
            return self._convert(top, node, dtype, "dequantize_int8")
        return self.cast(node, dtype)

    def _convert(self, top: fx.Node, node: fx.Node, dtype: torch.dtype, op: str) -> fx.Node:
        key = (node, dtype)
        if key not in self._q_cache:
            qp = self.qp.of(top)
            with self.graph.inserting_after(node):
                if op == "quantize_int8":
                    new = self.emit(op, (node, qp.scale, qp.zero_point), None, f"{stable_name(node)}.quantize", top)
                else:
                    new = self.emit(op, (node, qp.scale, qp.zero_point, dtype), None,
                                    f"{stable_name(node)}.dequantize_{dtype_str(dtype)}", top)
            self._q_cache[key] = new
        return self._q_cache[key]


def mode_of(qtable: QTable, node: fx.Node) -> str:
    """The qtable mode of ``node`` (``INT8`` when not listed)."""
    name = stable_name(node)
    return check_mode(qtable.get(name, "INT8"), name)


def fusions(gm: fx.GraphModule, qtable: QTable, table: RuleTable, target: Target) -> dict[fx.Node, fx.Node]:
    """``{producer: activation}`` for the pairs of :func:`~torch_tpu.quant.simulate.fusible_pair` (conv /
    linear, or add / sub of two activations, then relu / relu6 / clamp) whose producer its int8 rule lowers,
    both INT8 in the qtable."""
    out = {}
    for n in gm.graph.nodes:
        act = fusible_pair(n)
        if act is None or mode_of(qtable, n) != "INT8" or mode_of(qtable, act) != "INT8":
            continue
        rule = table.lookup(n.target, target, "int8")
        if rule is not None and rule.accepts(n):
            out[n] = act
    return out


def choose_rule(table: RuleTable, node: fx.Node, target: Target, mode: str) -> tuple[Rule, str]:
    """The rule for ``node`` in qtable ``mode``: its int8 rule, else a float rule (module doc, step 3)."""
    if mode == "INT8":
        rule = table.lookup(node.target, target, "int8")
        if rule is not None and rule.accepts(node):
            return rule, "int8"
        precision = fallback_precision(target)
    else:
        precision = MODE_PRECISION[mode]
        target.check_precision(precision)
    return table.rule_for(node, target, precision), precision


#: element-wise ops that run in float when no consumer of their result is int8 (:func:`float_by_consumers`).
FLOAT_IF_NO_INT8_CONSUMER = (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor)


def float_by_consumers(gm: fx.GraphModule, qtable: QTable, table: RuleTable, target: Target) -> set[fx.Node]:
    """Binary element-wise nodes (:data:`FLOAT_IF_NO_INT8_CONSUMER`, INT8 in the qtable) that run in the
    fallback float precision because **every consumer reads them in float**: an op without an int8 rule
    (layer norm, softmax, ...) or another node of this set. (A graph output is not such a consumer: the
    output keeps the int8 result a pre-quantized model defines.)

    Quantizing such a result buys nothing (the consumer dequantizes it at once) and costs a per-tensor
    rounding: in a pre-norm transformer the residual stream ``x + f(LN(x))`` only feeds layer norms and the
    next residual add, and one int8 scale for all its tokens erases the small ones (vit_tiny's class token
    is ~0.02 where patch tokens reach 2.5, one int8 step): output cosine 0.85 with the adds in int8,
    0.999 in float. Decided in reverse graph order, so a chain of such adds is float as a whole.
    """
    out: set[fx.Node] = set()

    def reads_float(user: fx.Node) -> bool:
        if user in out:
            return True
        if user.op != "call_function":
            return False
        return choose_rule(table, user, target, mode_of(qtable, user))[1] != "int8"

    for n in reversed(list(gm.graph.nodes)):
        if (n.op == "call_function" and n.target in FLOAT_IF_NO_INT8_CONSUMER and mode_of(qtable, n) == "INT8"
                and n.users and all(reads_float(u) for u in n.users)):
            out.add(n)
    return out


#: TOP ops whose int8 rule has a float-output form (``tpu.conv2d_int8_f32`` / ``linear_int8_f32`` /
#: ``matmul_int8_f32``, :mod:`torch_tpu.lowering.rules.int8_mac`).
FLOAT_OUTPUT_MACS = (aten.convolution.default, aten.addmm.default, aten.mm.default, aten.bmm.default,
                     aten.matmul.default)


def float_output_macs(gm: fx.GraphModule, qtable: QTable, table: RuleTable, target: Target,
                      fused: Mapping[fx.Node, fx.Node], in_float: set[fx.Node]) -> set[fx.Node]:
    """Conv / linear / matmul nodes lowered by their int8 rule whose value -- their fused activation's, when
    one is fused (``fused``) -- is read only in float: by the graph output, by a node lowered by a float
    rule, or by a node of ``in_float`` (:func:`float_by_consumers`). They dequantize the int32 accumulator
    to f32 (``f32(acc) · s_x · s_w[o]``, a fused relu / relu6 / clip as bounds in float; a node fused with
    another activation keeps its int8 form) instead of requantizing it: an
    int8 rounding of that value would be undone at once by a dequantization and only add error (the digits
    CNN's logits: module README, "INT8"). Only on targets with f32 arithmetic (none on cv183x, whose float
    consumers read bf16 from ``dequantize_int8``).
    """
    def reads_float(user: fx.Node) -> bool:
        if user.op == "output" or user in in_float:
            return True
        if user.op != "call_function":
            return False
        return choose_rule(table, user, target, mode_of(qtable, user))[1] != "int8"

    out: set[fx.Node] = set()
    if "f32" not in target.precisions:
        return out
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in FLOAT_OUTPUT_MACS or n in in_float:
            continue
        if choose_rule(table, n, target, mode_of(qtable, n))[1] != "int8":
            continue
        if n in fused and fused[n].target not in FUSIBLE_ACTS:   # only bounds (relu / relu6 / clip) apply in f32
            continue
        value = fused.get(n, n)
        if value.users and all(reads_float(u) for u in value.users):
            out.add(n)
    return out


def supports_int8(table: RuleTable, node: fx.Node, target: Target, qtable: QTable) -> bool:
    """Whether :func:`lower_int8` can lower ``node`` (int8 rule, or the float rule it falls back to)."""
    if node.op != "call_function":
        return False
    mode = mode_of(qtable, node)
    if mode == "INT8":
        rule = table.lookup(node.target, target, "int8")
        if rule is not None and rule.accepts(node):
            return True
        return table.supports(node, target, fallback_precision(target))
    return table.supports(node, target, MODE_PRECISION[mode])


def lower_int8(gm_top: fx.GraphModule, target: Target | str, *,
               calibration_table: CalibrationTable | str | os.PathLike,
               qtable: QTable | Mapping[str, str] | str | os.PathLike | None = None, asymmetric: bool = False,
               table: RuleTable | None = None) -> fx.GraphModule:
    """Lower a TOP graph to an INT8 TPU graph (float layers where the qtable or missing int8 rules say so).

    Args:
        gm_top: the TOP GraphModule (not modified).
        target: a preset name or :class:`Target` (must have ``int8``).
        calibration_table: a :class:`CalibrationTable` or the path of one (thresholds by stable name).
        qtable: per-layer modes ``{stable_name: "F32"|"BF16"|"F16"|"INT8"}``, a :class:`QTable` or its path.
        asymmetric: asymmetric activations (zero points from the table's min/max).
        table: the rule table (default: :func:`torch_tpu.lowering.rules.default_table`).

    Returns:
        The TPU GraphModule, f32 at its boundary; ``meta["precision"] == "int8"``.

    Example:
        >>> tpu = lower_int8(top.gm, "bm1684x", calibration_table=table)    # doctest: +SKIP
    """
    from torch_tpu.lowering.rules import default_table

    target = get_target(target)
    target.check_precision("int8")
    table = table if table is not None else default_table()
    cal = load_calibration_table(calibration_table)
    qt = load_qtable(qtable)
    gm = fold_constants(copy_graph_module(gm_top))
    b = QuantGraphBuilder()
    qp = QuantParams(cal, b.consts, asymmetric)
    b.qp = qp
    fused = fusions(gm, qt, table, target)
    fused_into = {act: prod for prod, act in fused.items()}
    in_float = float_by_consumers(gm, qt, table, target)
    float_out = float_output_macs(gm, qt, table, target, fused, in_float)

    def lower_call(node: fx.Node):
        if node in fused_into:  # the activation lives in its producer's clamp
            return b.env[fused_into[node]]
        if node in in_float:
            precision = fallback_precision(target)
            rule = table.rule_for(node, target, precision)
        else:
            rule, precision = choose_rule(table, node, target, mode_of(qt, node))
        ctx = make_ctx(node, target, precision, PRECISION_DTYPES[precision], b, quant=qp, fused_act=fused.get(node))
        if node in fused:
            ctx = dataclasses.replace(ctx, name=stable_name(fused[node]))
        if node in float_out:
            ctx = dataclasses.replace(ctx, float_out=True)
        fn = rule.fn
        if node in fused and fused[node].target in LUT_FUSIBLE_ACTS:   # conv + curved activation
            from torch_tpu.lowering.rules.int8_eltwise import lower_conv_lut
            fn = lower_conv_lut
        out = fn(ctx)
        val = out.meta.get("val") if isinstance(out, fx.Node) else None
        if isinstance(val, torch.Tensor) and val.dtype == torch.int8:
            # what the int8 value means (read by checks that compare it with the float TOP value)
            q = qp.of(fused.get(node, node))
            out.meta[QPARAMS] = (float(q.scale), int(q.zero_point))
        return out

    def on_getitem(node: fx.Node) -> None:
        if node.args[0] in qp._inherited:
            qp.inherit(node, node.args[0])
        value = b.env[node]
        val = value.meta.get("val") if isinstance(value, fx.Node) else None
        if isinstance(val, torch.Tensor) and val.dtype == torch.int8 and QPARAMS not in value.meta and \
                (node in qp._inherited or stable_name(node) in qp.table):
            # an element of a tuple-valued op (max pool's values): what its int8 value means
            q = qp.of(node)
            value.meta[QPARAMS] = (float(q.scale), int(q.zero_point))

    out_node = walk_top(gm, b, lower_call, on_getitem=on_getitem)
    tpu = finish_tpu(b, out_node, target, "int8")
    tpu.meta["asymmetric"] = asymmetric
    return tpu



def fused_producer_names(gm_top: fx.GraphModule, target: Target | str,
                         qtable: QTable | Mapping[str, str] | str | os.PathLike | None = None,
                         table: RuleTable | None = None) -> set[str]:
    """Stable names of the conv/linear values the int8 graph never materialises (fused into their
    activation, so only the activation's output is quantized). A fake-quant simulation that leaves these
    out quantizes the same tensors as the int8 graph.
    """
    from torch_tpu.lowering.rules import default_table

    gm = fold_constants(copy_graph_module(gm_top))
    fused = fusions(gm, load_qtable(qtable), table if table is not None else default_table(), get_target(target))
    return {stable_name(n) for n in fused}


def float_value_names(gm_top: fx.GraphModule, target: Target | str,
                      qtable: QTable | Mapping[str, str] | str | os.PathLike | None = None,
                      table: RuleTable | None = None) -> set[str]:
    """Stable names of the values the int8 graph never quantizes: conv/linear results fused into their
    activation (:func:`fused_producer_names`), element-wise results read only in float
    (:func:`float_by_consumers`) and the results of conv / linear / matmul read only in float, with their
    fused activations (:func:`float_output_macs`). A fake-quant simulation that leaves these out quantizes
    the same tensors as the int8 graph.
    """
    from torch_tpu.lowering.rules import default_table

    table = table if table is not None else default_table()
    target, qt = get_target(target), load_qtable(qtable)
    gm = fold_constants(copy_graph_module(gm_top))
    fused = fusions(gm, qt, table, target)
    in_float = float_by_consumers(gm, qt, table, target)
    macs = float_output_macs(gm, qt, table, target, fused, in_float)
    nodes = set(fused) | in_float | macs | {fused[n] for n in macs if n in fused}
    return {stable_name(n) for n in nodes}


class Int8Evaluator:
    """A mixed-precision evaluator (:mod:`torch_tpu.quant.mixed_precision`) running the **real INT8
    lowering**: ``evaluator(float_layers)`` lowers the TOP graph with ``float_layers`` in ``mode`` (a
    qtable) and every other layer int8, runs the TPU graph's integer reference ops on each sample and
    returns the outputs (one tuple per sample). Graphs are lowered once per distinct set (kept while
    the evaluator lives).

    Args:
        top: TopGraph or GraphModule (float).
        table: the calibration table (or its path).
        samples: evaluation samples, each a tensor or a tuple of input tensors.
        target: a preset name or :class:`Target` with int8.
        mode: ``"F32"`` or ``"BF16"``: the qtable mode of the float layers.
        asymmetric: as :func:`lower_int8`.

    Example:
        >>> ev = Int8Evaluator(top, table, samples[:4])                                   # doctest: +SKIP
        >>> qtable, report = search_qtable(top, table, samples[:4], evaluator=ev)         # doctest: +SKIP
    """

    __name__ = "int8 lowering"

    def __init__(self, top, table: CalibrationTable | str | os.PathLike, samples, target: Target | str = "bm1684x",
                 *, mode: str = "F32", asymmetric: bool = False):
        self.gm = graph_module(top)
        self.table = load_calibration_table(table)
        self.samples = [as_inputs(s, i) for i, s in enumerate(samples)]
        self.target = get_target(target)
        self.mode = check_mode(mode.upper(), "Int8Evaluator")
        self.asymmetric = asymmetric
        self._graphs: dict[frozenset[str], fx.GraphModule] = {}

    def graph(self, float_layers: frozenset[str]) -> fx.GraphModule:
        """The INT8 TPU graph with ``float_layers`` in ``mode`` (lowered once per set)."""
        key = frozenset(float_layers)
        if key not in self._graphs:
            self._graphs[key] = lower_int8(self.gm, self.target, calibration_table=self.table,
                                           qtable={n: self.mode for n in key}, asymmetric=self.asymmetric)
        return self._graphs[key]

    def __call__(self, float_layers: frozenset[str]) -> list[tuple[torch.Tensor, ...]]:
        tpu = self.graph(float_layers)
        outs = []
        with torch.no_grad():
            for inputs in self.samples:
                out = tpu(*inputs)
                outs.append(tuple(out) if isinstance(out, (tuple, list)) else (out,))
        return outs

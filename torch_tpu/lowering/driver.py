"""The lowering driver: a whole TOP graph -> one TPU graph for a (target, precision).

Steps:

1. ``target.check_precision(precision)`` (cv183x + f32 is a :class:`TargetError`); float precisions are
   lowered here, ``int8`` by :mod:`torch_tpu.lowering.int8_driver` (same rule table, ``int8`` entries).
2. A copy of the TOP graph has its constant subgraphs folded (:mod:`torch_tpu.lowering.const_fold`).
3. Nodes are visited in order. Inputs become f32 placeholders, constants are emitted lazily (converted to
   the precision's dtype once), each op goes to its rule (:mod:`torch_tpu.lowering.rules`), getitems pick
   an element of a rule's tuple.
4. Outputs are cast back to the TOP dtype (f32), so the graph has f32 at its boundary.
5. Float conv / linear + relu / relu6 / clip pairs are fused (:mod:`torch_tpu.lowering.fuse`): the
   activation becomes the producer's ``act`` and the fused node takes the activation's stable name.

Cast policy: inside the graph every float value is stored in the precision's dtype; a rule may produce
or request f32 values, and a ``tpu.cast`` named ``<value>.cast_<dtype>`` is inserted where a consumer needs
another dtype (at most one per value and dtype).
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch.fx as fx

from torch_tpu.errors import TargetError, VerificationError
from torch_tpu.graph.names import set_stable_name, stable_name
from torch_tpu.lowering.builder import GraphBuilder, fetch_attr
from torch_tpu.lowering.const_fold import copy_graph_module, fold_constants
from torch_tpu.lowering.context import make_ctx
from torch_tpu.lowering.fuse import fuse_conv_activations
from torch_tpu.lowering.registry import RuleTable
from torch_tpu.targets import FLOAT_PRECISIONS, PRECISION_DTYPES, Target, get_target


def check_float_precision(target: Target, precision: str) -> None:
    """Raise :class:`TargetError` unless ``target`` has ``precision`` and it is a float precision."""
    target.check_precision(precision)
    if precision not in FLOAT_PRECISIONS:
        raise TargetError(f"lowering: precision {precision} is quantized; float lowering handles "
                          f"{', '.join(FLOAT_PRECISIONS)}")


def lower(gm_top: fx.GraphModule, target: Target | str, precision: str, *,
          table: RuleTable | None = None, calibration_table: Any = None, qtable: Any = None,
          asymmetric: bool = False) -> fx.GraphModule:
    """Lower a fully supported TOP graph to a TPU graph (only ``torch.ops.tpu.*`` ops).

    Args:
        gm_top: the TOP GraphModule (not modified).
        target: a preset name or :class:`Target`.
        precision: ``f32``, ``bf16``, ``f16``, or ``int8`` (then see
            :func:`torch_tpu.lowering.int8_driver.lower_int8`).
        table: the rule table (default: :func:`torch_tpu.lowering.rules.default_table`).
        calibration_table: int8 only (required): a ``CalibrationTable`` or its path.
        qtable: int8 only: per-layer modes, a ``QTable``, its path or ``{stable_name: "F32"|"BF16"|"F16"|"INT8"}``.
        asymmetric: int8 only: asymmetric activations.

    Returns:
        The TPU GraphModule: same inputs and outputs (f32 at the boundary), stable names kept.

    Raises:
        TargetError: the target lacks the precision.
        UnsupportedOpError: an op (or a variant) without a rule, naming its stable name and location.

    Example:
        >>> tpu = lower(top.gm, "bm1684x", "bf16")       # doctest: +SKIP
        >>> out = tpu(x)                                 # doctest: +SKIP
    """
    from torch_tpu.lowering.rules import default_table

    if precision == "int8":
        from torch_tpu.lowering.int8_driver import lower_int8

        if calibration_table is None:
            raise TargetError("lowering: precision int8 needs a calibration_table (torch_tpu.calibrate)")
        return lower_int8(gm_top, target, calibration_table=calibration_table, qtable=qtable, asymmetric=asymmetric,
                          table=table)
    target = get_target(target)
    check_float_precision(target, precision)
    table = table if table is not None else default_table()
    dtype = PRECISION_DTYPES[precision]
    gm = fold_constants(copy_graph_module(gm_top))
    b = GraphBuilder()

    def lower_call(node: fx.Node) -> Any:
        rule = table.rule_for(node, target, precision)
        return rule.fn(make_ctx(node, target, precision, dtype, b))

    out_node = walk_top(gm, b, lower_call)
    return fuse_conv_activations(finish_tpu(b, out_node, target, precision)).graph_module


def walk_top(gm: fx.GraphModule, b: GraphBuilder, lower_call: Callable[[fx.Node], Any], *,
             on_getitem: Callable[[fx.Node], None] | None = None) -> fx.Node:
    """Walk a TOP graph in order, filling ``b.env`` / ``b.consts``; ``lower_call(node)`` lowers each op.

    Returns the output node. Shared by the float and the INT8 drivers.
    """
    out_node = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            b.env[node] = b.placeholder(node)
        elif node.op == "get_attr":
            b.consts[node] = fetch_attr(gm, node.target)
        elif node.op == "call_function" and node.target is operator.getitem:
            parent = b.env.get(node.args[0])
            if not isinstance(parent, tuple) or parent[node.args[1]] is None:
                raise VerificationError(f"lowering: getitem '{stable_name(node)}' of "
                                        f"'{stable_name(node.args[0])}' has no lowered value")
            b.env[node] = value = parent[node.args[1]]
            if isinstance(value, fx.Node) and stable_name(value).endswith("#tuple"):
                # an op lowered to one TPU value for element i of a TOP tuple (max_pool2d_with_indices ->
                # its values): that value is element i, so it takes element i's name and meets the TOP value
                set_stable_name(value, stable_name(node))
            if on_getitem is not None:
                on_getitem(node)
        elif node.op == "call_function":
            b.env[node] = lower_call(node)
        elif node.op == "output":
            out_node = node
        else:
            raise VerificationError(f"lowering: node '{stable_name(node)}' is a {node.op}; TOP graphs "
                                    "have only placeholders, get_attr and call_function nodes")
    return out_node


def finish_tpu(b: GraphBuilder, out_node: fx.Node, target: Target, precision: str) -> fx.GraphModule:
    """Outputs cast back to their TOP dtypes (f32 at the graph boundary), then the TPU GraphModule."""
    def boundary(n: fx.Node) -> fx.Node:
        v = n.meta["val"]
        return b.value(n, v.dtype if v.dtype.is_floating_point else None)

    b.graph.output(fx.node.map_arg(out_node.args[0], boundary))
    tpu = b.finish()
    tpu.meta["target"] = target.name
    tpu.meta["precision"] = precision
    return tpu

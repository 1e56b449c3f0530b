"""Partitioning for the torch.compile backend: supported regions become TPU submodules, the rest runs eager.

:func:`lower_partitioned` folds constants, asks the rule table which nodes it can lower (an
``OperatorSupport`` built from the table: a rule exists AND its ``extra_check`` passes), groups them with
torch.fx's ``CapabilityBasedPartitioner``, and replaces every group by a submodule ``tpu_0``, ``tpu_1``...
holding a pure TPU graph (f32 at its boundary). Unsupported nodes stay as ATen calls in the outer graph;
each is recorded as a :class:`Fallback` in ``gm.meta["fallbacks"]``. Every outer node keeps a
``meta['val']``: the TOP one for eager nodes, the submodule's output vals for ``tpu_<i>`` calls.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import torch.fx as fx
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase

from torch_tpu.errors import TargetError
from torch_tpu.graph.names import set_stable_name, source_location, stable_name
from torch_tpu.graph.printer import op_str
from torch_tpu.lowering.builder import fetch_attr
from torch_tpu.lowering.const_fold import copy_graph_module, fold_constants
from torch_tpu.lowering.driver import check_float_precision, lower
from torch_tpu.lowering.registry import RuleTable
from torch_tpu.targets import Target, get_target

FALLBACKS = "fallbacks"


@dataclasses.dataclass(frozen=True)
class Fallback:
    """One TOP op left to eager PyTorch.

    Attributes:
        op: the op (``aten.topk``).
        stable_name: the node's stable name.
        location: source ``file:line`` when known.
    """

    op: str
    stable_name: str
    location: str | None


class RuleSupport(OperatorSupportBase):
    """``OperatorSupport`` from a rule table: a ``call_function`` node is supported if a rule exists for its
    op at (target, precision) and the rule's ``extra_check`` accepts it; a getitem follows its producer."""

    def __init__(self, table: RuleTable, target: Target, precision: str):
        self.table, self.target, self.precision = table, target, precision

    def is_node_supported(self, submodules, node: fx.Node) -> bool:
        if node.op != "call_function":
            return False
        if node.target is operator.getitem:
            return self.is_node_supported(submodules, node.args[0])
        return self.table.supports(node, self.target, self.precision)


def _internalize_constants(outer: fx.GraphModule, call: fx.Node, sub: fx.GraphModule) -> None:
    """Move constants that feed the submodule through placeholders into the submodule (weights must be
    constants for the rules), and name/type the remaining placeholders after the outer values."""
    phs = [n for n in sub.graph.nodes if n.op == "placeholder"]
    keep = []
    for ph, arg in zip(phs, call.args):
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            attr = f"_const_{len(keep)}_{ph.name}"
            sub.register_buffer(attr, fetch_attr(outer, arg.target))
            with sub.graph.inserting_before(ph):
                g = sub.graph.get_attr(attr)
            g.meta.update(arg.meta)
            ph.replace_all_uses_with(g)
            sub.graph.erase_node(ph)
        else:
            ph.meta["val"] = arg.meta["val"]
            set_stable_name(ph, stable_name(arg))
            keep.append(arg)
    call.args = tuple(keep)
    sub.recompile()


class Int8RuleSupport(OperatorSupportBase):
    """``OperatorSupport`` for int8: a node is supported if the int8 lowering can lower it (its int8 rule,
    or the float rule of its qtable mode / of the target's fallback precision)."""

    def __init__(self, table: RuleTable, target: Target, qtable):
        self.table, self.target, self.qtable = table, target, qtable

    def is_node_supported(self, submodules, node: fx.Node) -> bool:
        from torch_tpu.lowering.int8_driver import supports_int8

        if node.op != "call_function":
            return False
        if node.target is operator.getitem:
            return self.is_node_supported(submodules, node.args[0])
        return supports_int8(self.table, node, self.target, self.qtable)


def lower_partitioned(gm_top: fx.GraphModule, target: Target | str, precision: str, *, fallback: bool = True,
                      table: RuleTable | None = None, calibration_table: Any = None, qtable: Any = None,
                      asymmetric: bool = False) -> fx.GraphModule:
    """Lower what the target supports; leave the rest to eager PyTorch.

    Args:
        gm_top: the TOP GraphModule (not modified).
        target: preset name or :class:`Target`.
        precision: ``f32``, ``bf16``, ``f16`` or ``int8``.
        fallback: False makes the first unsupported op an :class:`UnsupportedOpError`.
        table: rule table (default: the shared default table).
        calibration_table, qtable, asymmetric: for ``int8``, as in :func:`torch_tpu.lowering.driver.lower`
            (every partition is lowered with the same tables; stable names are kept inside partitions).

    Returns:
        An outer GraphModule calling ``tpu_<i>`` submodules (pure TPU graphs) and ATen ops for the
        unsupported nodes; ``gm.meta["fallbacks"]`` lists a :class:`Fallback` per unsupported op.

    Example:
        >>> gm = lower_partitioned(top.gm, "bm1684x", "bf16")      # doctest: +SKIP
        >>> gm.meta["fallbacks"]                                  # doctest: +SKIP
        [Fallback(op='aten.topk', stable_name='topk', location='model.py:12')]
    """
    from torch_tpu.lowering.rules import default_table

    target = get_target(target)
    table = table if table is not None else default_table()
    int8_kw = {}
    if precision == "int8":
        from torch_tpu.lowering.qparams import load_calibration_table, load_qtable

        target.check_precision("int8")
        if calibration_table is None:
            raise TargetError("lowering: precision int8 needs a calibration_table (torch_tpu.calibrate)")
        qt = load_qtable(qtable)
        int8_kw = {"calibration_table": load_calibration_table(calibration_table), "qtable": qt,
                   "asymmetric": asymmetric}
        support = Int8RuleSupport(table, target, qt)
    else:
        check_float_precision(target, precision)
        support = RuleSupport(table, target, precision)
    gm = fold_constants(copy_graph_module(gm_top))
    unsupported = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is not operator.getitem
                   and not support.is_node_supported({}, n)]
    if unsupported and not fallback:
        if precision == "int8":
            from torch_tpu.lowering.int8_driver import choose_rule, mode_of
            choose_rule(table, unsupported[0], target, mode_of(int8_kw["qtable"], unsupported[0]))
        table.rule_for(unsupported[0], target, precision)  # raises UnsupportedOpError with the reason
    partitioner = CapabilityBasedPartitioner(gm, support, allows_single_node_partition=True)
    fused = partitioner.fuse_partitions(partitioner.propose_partitions(), prefix="_fused_")
    count = 0
    for node in list(fused.graph.nodes):
        if node.op != "call_module" or not str(node.target).startswith("_fused_"):
            continue
        sub = getattr(fused, node.target)
        _internalize_constants(fused, node, sub)
        tpu = lower(sub, target, precision, table=table, **int8_kw)
        name = f"tpu_{count}"
        count += 1
        delattr(fused, node.target)
        fused.add_submodule(name, tpu)
        node.target = name
        set_stable_name(node, name)
        outs = next(n for n in tpu.graph.nodes if n.op == "output").args[0]
        node.meta["val"] = fx.node.map_arg(outs, lambda n: n.meta["val"])
        for user in list(node.users):
            if user.op == "call_function" and user.target is operator.getitem and isinstance(outs, (tuple, list)):
                set_stable_name(user, stable_name(outs[user.args[1]]))
                user.meta["val"] = outs[user.args[1]].meta["val"]
    fused.graph.eliminate_dead_code()
    fused.graph.lint()
    fused.delete_all_unused_submodules()
    fused.recompile()
    fused.meta[FALLBACKS] = [Fallback(op_str(n.target), stable_name(n), source_location(n)) for n in unsupported]
    fused.meta["target"] = target.name
    fused.meta["precision"] = precision
    return fused

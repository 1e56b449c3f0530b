"""TOP graph -> TPU graph lowering for float precisions and INT8 (see README.md in this folder).

Public API:
    lower(gm_top, target, precision) -> fx.GraphModule                      a fully supported graph
    lower(gm_top, target, "int8", calibration_table=..., qtable=...)        INT8 (int8_driver.lower_int8)
    lower_partitioned(gm_top, target, precision, *, fallback=True)          TPU partitions + eager fallback
                                                                            (same int8 keywords)
    check_tpu(gm, target, precision)                                        TPU-graph invariants
    default_table() / build_table() -> RuleTable                            the rule table
"""

from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.int8_driver import fused_producer_names, lower_int8
from torch_tpu.lowering.partition import FALLBACKS, Fallback, lower_partitioned
from torch_tpu.lowering.qparams import QuantizationError
from torch_tpu.lowering.registry import Rule, RuleTable
from torch_tpu.lowering.rules import build_table, default_table

__all__ = ["FALLBACKS", "Fallback", "QuantizationError", "Rule", "RuleTable", "build_table", "check_tpu",
           "default_table", "fused_producer_names", "lower", "lower_int8", "lower_partitioned"]

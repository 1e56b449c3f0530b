"""TPU graph -> cmodel Program: DDR planning, per-op tiling and instruction emission (issue 3).

``codegen(tpu_gm, target, name=...) -> Program``; ``plan_ddr(gm, base) -> DdrPlan`` (footprint report).
"""

from torch_tpu.lowering.codegen.ddr_plan import DdrPlan, plan_ddr
from torch_tpu.lowering.codegen.driver import HANDLERS, codegen

__all__ = ["DdrPlan", "HANDLERS", "codegen", "plan_ddr"]

"""TOP -> TOP rewrites: one module per pass, the ordered :data:`PIPELINE`, the pass manager and the
TOP checker. See README.md in this directory for the invariants and how to add a pass."""

from torch_tpu.fx_passes.checker import check_top
from torch_tpu.fx_passes.flops import graph_flops
from torch_tpu.fx_passes.manager import Pass, PassManager, PassResult
from torch_tpu.fx_passes.pipeline import PIPELINE, run_pipeline

__all__ = ["PIPELINE", "Pass", "PassManager", "PassResult", "check_top", "graph_flops", "run_pipeline"]

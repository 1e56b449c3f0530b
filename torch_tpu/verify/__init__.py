"""Tensor similarity metrics and stage-by-stage comparison."""

from torch_tpu.verify.compare import CompareReport, compare, load_npz, save_npz
from torch_tpu.verify.metrics import Similarity, similarity
from torch_tpu.verify.stages import module_outputs

__all__ = ["CompareReport", "Similarity", "compare", "load_npz", "module_outputs", "save_npz", "similarity"]

"""Tensor similarity metrics and stage-by-stage comparison."""

from torch_tpu.verify.compare import CompareReport, compare, load_npz, save_npz
from torch_tpu.verify.metrics import Similarity, similarity

__all__ = ["CompareReport", "Similarity", "compare", "load_npz", "save_npz", "similarity"]

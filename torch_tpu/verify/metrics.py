"""Tensor similarity metrics, the same everywhere (TPU-MLIR's npz_tool conventions).

For a reference ``a`` and a candidate ``b`` (flattened, in float64):

* cosine similarity        ``cos = <a, b> / (‖a‖ ‖b‖)``  (1 when both are all zeros)
* Euclidean similarity     ``euc = 1 − ‖a − b‖ / ‖(a + b) / 2‖``  (1 when both are all zeros)
* SQNR in dB               ``10 log10(‖a‖² / ‖a − b‖²)``  (inf when equal)
* max abs diff             ``max |a − b|``
"""

from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass(frozen=True)
class Similarity:
    cosine: float
    euclidean: float
    sqnr_db: float
    max_abs: float
    shape_ok: bool = True

    def passes(self, cos_min: float, euc_min: float) -> bool:
        return self.shape_ok and self.cosine >= cos_min and self.euclidean >= euc_min


def similarity(a: torch.Tensor, b: torch.Tensor) -> Similarity:
    """All four metrics for one pair (``a`` is the reference)."""
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    if tuple(a.shape) != tuple(b.shape):
        if a.numel() != b.numel():
            return Similarity(float("nan"), float("nan"), float("nan"), float("nan"), shape_ok=False)
    a = a.detach().reshape(-1).to(torch.float64)
    b = b.detach().reshape(-1).to(torch.float64)
    finite = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
    if not finite:
        same = bool(torch.equal(a.nan_to_num(), b.nan_to_num()))
        return Similarity(1.0 if same else float("nan"), 1.0 if same else float("nan"),
                          float("inf") if same else float("nan"), 0.0 if same else float("inf"))
    diff = a - b
    na, nb, nd = a.norm().item(), b.norm().item(), diff.norm().item()
    if na == 0.0 and nb == 0.0:
        cos = 1.0
    elif na == 0.0 or nb == 0.0:
        cos = 0.0
    else:
        cos = float(torch.dot(a, b).item() / (na * nb))
    mid = ((a + b) / 2).norm().item()
    euc = 1.0 if nd == 0.0 else (1.0 - nd / mid if mid > 0 else 0.0)
    sqnr = float("inf") if nd == 0.0 else (20 * math.log10(na / nd) if na > 0 else float("-inf"))
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    return Similarity(cos, euc, sqnr, max_abs)

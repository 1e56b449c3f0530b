"""Compare named tensors: one row per name, a table, and the first name that falls short.

Used to check every level against the one before (TOP vs eager, TPU vs TOP, Program vs TPU) and by
``torch-tpu compare a.npz b.npz``.

Example:
    >>> rep = compare({"y": torch.ones(3)}, {"y": torch.ones(3)}, tolerance=(0.99, 0.99))
    >>> rep.ok
    True
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from torch_tpu.errors import ModelFormatError, VerificationError
from torch_tpu.verify.metrics import Similarity, similarity


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    shape: tuple[int, ...]
    sim: Similarity
    ok: bool


@dataclasses.dataclass
class CompareReport:
    """Per-name similarity rows, in the reference's order (graph order)."""

    rows: list[Row]
    tolerance: tuple[float, float]
    missing: list[str] = dataclasses.field(default_factory=list)
    title: str = ""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and bool(self.rows)

    @property
    def first_failure(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)

    def __getitem__(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def min_cosine(self) -> float:
        return min((r.sim.cosine for r in self.rows), default=float("nan"))

    def table(self, max_rows: int | None = None, only_failures: bool = False) -> str:
        rows = [r for r in self.rows if not only_failures or not r.ok]
        if max_rows is not None and len(rows) > max_rows:
            # keep the outputs (last rows) and the first failure visible
            head = rows[: max_rows // 2]
            tail = rows[-(max_rows - len(head)):]
            rows = head + [None] + tail
        width = max([len("name")] + [len(r.name) for r in rows if r is not None])
        lines = []
        if self.title:
            lines.append(self.title)
        lines.append(f"{'name':<{width}}  {'shape':<18} {'cosine':>10} {'euclid':>10} {'sqnr_db':>8} "
                     f"{'max_abs':>10}  ok")
        for r in rows:
            if r is None:
                lines.append(f"{'...':<{width}}")
                continue
            s = r.sim
            shape = "x".join(str(d) for d in r.shape) or "scalar"
            sq = "inf" if math.isinf(s.sqnr_db) and s.sqnr_db > 0 else f"{s.sqnr_db:8.2f}"
            lines.append(f"{r.name:<{width}}  {shape:<18} {s.cosine:10.6f} {s.euclidean:10.6f} {sq:>8} "
                         f"{s.max_abs:10.3g}  {'yes' if r.ok else 'NO'}")
        if self.missing:
            lines.append(f"not in both: {', '.join(self.missing[:10])}" + (" ..." if len(self.missing) > 10 else ""))
        verdict = "PASS" if self.ok else (f"FAIL at '{self.first_failure.name}'" if self.first_failure else "FAIL")
        lines.append(f"{len(self.rows)} compared, tolerance cos>={self.tolerance[0]} euclid>={self.tolerance[1]}: "
                     f"{verdict}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table(max_rows=40)

    def raise_if_failed(self) -> "CompareReport":
        if not self.rows:
            raise VerificationError(f"{self.title or 'compare'}: no tensor names in common")
        bad = self.first_failure
        if bad is not None:
            s = bad.sim
            raise VerificationError(
                f"{self.title or 'compare'}: first tensor below tolerance in graph order is '{bad.name}': "
                f"cosine {s.cosine:.6f}, euclidean {s.euclidean:.6f}, sqnr {s.sqnr_db:.2f} dB, "
                f"max abs diff {s.max_abs:.3g} (tolerance cos>={self.tolerance[0]}, euclid>={self.tolerance[1]})")
        return self


def _as_named(x: Any) -> dict[str, torch.Tensor]:
    if isinstance(x, Mapping):
        return {str(k): torch.as_tensor(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return {"output": x}
    if isinstance(x, np.ndarray):
        return {"output": torch.from_numpy(x)}
    if isinstance(x, (list, tuple)):
        return {f"output{i}": torch.as_tensor(v) for i, v in enumerate(x)}
    raise TypeError(f"compare() takes dicts of named tensors, a tensor, or a sequence; got {type(x).__name__}")


def compare(a: Any, b: Any, tolerance: tuple[float, float] = (0.99, 0.99), *,
            names: Iterable[str] | None = None, title: str = "") -> CompareReport:
    """Compare ``b`` against the reference ``a`` per named tensor.

    Args:
        a: reference: ``{name: tensor}`` (its order is the graph order used to find the first failure),
            a tensor, or a sequence of tensors.
        b: candidate, same forms.
        tolerance: (min cosine, min Euclidean similarity).
        names: restrict to these names (in this order).
    """
    ra, rb = _as_named(a), _as_named(b)
    order = list(names) if names is not None else list(ra)
    rows, missing = [], []
    for name in order:
        if name not in ra or name not in rb:
            missing.append(name)
            continue
        x, y = ra[name], rb[name]
        if not (x.dtype.is_floating_point or y.dtype.is_floating_point) and x.shape == y.shape:
            equal = bool(torch.equal(x, y))
            sim = similarity(x, y)
            rows.append(Row(name, tuple(x.shape), sim, equal))
            continue
        sim = similarity(x, y)
        rows.append(Row(name, tuple(x.shape), sim, sim.passes(*tolerance)))
    missing += [n for n in rb if n not in ra and names is None]
    return CompareReport(rows, tuple(tolerance), missing, title)


def load_npz(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an .npz of named arrays (no pickled objects allowed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: torch.from_numpy(np.array(z[k])) for k in z.files}
    except (OSError, ValueError) as e:
        raise ModelFormatError(str(path), f"cannot read npz ({e})") from None


def save_npz(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    arrays = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16:
            v = v.float()
        arrays[k] = v.numpy()
    np.savez(path, **arrays)

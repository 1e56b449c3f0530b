"""DENSIFY of a sparse constant (sparse weights, e.g. MediaPipe's ``*_sparse`` models), folded at import.

TFLite stores a sparse tensor as a tree over "levels" (its dimensions in ``traversal_order``: the
original dimensions, then the block dimensions of ``block_map``). A dense level of size ``n`` expands
every path ``p`` into children ``p * n + i``; a CSR level expands path ``p`` into the entries
``segments[p] <= i < segments[p + 1]`` with coordinate ``indices[i]``. The leaves, in order, are the stored
values. A leaf's original index is ``orig[traversal_order[l]] = coord[l]`` for the first ``rank`` levels,
then ``orig[block_map[b]] = orig[block_map[b]] * block_size[b] + coord[l]`` for each block level
``l = rank + b`` (``block_size[b]`` its dense size). Everything else is zero.
"""

from __future__ import annotations

import numpy as np

from torch_tpu.frontends.tflite.context import OpContext
from torch_tpu.frontends.tflite.reader import Sparsity


def densify(sparsity: Sparsity, shape: tuple[int, ...]) -> np.ndarray:
    """Expand a sparse constant to a dense array of ``shape`` (raises ValueError when inconsistent)."""
    rank, order, levels = len(shape), sparsity.traversal_order, sparsity.levels
    if sorted(order[:rank]) != list(range(rank)) or len(order) != rank + len(sparsity.block_map):
        raise ValueError(f"traversal order {list(order)} does not fit rank {rank} with block map "
                         f"{list(sparsity.block_map)}")
    pos = np.zeros(1, dtype=np.int64)
    coords: list[np.ndarray] = []
    for lv in levels:
        if lv.dense:
            n = lv.dense_size
            coords = [np.repeat(c, n) for c in coords] + [np.tile(np.arange(n), len(pos))]
            pos = (pos[:, None] * n + np.arange(n)[None, :]).reshape(-1)
            continue
        seg, idx = np.asarray(lv.segments, dtype=np.int64), np.asarray(lv.indices, dtype=np.int64)
        if len(seg) == 0 or pos.size and (pos.max() + 1 >= len(seg)) or np.any(np.diff(seg) < 0) or (
                len(seg) and seg[-1] > len(idx)):
            raise ValueError("sparse segments do not fit their indices")
        counts = seg[pos + 1] - seg[pos]
        starts = np.repeat(seg[pos] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        entries = starts + np.arange(int(counts.sum()))
        coords = [np.repeat(c, counts) for c in coords] + [idx[entries]]
        pos = entries
    if len(pos) != sparsity.values.size:
        raise ValueError(f"the sparse structure has {len(pos)} entries, the buffer {sparsity.values.size} values")
    orig = [None] * rank
    for level in range(rank):
        orig[order[level]] = coords[level]
    for level in range(rank, len(order)):
        b = order[level] - rank
        if not 0 <= b < len(sparsity.block_map):
            raise ValueError(f"traversal order entry {order[level]} names no block dimension")
        d = sparsity.block_map[b]
        orig[d] = orig[d] * levels[rank + b].dense_size + coords[level]
    out = np.zeros(shape, dtype=sparsity.values.dtype)
    if any(np.any(o >= s) or np.any(o < 0) for o, s in zip(orig, shape)):
        raise ValueError(f"sparse indices fall outside shape {list(shape)}")
    out[tuple(orig)] = sparsity.values
    return out


def fold_densify(ctx: OpContext) -> np.ndarray:
    """DENSIFY of a sparse constant -> its dense value."""
    t = ctx.input(0)
    if t.sparse is None:
        raise ctx.unsupported("DENSIFY of a tensor that is not a sparse constant")
    if ctx.out_shape() != t.shape:
        raise ctx.error(f"output shape {list(ctx.out_shape())} differs from the sparse tensor's {list(t.shape)}")
    return densify(t.sparse, t.shape)


CONVERTERS: dict = {}

FOLDERS = {
    "DENSIFY": fold_densify,
}

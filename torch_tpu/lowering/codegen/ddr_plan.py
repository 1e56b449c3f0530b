"""DDR address assignment for a TPU graph: weights, IO tensors, activations with liveness-based reuse.

Layout of the program's DDR::

    [0, A)            region ``activation``: graph inputs and outputs (never reused), then intermediate
                      values packed first-fit by liveness: a value lives from its producer to its last
                      consumer; two values may share bytes iff their live ranges do not intersect. An op
                      that stages data in DDR gets ``scratch`` bytes that live during that op only.
    [A, A + W)        region ``weight``: every constant, 64-byte aligned, in the layout its kernel reads
                      (``context.WeightPacker``; the plan does not depend on it, so codegen is one pass)

Reshape-like ops (``tpu.reshape`` of a contiguous value) are aliases: the output is the same bytes as the
input, and the input's live range is extended to the alias's last use.

``footprint`` = bytes of the activation region actually used; ``naive`` = the sum of every value's bytes
(no reuse, no aliasing).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.fx as fx

from torch_tpu.cmodel.operands import DType, align_up

DDR_ALIGN = 64
#: TPU ops whose output is the same contiguous bytes as their first input.
ALIAS_OPS = ("reshape",)


def op_name(node: fx.Node) -> str:
    """``tpu.conv2d.default`` -> ``conv2d`` (empty for non-TPU call targets)."""
    t = node.target
    ns = getattr(t, "namespace", None)
    if ns != "tpu":
        return ""
    return t._schema.name.split("::")[-1]


def stable_name(node: fx.Node) -> str:
    """The node's stable name (``meta["stable_name"]``), else its fx name."""
    return node.meta.get("stable_name", node.name)


def cm_dtype(dtype: torch.dtype) -> DType:
    """The cmodel storage dtype of a TPU-graph dtype: bool masks are uint8 (0 / 1) and int64 indices int32
    (a Program takes and returns them so); every other dtype maps to itself."""
    if dtype == torch.bool:
        return DType.UINT8
    if dtype == torch.int64:
        return DType.INT32
    return DType.from_torch(dtype)


def value_nbytes(node: fx.Node) -> int:
    """Bytes of a node's tensor value in its cmodel dtype."""
    v = node.meta["val"]
    return math.prod(v.shape) * cm_dtype(v.dtype).size


@dataclasses.dataclass
class DdrPlan:
    """Where every activation value lives.

    Attributes:
        addr: fx node -> DDR byte address (absolute, inside the activation region).
        base: start of the activation region.
        size: bytes of the activation region (footprint, aligned).
        naive: sum of the aligned bytes of all values (no reuse).
        aliases: node -> the node whose bytes it shares.
        scratch: node -> DDR address of the scratch bytes its op asked for (live during the op only).
    """

    addr: dict[fx.Node, int]
    base: int
    size: int
    naive: int
    aliases: dict[fx.Node, fx.Node]
    scratch: dict[fx.Node, int] = dataclasses.field(default_factory=dict)

    def report(self) -> str:
        """One line: footprint vs naive sum."""
        saved = 1 - self.size / self.naive if self.naive else 0.0
        return (f"activation DDR: {self.size} bytes with reuse vs {self.naive} naive "
                f"({saved:.1%} saved, {len(self.aliases)} aliases)")


def plan_ddr(gm: fx.GraphModule, base: int, scratch: dict[fx.Node, int] | None = None) -> DdrPlan:
    """Assign DDR addresses to placeholders, outputs and intermediate values of ``gm``.

    Args:
        gm: a TPU graph (``torch.ops.tpu.*`` call_function nodes, get_attr constants).
        base: first byte of the activation region.
        scratch: bytes of DDR scratch per op node (placed apart from every value live during the op).
    """
    scratch = scratch or {}
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    out_node = nodes[-1]
    outputs = set(_flat_outputs(out_node))
    values = [n for n in nodes if n.op in ("placeholder", "call_function")]
    aliases: dict[fx.Node, fx.Node] = {}
    for n in values:
        if n.op == "call_function" and op_name(n) in ALIAS_OPS and n not in outputs:
            src = n.args[0]
            aliases[n] = aliases.get(src, src)
    root = lambda n: aliases.get(n, n)  # noqa: E731
    last_use: dict[fx.Node, int] = {}
    for n in values:
        end = max((order[u] for u in n.users), default=order[n])
        r = root(n)
        last_use[r] = max(last_use.get(r, order[r]), end)
    addr: dict[fx.Node, int] = {}
    cursor = 0
    naive = 0
    fixed = [n for n in values if n.op == "placeholder" or n in outputs]
    for n in fixed:  # IO tensors: never reused
        addr[n] = base + cursor
        cursor = align_up(cursor + value_nbytes(n), DDR_ALIGN)
    naive = cursor
    io_end = cursor
    live: list[tuple[int, int, int]] = []  # (offset, size, last_use) relative to io_end
    peak = 0
    scratch_addr: dict[fx.Node, int] = {}
    for n in values:
        live = [seg for seg in live if seg[2] >= order[n]]
        if n not in addr and n not in aliases:
            size = align_up(value_nbytes(n), DDR_ALIGN)
            naive += size
            off = _first_fit(live, size)
            live.append((off, size, last_use[n]))
            peak = max(peak, off + size)
            addr[n] = base + io_end + off
        if scratch.get(n, 0) > 0:  # live during n only: apart from n's inputs (live until n) and n itself
            size = align_up(scratch[n], DDR_ALIGN)
            off = _first_fit(live, size)
            live.append((off, size, order[n]))
            peak = max(peak, off + size)
            scratch_addr[n] = base + io_end + off
    for n, src in aliases.items():
        naive += align_up(value_nbytes(n), DDR_ALIGN)
        addr[n] = addr[src]
    return DdrPlan(addr, base, max(align_up(io_end + peak, DDR_ALIGN), DDR_ALIGN), naive, aliases, scratch_addr)


def _first_fit(live: list[tuple[int, int, int]], size: int) -> int:
    """Lowest offset where ``size`` bytes fit between the live segments."""
    off = 0
    for s, sz, _ in sorted(live):
        if off + size <= s:
            return off
        off = max(off, s + sz)
    return off


def _flat_outputs(out_node: fx.Node) -> list[fx.Node]:
    res: list[fx.Node] = []
    fx.node.map_arg(out_node.args, lambda n: res.append(n))
    return res


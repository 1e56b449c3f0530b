"""Permute sinking: move a layout permute below the elementwise ops that read it, so round trips meet.

Graphs imported from NHWC formats (TFLite) run every conv in NCHW between two permutes and everything
else in NHWC: ``conv -> permute(NHWC) -> add -> relu -> permute(NCHW) -> conv``. Each such permute is a
full DDR -> DDR copy on the chip. Sinking the NHWC permute below ``add`` and ``relu`` puts it next to the
NCHW one, and :func:`~torch_tpu.fx_passes.permute_reshape.cancel_permute_reshape` removes the pair.

Matches (``p`` one permutation; every tensor operand of the op is ``permute(x_i, p)`` of the same rank,
a constant, or a Python scalar; at least one permute operand is read only by ops this pass sinks
through, so it dies and the rewrite does not add a copy; no user of the op is a ``view``, which would need
the contiguous layout):
    * unary elementwise ops (relu, sigmoid, tanh, clamp, hardtanh, gelu, silu, hardswish, hardsigmoid,
      leaky_relu, elu, abs, neg, exp, log, sqrt, rsqrt, reciprocal, erf, ...);
    * binary elementwise ops (add/sub/mul/div/maximum/minimum/pow, Tensor and Scalar forms, where);
    * ``constant_pad_nd(permute(x, p), pad)``;
    * ``cat([permute(x_i, p) ...], d)``;
    * reductions that keep their dims (``mean.dim``, ``sum.dim_IntList``, ``amax``, ``amin``, keepdim).
Rewrites to: ``permute(op(x_1, ..., c'), p)`` where a constant ``c`` is broadcast to the rank and
    permuted by the inverse of ``p`` (``c' = c.reshape(1.. + c.shape).permute(p^-1)``); pad pairs, the
    cat dim and the reduced dims are mapped to the input's dims (output dim ``i`` is input dim ``p[i]``). The new permute takes
    the op's stable name (it holds the same tensor, in the same layout); the op on unpermuted operands is
    called ``<name>.unpermuted``.
Why valid: an elementwise op commutes with any permutation of its operands' dims (broadcasting included:
    permuting both operands' dims the same way permutes the broadcast result); padding dim ``i`` of
    ``permute(x, p)`` is padding dim ``p[i]`` of ``x``; concatenating along ``i`` after permuting is
    concatenating along ``p[i]`` before; reducing dim ``i`` with the dim kept is reducing dim ``p[i]``.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.fx_passes.graph_edit import GraphEditor
from torch_tpu.fx_passes.manager import PassResult
from torch_tpu.fx_passes.permute_reshape import cancel_permute_reshape
from torch_tpu.graph.names import stable_name

aten = torch.ops.aten

UNARY = frozenset({
    aten.relu.default, aten.sigmoid.default, aten.tanh.default, aten.clamp.default, aten.clamp_min.default,
    aten.clamp_max.default, aten.hardtanh.default, aten.gelu.default, aten.silu.default, aten.hardswish.default,
    aten.hardsigmoid.default, aten.leaky_relu.default, aten.elu.default, aten.abs.default, aten.neg.default,
    aten.exp.default, aten.log.default, aten.sqrt.default, aten.rsqrt.default, aten.reciprocal.default,
    aten.erf.default, aten.sign.default, aten.floor.default, aten.ceil.default, aten.round.default,
    aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar, aten.div.Scalar, aten.pow.Tensor_Scalar,
    aten._to_copy.default, aten.eq.Scalar, aten.ne.Scalar, aten.lt.Scalar, aten.le.Scalar, aten.gt.Scalar,
    aten.ge.Scalar,
})
BINARY = frozenset({
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.maximum.default,
    aten.minimum.default, aten.pow.Tensor_Tensor, aten.where.self, aten.eq.Tensor, aten.ne.Tensor,
    aten.lt.Tensor, aten.le.Tensor, aten.gt.Tensor, aten.ge.Tensor,
})


_NEEDS_CONTIGUOUS = frozenset({aten.view.default, aten._unsafe_view.default})
_REDUCE_OPS = frozenset({aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.amin.default})
_LAYOUT_OPS = frozenset({aten.constant_pad_nd.default, aten.cat.default}) | _REDUCE_OPS


def _permute_of(a: object) -> tuple[fx.Node, list[int]] | None:
    if isinstance(a, fx.Node) and a.op == "call_function" and a.target is aten.permute.default:
        rank = a.meta["val"].dim()
        return a.args[0], [d % rank for d in a.args[1]]
    return None


def _dies(perm: fx.Node) -> bool:
    """Every reader of ``perm`` is an op this pass sinks through, so the permute dies once they are sunk
    (``where(x >= 0, x, x * a)`` reads one permute three times)."""
    return all(u.op == "call_function" and (u.target in UNARY or u.target in BINARY or u.target in _LAYOUT_OPS)
               for u in perm.users)


def _users_take_any_strides(n: fx.Node) -> bool:
    """A permute is a strided view: users that need a contiguous input (``view``) must keep the op."""
    return not any(u.op == "call_function" and u.target in _NEEDS_CONTIGUOUS for u in n.users)


def _rewrite(ed: GraphEditor, n: fx.Node, target, args: tuple, perm: list[int], kwargs: dict | None = None) -> bool:
    """Replace ``n`` by ``permute(target(*args), perm)``; False (graph unchanged) if the op refuses the args."""
    inner = ed.try_call(target, args, dict(n.kwargs) if kwargs is None else kwargs, before=n,
                        name=f"{stable_name(n)}.unpermuted")
    if inner is None:
        return False
    ed.replace(n, ed.call(aten.permute.default, (inner, perm), before=n))
    return True


def _sink_elementwise(ed: GraphEditor, n: fx.Node) -> bool:
    rank = n.meta["val"].dim()
    perm: list[int] | None = None
    for a in n.args:
        pa = _permute_of(a)
        if pa is None:
            continue
        if perm is not None and pa[1] != perm:
            return False
        perm = pa[1]
    if perm is None or rank != len(perm):
        return False
    if not any(_permute_of(a) is not None and _dies(a) for a in n.args):
        return False         # no permute would die: sinking would add a copy
    inverse = [perm.index(i) for i in range(rank)]
    new_args = []
    for a in n.args:
        pa = _permute_of(a)
        if pa is not None:
            new_args.append(pa[0])
            continue
        if not isinstance(a, fx.Node):
            new_args.append(a)
            continue
        c = ed.const(a)
        if c is None or c.dim() > rank:
            return False     # a computed operand in the permuted layout: would need a permute of its own
        if c.dim() == 0:
            new_args.append(a)
            continue
        c = c.reshape((1,) * (rank - c.dim()) + tuple(c.shape)).permute(inverse)
        new_args.append(ed.add_constant(c, f"{stable_name(a)}.unpermuted", before=n))
    return _rewrite(ed, n, n.target, tuple(new_args), perm)


def _sink_pad(ed: GraphEditor, n: fx.Node) -> bool:
    pa = _permute_of(n.args[0])
    if pa is None or not _dies(n.args[0]):
        return False
    x, perm = pa
    rank = len(perm)
    pads = list(n.args[1])
    per_dim = [(0, 0)] * rank          # (before, after) per output dim; the pad list starts at the last dim
    for k in range(len(pads) // 2):
        per_dim[rank - 1 - k] = (pads[2 * k], pads[2 * k + 1])
    x_dim = [(0, 0)] * rank
    for i in range(rank):
        x_dim[perm[i]] = per_dim[i]
    new = []
    for d in reversed(range(rank)):
        new += list(x_dim[d])
    while len(new) > 2 and new[-2:] == [0, 0]:
        new = new[:-2]
    return _rewrite(ed, n, n.target, (x, new, *n.args[2:]), perm)


def _sink_reduce(ed: GraphEditor, n: fx.Node) -> bool:
    pa = _permute_of(n.args[0])
    keepdim = n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False)
    if pa is None or not keepdim or len(n.args) < 2 or not _dies(n.args[0]):
        return False
    x, perm = pa
    dims = [perm[d % len(perm)] for d in n.args[1]]
    return _rewrite(ed, n, n.target, (x, dims, *n.args[2:]), perm)


def _sink_cat(ed: GraphEditor, n: fx.Node) -> bool:
    items = list(n.args[0])
    parts = [_permute_of(a) for a in items]
    if not parts or any(p is None for p in parts) or any(p[1] != parts[0][1] for p in parts):
        return False
    if not any(_dies(a) for a in items):
        return False
    perm = parts[0][1]
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    dim %= len(perm)
    return _rewrite(ed, n, aten.cat.default, ([p[0] for p in parts], perm[dim]), perm, kwargs={})


#: sink + cancel rounds at most (each round only removes permutes; real graphs settle in 2-3)
MAX_ROUNDS = 8


def sink_permutes(gm: fx.GraphModule) -> PassResult:
    """Move permutes below the elementwise / pad / cat ops that read them, and cancel the round trips
    that meet, until nothing changes (see the module docstring).

    Example:
        >>> sink_permutes(gm).modified     # relu(permute(x)) -> permute(relu(x))   # doctest: +SKIP
        True
    """
    modified = False
    for _ in range(MAX_ROUNDS):
        sunk = _sink_once(gm).modified
        cancelled = cancel_permute_reshape(gm).modified
        if not (sunk or cancelled):
            break
        modified = True
    return PassResult(gm, modified)


def _sink_once(gm: fx.GraphModule) -> PassResult:
    ed = GraphEditor(gm)
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or getattr(n, "_erased", False) or not isinstance(n.meta.get("val"), torch.Tensor):
            continue
        if not _users_take_any_strides(n):
            continue
        if n.target in UNARY or n.target in BINARY:
            _sink_elementwise(ed, n)
        elif n.target is aten.constant_pad_nd.default:
            _sink_pad(ed, n)
        elif n.target is aten.cat.default:
            _sink_cat(ed, n)
        elif n.target in _REDUCE_OPS:
            _sink_reduce(ed, n)
    return ed.finish()

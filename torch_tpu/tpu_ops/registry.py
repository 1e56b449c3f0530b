"""The one place where the TPU op set is registered with ``torch.library``.

Each family module (conv, matmul, eltwise, activation, pool, reduce, norm, shape, cast and the INT8
families int8_mac, int8_eltwise, int8_pool) lists its ops as
:class:`~torch_tpu.tpu_ops._common.OpDef` records in ``OPS``; :func:`define_all` turns every record into a
``torch.library.custom_op("tpu::<name>", mutates_args=())`` with its fake implementation. Names are
unique across families (a duplicate is an error at registration).

Example:
    >>> from torch_tpu.tpu_ops import define_all
    >>> ops = define_all()
    >>> ops["relu"] is torch.ops.tpu.relu.default
    True
"""

from __future__ import annotations

import torch

from torch_tpu.errors import TorchTpuError
from torch_tpu.tpu_ops import (activation, cast, conv, eltwise, int8_eltwise, int8_mac, int8_pool, matmul, norm, pool,
                               reduce, shape)
from torch_tpu.tpu_ops._common import OpDef

NAMESPACE = "tpu"
FAMILIES = (conv, matmul, eltwise, activation, pool, reduce, norm, shape, cast, int8_mac, int8_eltwise, int8_pool)

_DEFINED: dict[str, torch._ops.OpOverload] = {}


def op_defs() -> dict[str, OpDef]:
    """Every op record by name, refusing duplicates."""
    out: dict[str, OpDef] = {}
    for fam in FAMILIES:
        for d in fam.OPS:
            if d.name in out:
                raise TorchTpuError(f"tpu_ops/{fam.__name__.rsplit('.', 1)[-1]}.py: op tpu::{d.name} is defined twice")
            out[d.name] = d
    return out


def define_all() -> dict[str, torch._ops.OpOverload]:
    """Register every TPU op (idempotent); return ``{name: torch.ops.tpu.<name>.default}``."""
    if _DEFINED:
        return dict(_DEFINED)
    for name, d in op_defs().items():
        op = torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=())(d.impl)
        op.register_fake(d.fake)
        _DEFINED[name] = getattr(getattr(torch.ops, NAMESPACE), name).default
    return dict(_DEFINED)


def tpu_op(name: str) -> torch._ops.OpOverload:
    """``torch.ops.tpu.<name>.default``, with a precise error for an unknown name."""
    ops = define_all()
    try:
        return ops[name]
    except KeyError:
        raise TorchTpuError(f"tpu_ops: no op tpu::{name} (known: {', '.join(sorted(ops))})") from None


def is_tpu_op(target) -> bool:
    """True for ``torch.ops.tpu.*`` overloads."""
    return isinstance(target, torch._ops.OpOverload) and target.namespace == NAMESPACE

"""Lowering rules, one module per op family; :func:`default_table` is the one place they are registered.

Each family module has a ``register(table)`` function that adds its rules; nothing registers on import.
"""

from __future__ import annotations

import functools

from torch_tpu.lowering.registry import RuleTable
from torch_tpu.lowering.rules import (activation, conv, eltwise, int8_eltwise, int8_mac, int8_pool, matmul, norm, pool,
                                     reduce, shape)

#: float families, then the INT8 families (their rules are registered for precision ``int8`` only).
FAMILIES = (conv, matmul, eltwise, activation, pool, reduce, norm, shape, int8_mac, int8_eltwise, int8_pool)


def build_table() -> RuleTable:
    """A fresh table with every family's rules (duplicates across families are an error)."""
    table = RuleTable()
    for family in FAMILIES:
        family.register(table)
    return table


@functools.lru_cache(maxsize=1)
def default_table() -> RuleTable:
    """The shared default rule table (built once)."""
    return build_table()

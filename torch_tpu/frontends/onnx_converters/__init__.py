"""Converters torch_tpu adds to onnx2torch's registry, one module per op family.

Every converter is listed in :data:`CONVERTER_MODULES` and registered by :func:`register_all`, which
``load_onnx`` calls; it is idempotent. onnx2torch's registry is keyed by (domain, op type, since-version)
and refuses duplicates, so a row that onnx2torch already has is an error here too (caught by a test).
"""

from __future__ import annotations

from typing import Callable

from onnx import defs
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter

from torch_tpu.errors import ConfigError
from torch_tpu.frontends.onnx_converters import pad, reduce, resize, split, versions

ConverterRow = tuple[str, int, Callable]

_registered: dict[OperationDescription, Callable] = {}


def converter_rows() -> list[ConverterRow]:
    """All ``(op type, since-version, converter)`` rows torch_tpu adds, in registration order."""
    return [*reduce.CONVERTERS, *pad.CONVERTERS, *split.CONVERTERS, *resize.CONVERTERS, *versions.converters()]


def register_all() -> list[OperationDescription]:
    """Register every torch_tpu converter with onnx2torch once; return the descriptions registered.

    Raises:
        ConfigError: a row duplicates a converter onnx2torch (or another row) already has.
    """
    if _registered:
        return list(_registered)
    rows = converter_rows()
    seen: set[OperationDescription] = set()
    for op, version, fn in rows:
        key = OperationDescription(domain=defs.ONNX_DOMAIN, operation_type=op, version=version)
        if key in seen or key in _CONVERTER_REGISTRY:
            raise ConfigError(f"onnx_converters: converter for {op}-{version} already registered "
                              f"({'twice in torch_tpu' if key in seen else 'by onnx2torch'}); remove the row")
        seen.add(key)
    for op, version, fn in rows:
        add_converter(operation_type=op, version=version)(fn)
        _registered[OperationDescription(domain=defs.ONNX_DOMAIN, operation_type=op, version=version)] = fn
    return list(_registered)


def registered_ops() -> dict[tuple[str, str], list[int]]:
    """``{(domain, op type): [since-versions]}`` of every converter available after :func:`register_all`."""
    register_all()
    table: dict[tuple[str, str], list[int]] = {}
    for key in _CONVERTER_REGISTRY:
        table.setdefault((key.domain, key.operation_type), []).append(key.version)
    return {k: sorted(v) for k, v in sorted(table.items())}


def added_by_torch_tpu() -> set[tuple[str, int]]:
    """``{(op type, version)}`` of the converters this package adds."""
    register_all()
    return {(k.operation_type, k.version) for k in _registered}

"""The converter table: TFLite op name -> converter function, built in one explicit place.

Each op-family module (``ops/conv.py`` ...) exposes a ``CONVERTERS`` dict; :func:`build_registry` merges
them and refuses an op claimed twice. A miss is an :class:`~torch_tpu.errors.UnsupportedOpError` naming
the file, the operator (index and output tensor) and the op.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from torch_tpu.errors import TorchTpuError, UnsupportedOpError
from torch_tpu.frontends.tflite.context import OpContext, OpFn
from torch_tpu.frontends.tflite.ops import activation, conv, elementwise, pool, quant, reduce, resize, shape, sparse

Converter = Callable[[OpContext], OpFn]


class ConverterRegistry:
    """A table of converters keyed by TFLite op name (``CONV_2D``, ``CUSTOM:<code>``)."""

    def __init__(self) -> None:
        self._table: dict[str, tuple[Converter, str]] = {}

    def register(self, op: str, fn: Converter, family: str) -> None:
        """Add ``fn`` for ``op``; an op registered twice is refused."""
        if op in self._table:
            raise TorchTpuError(f"tflite converter for {op} registered twice: by {self._table[op][1]} and {family}")
        self._table[op] = (fn, family)

    def register_table(self, table: Mapping[str, Converter], family: str) -> None:
        for op, fn in table.items():
            self.register(op, fn, family)

    def lookup(self, op: str, *, name: str, location: str) -> Converter:
        """The converter for ``op``, or an UnsupportedOpError naming the operator and file."""
        if op not in self._table:
            raise UnsupportedOpError(op, name=name, where="tflite", location=location,
                                     reason="no converter for this TFLite op")
        return self._table[op][0]

    def ops(self) -> dict[str, str]:
        """op name -> family module, sorted by op name."""
        return {op: fam for op, (_, fam) in sorted(self._table.items())}

    def __contains__(self, op: str) -> bool:
        return op in self._table


def build_registry(families: Iterable = (conv, pool, elementwise, activation, shape, reduce, resize,
                                         quant)) -> ConverterRegistry:
    """Merge the op families' ``CONVERTERS`` tables (refusing duplicates)."""
    reg = ConverterRegistry()
    for module in families:
        reg.register_table(module.CONVERTERS, module.__name__.rsplit(".", 1)[-1])
    return reg


REGISTRY = build_registry()

#: ops evaluated at import when all their inputs are constants (weight DEQUANTIZE, DENSIFY).
FOLDERS: dict[str, Callable] = {**quant.FOLDERS, **sparse.FOLDERS}


def supported_ops() -> dict[str, str]:
    """Every TFLite op the importer converts, mapped to its family (for the docs table).

    >>> supported_ops()["CONV_2D"]
    'conv'
    """
    return REGISTRY.ops()

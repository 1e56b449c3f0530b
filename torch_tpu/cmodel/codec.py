"""Encoding of instructions as JSON-able dicts (no pickle), the form Program files store.

``encode(inst)`` gives ``{"opcode": ..., field: value, ...}`` with operands as
``{"L": [lane, addr, shape, dtype]}`` (local) or ``{"D": [addr, shape, strides, dtype]}`` (DDR);
``decode`` checks the opcode, the field names and every field's type against the instruction's
annotations, and raises :class:`ProgramError` naming the instruction and the field.

Example:
    >>> from torch_tpu.cmodel import isa
    >>> from torch_tpu.cmodel.operands import DType, LocalTensor
    >>> t = LocalTensor(0, 0, (1, 8, 4, 4), DType.F32)
    >>> inst = isa.Activation(id=3, deps=(2,), layer="relu1", op="relu", x=t, out=t)
    >>> decode(encode(inst)) == inst
    True
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from torch_tpu.cmodel.isa import OPCODES, Instruction
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor, Shape4
from torch_tpu.errors import ProgramError


def _enc(value: Any) -> Any:
    if isinstance(value, LocalTensor):
        return {"L": [value.lane, value.addr, list(value.shape), value.dtype.label]}
    if isinstance(value, DdrTensor):
        return {"D": [value.addr, list(value.shape), list(value.strides), value.dtype.label]}
    if isinstance(value, tuple):
        return [_enc(v) for v in value]
    return value


def encode(inst: Instruction) -> dict[str, Any]:
    """Instruction -> JSON-able dict ``{"opcode": opcode, field: value, ...}``."""
    out: dict[str, Any] = {"opcode": inst.OPCODE}
    for f in dataclasses.fields(inst):
        out[f.name] = _enc(getattr(inst, f.name))
    return out


def _dec(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is LocalTensor or hint is DdrTensor:
        key = "L" if hint is LocalTensor else "D"
        if not (isinstance(value, dict) and list(value) == [key] and isinstance(value[key], list)):
            raise ProgramError(f"{where}: expected a {hint.__name__} {{'{key}': [...]}}, got {value!r}")
        raw = value[key]
        if len(raw) != 4:
            raise ProgramError(f"{where}: {hint.__name__} needs 4 entries, got {raw!r}")
        try:
            dtype = DType.parse(raw[3])
        except ProgramError as e:
            raise ProgramError(f"{where}: {e}") from None
        if hint is LocalTensor:
            return LocalTensor(_dec(raw[0], int, where), _dec(raw[1], int, where), _dec(raw[2], Shape4, where), dtype)
        return DdrTensor(_dec(raw[0], int, where), _dec(raw[1], Shape4, where), _dec(raw[2], Shape4, where), dtype)
    if origin is tuple:
        if not isinstance(value, list):
            raise ProgramError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_dec(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ProgramError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_dec(v, a, where) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ProgramError(f"{where}: expected a boolean, got {value!r}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProgramError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ProgramError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ProgramError(f"{where}: expected a string, got {value!r}")
        return value
    raise ProgramError(f"{where}: cannot decode a value of type {hint}")


_HINTS: dict[type, dict[str, Any]] = {}


def decode(data: dict[str, Any]) -> Instruction:
    """JSON-able dict -> Instruction; unknown opcodes, missing/extra fields and bad types are ProgramErrors."""
    if not isinstance(data, dict) or "opcode" not in data:
        raise ProgramError(f"an instruction must be an object with an 'opcode', got {str(data)[:80]!r}")
    op = data["opcode"]
    where = f"instruction {data.get('id', '?')} ({op})"
    cls = OPCODES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProgramError(f"{where}: unknown opcode {op!r} (known: {', '.join(OPCODES)})")
    hints = _HINTS.get(cls) or _HINTS.setdefault(cls, typing.get_type_hints(cls))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = sorted(set(data) - set(fields) - {"opcode"})
    if extra:
        raise ProgramError(f"{where}: unknown field(s) {', '.join(extra)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise ProgramError(f"{where}: missing field '{name}'")
            continue
        kwargs[name] = _dec(data[name], hints[name], f"{where}: field '{name}'")
    return cls(**kwargs)


def dumps(instructions: list[Instruction]) -> str:
    """Instructions as compact JSON text (one list)."""
    return json.dumps([encode(i) for i in instructions], separators=(",", ":"))


def loads(text: str) -> list[Instruction]:
    """Inverse of :func:`dumps`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProgramError(f"instruction list is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise ProgramError("instruction list must be a JSON list")
    return [decode(d) for d in data]

"""Calibration tables and qtables in TPU-MLIR's text formats (read, write, exact round trip).

Calibration table (``run_calibration``'s output)::

    # genetated time: 2026-11-25 16:30:00.123456
    # method: kl
    # histogram number: 2048
    # sample number: 100
    # tune number: 5
    ###
    # op_name    threshold    min    max
    x 2.9871 -3.0122 2.9871
    conv1 4.1 -5.2 6.3

Header comments are ``# key: value`` lines (TPU-MLIR's spelling ``genetated`` is kept so its tools read
ours); every other non-empty, non-comment line is ``op_name threshold min max`` with floats written by
``repr`` (shortest exact form), so ``save`` then ``load`` gives back bit-identical floats. Op names are
stable names and may not contain whitespace.

QTable (mixed precision)::

    # op_name quantize_mode
    layer1.0.conv1 F32
    fc BF16

Errors (:class:`TableError`) name the file and the line.

Example:
    >>> t = CalibrationTable({"x": CalibrationEntry(1.5, -1.5, 1.25)}, method="max")
    >>> CalibrationTable.from_text(t.to_text()) == t
    True
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
from pathlib import Path
from typing import Iterator, Mapping

from torch_tpu.errors import TableError

QTABLE_MODES = ("F32", "BF16", "F16", "INT8")
_HEADER_KEYS = {"method": "method", "histogram number": "histogram_bins", "sample number": "sample_number",
                "tune number": "tune_number", "genetated time": "generated", "generated time": "generated"}


# TableError is defined with every other error in torch_tpu.errors.


def _where(path: str, line_no: int | None) -> str:
    return f"{path}:{line_no}" if line_no is not None else path


def _check_name(name: str, path: str, line_no: int | None = None) -> None:
    if not name or re.search(r"\s", name) or name.startswith("#"):
        raise TableError(f"{_where(path, line_no)}: op name {name!r} is empty, starts with '#' or contains whitespace")


@dataclasses.dataclass(frozen=True)
class CalibrationEntry:
    """One tensor's calibration: symmetric ``threshold`` (``scale = threshold / 127``) and its observed range."""

    threshold: float
    min: float
    max: float


class CalibrationTable:
    """``{stable_name: CalibrationEntry}`` plus the header facts of the run that produced it.

    Attributes:
        entries: per tensor, in graph order.
        method: the threshold method (``kl``, ``max``, ``percentile``, ``mse``, ``search``; ``+tune`` suffix
            is not used: ``tune_number`` says whether tuning ran).
        histogram_bins, sample_number, tune_number: as in TPU-MLIR's header.
        generated: the header's time stamp (kept verbatim on load).
    """

    def __init__(self, entries: Mapping[str, CalibrationEntry] | None = None, *, method: str = "kl",
                 histogram_bins: int = 2048, sample_number: int = 0, tune_number: int = 0,
                 generated: str | None = None):
        self.entries: dict[str, CalibrationEntry] = dict(entries or {})
        self.method = method
        self.histogram_bins = histogram_bins
        self.sample_number = sample_number
        self.tune_number = tune_number
        self.generated = generated

    # -- mapping -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> CalibrationEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise TableError(f"calibration table has no entry for tensor '{name}' "
                             f"({len(self.entries)} entries)") from None

    def __setitem__(self, name: str, entry: CalibrationEntry) -> None:
        self.entries[name] = entry

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def items(self):
        return self.entries.items()

    def threshold(self, name: str) -> float:
        return self[name].threshold

    def thresholds(self) -> dict[str, float]:
        """``{stable_name: threshold}`` for every entry."""
        return {k: e.threshold for k, e in self.entries.items()}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CalibrationTable) and self.entries == other.entries
                and list(self.entries) == list(other.entries) and self.method == other.method
                and self.histogram_bins == other.histogram_bins and self.sample_number == other.sample_number
                and self.tune_number == other.tune_number)

    def __repr__(self) -> str:
        return (f"CalibrationTable({len(self.entries)} tensors, method={self.method}, "
                f"samples={self.sample_number}, tune={self.tune_number})")

    # -- text ----------------------------------------------------------------------------------
    def to_text(self) -> str:
        """The table in TPU-MLIR's format (module doc)."""
        stamp = self.generated or datetime.datetime.now().isoformat(sep=" ")
        lines = [f"# genetated time: {stamp}", f"# method: {self.method}",
                 f"# histogram number: {self.histogram_bins}", f"# sample number: {self.sample_number}",
                 f"# tune number: {self.tune_number}", "###", "# op_name    threshold    min    max"]
        for name, e in self.entries.items():
            _check_name(name, "<calibration table>")
            for v in (e.threshold, e.min, e.max):
                if not math.isfinite(v):
                    raise TableError(f"<calibration table>: tensor '{name}' has a non-finite value {v}")
            lines.append(f"{name} {float(e.threshold)!r} {float(e.min)!r} {float(e.max)!r}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str, path: str = "<string>") -> "CalibrationTable":
        header: dict[str, str] = {}
        entries: dict[str, CalibrationEntry] = {}
        for line_no, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                m = re.match(r"#\s*([A-Za-z_ ]+?)\s*:\s*(.*)$", line)
                if m and m.group(1).lower() in _HEADER_KEYS:
                    header[_HEADER_KEYS[m.group(1).lower()]] = m.group(2).strip()
                continue
            fields = line.split()
            if len(fields) != 4:
                raise TableError(f"{path}:{line_no}: expected 'op_name threshold min max', got {len(fields)} "
                                 f"field(s): {line!r}")
            name = fields[0]
            try:
                th, lo, hi = (float(f) for f in fields[1:])
            except ValueError:
                raise TableError(f"{path}:{line_no}: tensor '{name}': threshold/min/max must be numbers: "
                                 f"{line!r}") from None
            if not all(math.isfinite(v) for v in (th, lo, hi)):
                raise TableError(f"{path}:{line_no}: tensor '{name}': non-finite value in {line!r}")
            if th < 0:
                raise TableError(f"{path}:{line_no}: tensor '{name}': negative threshold {th}")
            if name in entries:
                raise TableError(f"{path}:{line_no}: tensor '{name}' appears twice")
            entries[name] = CalibrationEntry(th, lo, hi)

        def _int(key: str, default: int) -> int:
            try:
                return int(header.get(key, default))
            except ValueError:
                raise TableError(f"{path}: header '{key}' is not an integer: {header[key]!r}") from None

        return cls(entries, method=header.get("method", "kl"), histogram_bins=_int("histogram_bins", 2048),
                   sample_number=_int("sample_number", 0), tune_number=_int("tune_number", 0),
                   generated=header.get("generated"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as text; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_text()
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationTable":
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise TableError(f"{path}: cannot read calibration table ({e})") from None
        return cls.from_text(text, str(path))


class QTable:
    """Per-layer precision for mixed precision: ``{stable_name: MODE}``, MODE in F32/BF16/F16/INT8.

    Example:
        >>> q = QTable({"fc": "bf16"})
        >>> q["fc"], QTable.from_text(q.to_text()) == q
        ('BF16', True)
    """

    def __init__(self, modes: Mapping[str, str] | None = None):
        self.modes: dict[str, str] = {}
        for name, mode in (modes or {}).items():
            self[name] = mode

    @staticmethod
    def _mode(mode: str, where: str) -> str:
        m = str(mode).upper()
        if m not in QTABLE_MODES:
            raise TableError(f"{where}: unknown quantize mode {mode!r} (choose one of {', '.join(QTABLE_MODES)})")
        return m

    def __setitem__(self, name: str, mode: str) -> None:
        _check_name(name, "<qtable>")
        self.modes[name] = self._mode(mode, f"<qtable> '{name}'")

    def __getitem__(self, name: str) -> str:
        try:
            return self.modes[name]
        except KeyError:
            raise TableError(f"qtable has no entry for '{name}'") from None

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.modes.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self.modes

    def __iter__(self) -> Iterator[str]:
        return iter(self.modes)

    def __len__(self) -> int:
        return len(self.modes)

    def items(self):
        return self.modes.items()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QTable) and list(self.modes.items()) == list(other.modes.items())

    def __repr__(self) -> str:
        return f"QTable({self.modes})"

    def to_text(self) -> str:
        lines = ["# op_name quantize_mode"] + [f"{n} {m}" for n, m in self.modes.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str, path: str = "<string>") -> "QTable":
        out = cls()
        for line_no, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                raise TableError(f"{path}:{line_no}: expected 'op_name MODE', got {line!r}")
            name, mode = fields
            if name in out.modes:
                raise TableError(f"{path}:{line_no}: '{name}' appears twice")
            out.modes[name] = cls._mode(mode, f"{path}:{line_no}")
        return out

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_text())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QTable":
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise TableError(f"{path}: cannot read qtable ({e})") from None
        return cls.from_text(text, str(path))

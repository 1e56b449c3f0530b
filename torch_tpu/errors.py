"""Every error torch_tpu raises on purpose derives from :class:`TorchTpuError`.

User-facing conditions (bad model files, ops a target cannot run, failed stage checks, corrupt
programs) are reported with these types and a message that names the file, the node (stable name),
the op and the source location where they are known. ``assert`` is kept for internal invariants.
"""

from __future__ import annotations


class TorchTpuError(Exception):
    """Root of all torch_tpu errors."""


class UnsupportedOpError(TorchTpuError):
    """An op that a frontend, pass or lowering rule cannot handle.

    Attributes:
        op: the op (``aten.convolution.default``, ``Conv`` ...).
        name: the stable name of the node, if known.
        where: ``"onnx"``, ``"lowering[bm1684x/f32]"`` ... — which stage refused it.
        location: file and line (the model file, or the Python source line of the node).
    """

    def __init__(self, op: str, *, name: str | None = None, where: str = "", location: str | None = None,
                 reason: str = ""):
        self.op, self.name, self.where, self.location, self.reason = op, name, where, location, reason
        parts = [f"{where + ': ' if where else ''}unsupported op {op}"]
        if name:
            parts.append(f"at node '{name}'")
        if reason:
            parts.append(f"({reason})")
        if location:
            parts.append(f"[{location}]")
        super().__init__(" ".join(parts))


class ModelFormatError(TorchTpuError):
    """A model file that cannot be read: truncated, corrupt, wrong schema, unknown attribute."""

    def __init__(self, path: str, message: str, *, node: str | None = None, op: str | None = None):
        self.path, self.node, self.op = path, node, op
        where = path
        if node:
            where += f", node '{node}'"
        if op:
            where += f", op {op}"
        super().__init__(f"{where}: {message}")


class VerificationError(TorchTpuError):
    """A stage check failed: a graph invariant, or a tensor comparison below tolerance."""


class ProgramError(TorchTpuError):
    """A Program (.tpu) file or an instruction that is invalid: version, sizes, address ranges."""


class TargetError(TorchTpuError):
    """A target asked for something it does not have (unknown preset, unsupported precision)."""


class ConfigError(TorchTpuError):
    """An option that is unknown or has a bad value."""


class FixedPointError(TorchTpuError):
    """A fixed-point parameter that cannot be represented (negative scale, shift out of range, bad mode)."""


class CalibrationError(TorchTpuError):
    """Calibration could not proceed: bad data, non-finite values, mismatched observers, bad method."""


class MixedPrecisionError(CalibrationError):
    """A mixed-precision search that cannot run (bad arguments, names not in the graph, no samples)."""


class TableError(TorchTpuError):
    """A calibration table or qtable that cannot be read or written (names the file and line)."""


class QuantizationError(TorchTpuError):
    """A tensor that cannot be quantized (no calibration entry, a bad qtable mode), naming node and op."""

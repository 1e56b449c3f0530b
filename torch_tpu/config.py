"""Options and defaults, in one place.

Every face (``torch.compile(..., options=...)``, the Python API, the ``torch-tpu`` command) builds a
:class:`CompileOptions`; nothing else reads environment variables for behaviour.

Example:
    >>> CompileOptions.from_dict({"target": "bm1688", "precision": "bf16"}).precision
    'bf16'
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from torch_tpu.errors import ConfigError

CMODEL_CHOICES = ("auto", "c", "triton", "reference", "none")


def _default_cache_dir() -> Path:
    base = os.environ.get("TORCH_TPU_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_tpu")
    return Path(base)


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """What to compile for and how.

    Attributes:
        target: a preset name (``bm1684x``, ``bm1688``, ``cv183x``).
        precision: ``f32``, ``bf16``, ``f16`` or ``int8``.
        calibration_table: path or :class:`~torch_tpu.quant.CalibrationTable` (INT8).
        qtable: path, QTable or ``{stable_name: "F32"|"BF16"|"F16"|"INT8"}`` (mixed precision).
        asymmetric: INT8 activations with zero points (default symmetric).
        dump_dir: write the graph after every stage/pass there, numbered.
        cmodel: which kernels run the compiled Programs on the cmodel (``auto`` picks the fastest available:
            C, else the torch reference kernels); ``none`` runs the TPU graphs with the ``torch.ops.tpu``
            reference ops instead of generating Programs (faster to run, no DDR/local-memory model).
        fallback: let ops the target cannot run execute in eager PyTorch (the torch.compile backend);
            when False such an op is an error.
        check: run the invariant checkers between passes (slower; tests turn it on).
        cache: use the on-disk compile cache.
        cache_dir: where that cache lives.
        verbose: print fallback and stage reports.
    """

    target: str = "bm1684x"
    precision: str = "f32"
    calibration_table: Any = None
    qtable: Any = None
    asymmetric: bool = False
    dump_dir: str | None = None
    cmodel: str = "auto"
    fallback: bool = True
    check: bool = False
    cache: bool = True
    cache_dir: Path = dataclasses.field(default_factory=_default_cache_dir)
    verbose: bool = True

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> "CompileOptions":
        options = dict(options or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if "cmodel" in options and options["cmodel"] not in CMODEL_CHOICES:
            raise ConfigError(f"option cmodel={options['cmodel']!r}: choose one of {', '.join(CMODEL_CHOICES)}")
        if "cache_dir" in options:
            options["cache_dir"] = Path(options["cache_dir"])
        return cls(**options)

    def replace(self, **changes: Any) -> "CompileOptions":
        return dataclasses.replace(self, **changes)


#: Default (min cosine, min Euclidean similarity) of a stage against the one before, by precision.
#: f32 must match to rounding; bf16 keeps 8 mantissa bits, f16 11; int8 follows TPU-MLIR's usual 0.99/0.90
#: at the output, looser per layer.
STAGE_TOLERANCE: dict[str, tuple[float, float]] = {
    "f32": (0.99999, 0.999),
    "f16": (0.999, 0.95),
    "bf16": (0.99, 0.85),
    "int8": (0.98, 0.80),
}

#: (min cosine, min Euclidean similarity) of each op's result on the cmodel against the TPU graph's reference
#: op run on the same (probed) inputs: the same arithmetic, so only summation order (f32) and a last-place
#: rounding of the stored dtype (bf16 8 bits, f16 11 bits) may differ. Integer tensors must be equal.
CMODEL_TOLERANCE: dict[str, tuple[float, float]] = {
    "f32": (0.999999, 0.9999),
    "f16": (0.99999, 0.999),
    "bf16": (0.9999, 0.99),
    "int8": (0.999999, 0.9999),
}

#: The same, end to end (the cmodel's outputs vs the TPU graph's): a last-place difference of one op is
#: the next op's input difference, so in bf16 they compound with depth (resnet50 at 224: 0.99995 / 0.9897
#: at layer3.2 when chained, every op within one rounding step when run on its own inputs).
CMODEL_CHAIN_TOLERANCE: dict[str, tuple[float, float]] = {
    "f32": (0.999999, 0.9999),
    "f16": (0.99995, 0.995),
    "bf16": (0.9995, 0.97),
    "int8": (0.999999, 0.9999),
}

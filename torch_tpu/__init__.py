"""torch_tpu: a TPU-MLIR-style NPU compiler on PyTorch's own stack.

Levels: source model -> TOP graph (core ATen FX, stable names) -> fx_passes -> TPU graph
(``torch.ops.tpu.*`` for one target and precision) -> Program -> cmodel. See docs/architecture.md.

Example:
    >>> import torch, torchvision, torch_tpu
    >>> model = torchvision.models.resnet18().eval()
    >>> fast = torch.compile(model, backend="tpu", options={"target": "bm1684x", "precision": "bf16"})

The public names below are imported on first use, so ``import torch_tpu.graph`` (or the dynamo entry
point) does not pull in every level.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "transform": "torch_tpu.api",
    "compare": "torch_tpu.api",
    "compile": "torch_tpu.api",
    "calibrate": "torch_tpu.api",
    "round_weights": "torch_tpu.api",
    "deploy": "torch_tpu.api",
    "run": "torch_tpu.api",
    "CompileOptions": "torch_tpu.config",
    "TopGraph": "torch_tpu.graph.top",
    "load_top": "torch_tpu.graph.top",
    "Target": "torch_tpu.targets",
    "get_target": "torch_tpu.targets",
    "errors": "torch_tpu.errors",
    "targets": "torch_tpu.targets",
}


def __getattr__(name: str) -> Any:
    if name == "load":
        name = "load_top"
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if module.__name__.endswith("." + name) else getattr(module, name)
    raise AttributeError(f"module 'torch_tpu' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY) + ["load"])


__all__ = sorted(list(_LAZY) + ["load"])

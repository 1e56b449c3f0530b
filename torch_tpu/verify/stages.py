"""Reference values for stage checks: every nn.Module output of an eager run, by module path.

The TOP graph names a module's output value by the module path (``layer1.0.bn1``), and a module called a
second time ``<path>_1`` — so eager module outputs compare with TOP values by name, tensor by tensor.

Example:
    >>> ref = module_outputs(model, (x,))                        # doctest: +SKIP
    >>> compare(ref, top.named_values(x), names=[n for n in ref if n in top_vals])   # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import torch


def module_outputs(model: torch.nn.Module, inputs: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Run ``model`` eagerly and return each submodule's tensor output keyed by module path."""
    values: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = defaultdict(int)
    handles = []

    def hook_for(path: str):
        def hook(_mod, _inp, out):
            k = calls[path]
            calls[path] += 1
            if isinstance(out, torch.Tensor):
                values[path if k == 0 else f"{path}_{k}"] = out.detach().clone()
        return hook

    for path, mod in model.named_modules():
        if path:
            handles.append(mod.register_forward_hook(hook_for(path)))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return values

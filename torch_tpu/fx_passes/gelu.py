"""GELU recognition (erf and tanh forms).

Matches (any operand order and arithmetic form, see :mod:`.activation_match`):
    erf form:  ``0.5 * x * (1 + erf(x / sqrt(2)))``
    tanh form: ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x ** 3)))``
Rewrites to: ``aten.gelu(x)`` or ``aten.gelu(x, approximate="tanh")``, with the stable name of the
    output node.
Why valid: these are the definitions of ``aten.gelu`` with ``approximate="none"`` and ``"tanh"``;
    coefficients written with fewer digits (0.7071, 0.79788) match within 1e-4 relative, which changes
    the output by less than that relative error.
"""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from torch_tpu.fx_passes.activation_match import ActivationPattern, first_arg, rewrite_activations
from torch_tpu.fx_passes.manager import PassResult

aten = torch.ops.aten

_K = math.sqrt(2.0 / math.pi)
_HALF_X_ONE_PLUS_T = {(1, 0): 0.5, (1, 1): 0.5}

PATTERNS = (
    ActivationPattern("gelu-erf", first_arg(aten.erf.default), {(1, 0): 1.0 / math.sqrt(2.0)},
                      _HALF_X_ONE_PLUS_T, aten.gelu.default),
    ActivationPattern("gelu-tanh", first_arg(aten.tanh.default), {(1, 0): _K, (3, 0): _K * 0.044715},
                      _HALF_X_ONE_PLUS_T, aten.gelu.default, {"approximate": "tanh"}),
)


def recognize_gelu(gm: fx.GraphModule) -> PassResult:
    """Turn decomposed GELU (erf or tanh form) into ``aten.gelu``.

    Example:
        >>> recognize_gelu(gm).modified      # 0.5*x*(1+erf(x/sqrt(2))) -> gelu(x)   # doctest: +SKIP
        True
    """
    return rewrite_activations(gm, PATTERNS)

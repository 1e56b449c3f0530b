"""SiLU recognition.

Matches: ``mul(x, sigmoid(x))`` in either operand order (any arithmetic form that equals
    ``x * sigmoid(x)``, see :mod:`.activation_match`).
Rewrites to: ``aten.silu(x)``, with the stable name of the ``mul``.
Why valid: ``silu(x) = x * sigmoid(x)`` by definition.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from torch_tpu.fx_passes.activation_match import ActivationPattern, first_arg, rewrite_activations
from torch_tpu.fx_passes.manager import PassResult

aten = torch.ops.aten

PATTERNS = (
    ActivationPattern("silu", first_arg(aten.sigmoid.default), {(1, 0): 1.0}, {(1, 1): 1.0}, aten.silu.default),
)


def recognize_silu(gm: fx.GraphModule) -> PassResult:
    """Turn ``x * sigmoid(x)`` into ``aten.silu(x)``.

    Example:
        >>> recognize_silu(gm).modified      # efficientnet's swish blocks are now silu   # doctest: +SKIP
        True
    """
    return rewrite_activations(gm, PATTERNS)

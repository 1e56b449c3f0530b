"""THE fx_passes pipeline: the order of the TOP -> TOP passes, in one list.

Order and why:

1. ``remove_dead_code``      — start from the values that matter (fewer nodes for every later pass).
2. ``fold_constants``        — turns ``permute(fc.weight)``, ``expand(cls_token)`` and mask chains into
                               constants, so later passes see constant weights and all-zero masks.
3. ``remove_noops``          — clones, same-shape views/expands, ``+ 0`` of a folded zero mask, ``* 1``.
4. ``cancel_permute_reshape``— merges the permute / view chains that no-op removal exposed (first, so
                               sinking sees one permute per chain).
5. ``sink_permutes``         — moves layout permutes below elementwise / pad / cat ops, so NHWC <-> NCHW
                               round trips (TFLite graphs) meet and cancel.
6. ``recognize_silu``,
7. ``recognize_gelu``,
8. ``recognize_hardswish``   — before scale folding: hardsigmoid's ``add 3`` / ``div 6`` would otherwise
                               be folded into the conv before it and the activation lost.
9. ``fold_batchnorm``        — BatchNorm into the conv / linear before it.
10. ``fold_scale``           — remaining per-channel ``* c`` / ``+ c`` into conv / linear (after BN, so
                               ``conv -> bn -> * c`` folds in both steps).
11. ``fold_pad``             — explicit pads into conv / pool padding.
12. ``remove_dead_code``     — (as ``cleanup``) nothing unused is left for lowering.
13. ``annotate_flops``       — last, on the final ops.

Example:
    >>> run_pipeline(top.gm, dump_dir="dump/passes", check=True)      # doctest: +SKIP
"""

from __future__ import annotations

import os

import torch.fx as fx

from torch_tpu.fx_passes.batchnorm_folding import fold_batchnorm
from torch_tpu.fx_passes.constant_folding import fold_constants
from torch_tpu.fx_passes.dead_code import remove_dead_code
from torch_tpu.fx_passes.flops import annotate_flops
from torch_tpu.fx_passes.gelu import recognize_gelu
from torch_tpu.fx_passes.hardswish import recognize_hardswish
from torch_tpu.fx_passes.manager import Pass, PassManager
from torch_tpu.fx_passes.noops import remove_noops
from torch_tpu.fx_passes.pad_folding import fold_pad
from torch_tpu.fx_passes.permute_reshape import cancel_permute_reshape
from torch_tpu.fx_passes.permute_sinking import sink_permutes
from torch_tpu.fx_passes.scale_folding import fold_scale
from torch_tpu.fx_passes.silu import recognize_silu

#: The pipeline, in order (names are unique; the manager refuses duplicates).
PIPELINE: tuple[Pass, ...] = (
    Pass("remove_dead_code", remove_dead_code),
    Pass("fold_constants", fold_constants),
    Pass("remove_noops", remove_noops),
    Pass("cancel_permute_reshape", cancel_permute_reshape),
    Pass("sink_permutes", sink_permutes),
    Pass("recognize_silu", recognize_silu),
    Pass("recognize_gelu", recognize_gelu),
    Pass("recognize_hardswish", recognize_hardswish),
    Pass("fold_batchnorm", fold_batchnorm),
    Pass("fold_scale", fold_scale),
    Pass("fold_pad", fold_pad),
    Pass("cleanup", remove_dead_code),
    Pass("annotate_flops", annotate_flops),
)


def run_pipeline(gm: fx.GraphModule, *, dump_dir: str | os.PathLike | None = None,
                 check: bool = False) -> fx.GraphModule:
    """Run :data:`PIPELINE` on a TOP graph module, in place; return it.

    Args:
        gm: the TOP graph's GraphModule (``TopGraph.gm``).
        dump_dir: write ``00_input.txt`` and ``NN_<pass>.txt`` there.
        check: run the TOP checker before the first and after every pass.

    Raises:
        VerificationError: a pass failed or broke an invariant (the message names it and the passes before).
    """
    PassManager(PIPELINE, check=check, dump_dir=dump_dir)(gm)
    return gm

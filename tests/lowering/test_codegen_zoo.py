"""Every zoo model deploys to a Program (f32 and bf16) whose every op matches the TPU graph on the Program's
own probed inputs (``_codegen_local.check_layers``: f32 within ``F32_REL`` or the summation bound of long
sums, bf16 within one rounding step, data movement and masks exactly), for the C and reference kernels.

All ``slow``. The Program takes bert's int64 token ids as int32.
"""

from __future__ import annotations

import pytest
import torch

from _codegen_helpers import compile_module
from _codegen_local import check_layers, program_feed
from benchmarks.zoo import ZOO, build
from torch_tpu.cmodel import run_program

#: cases run by default: none, building the zoo models alone takes 10-20 s each (the one-block ViT and BERT
#: of test_codegen_coverage stand for them in the default run)
FAST: set[tuple[str, str]] = set()


def _check_model(name: str, precision: str, kernels: tuple[str, ...]) -> None:
    model, inputs = build(name, small=True)
    tpu, prog, _ = compile_module(model, inputs, precision)
    with torch.no_grad():
        ref = tpu(*inputs)
    ref = tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)
    for io, x in zip(prog.inputs, inputs):  # int64 token ids are int32 in the Program
        assert io.dtype.label == "int32" if x.dtype == torch.int64 else io.dtype.torch == x.dtype
    for k in kernels:
        check_layers(tpu, prog, inputs, precision, k)
        out = run_program(prog, program_feed(prog, inputs), kernels=k)
        assert [tuple(out[f"output{i}"].shape) for i in range(len(ref))] == [tuple(r.shape) for r in ref]


def _marks(name: str, precision: str):
    return () if (name, precision) in FAST else pytest.mark.slow


@pytest.mark.parametrize("name,precision", [pytest.param(n, p, marks=_marks(n, p)) for n in ZOO
                                            for p in ("f32", "bf16")])
def test_zoo_program_matches_tpu_graph(name, precision):
    # the reference kernels take minutes on the ViT's 1300 instructions; its ops are the BERT's, checked there
    kernels = ("c",) if name.startswith("vit") else ("c", "reference")
    _check_model(name, precision, kernels)

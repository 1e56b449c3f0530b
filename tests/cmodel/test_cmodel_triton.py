"""Triton kernels (interpreter on CPU, or a GPU) against the reference, and all kernel sets on one Program."""

import zlib

import numpy as np
import pytest
import torch
from cmodel_testutil import L, assert_allclose
from test_cmodel_kernels import CASES, check, operands

from torch_tpu.cmodel import isa, kernels_ref, kernels_triton
from torch_tpu.cmodel.builder import ProgramBuilder
from torch_tpu.cmodel.simulator import run_program

pytestmark = pytest.mark.skipif(not kernels_triton.available(), reason="triton is not installed")

NAMES = ["conv_f32_pad_stride", "conv_f32_groups_dilation", "conv_int8_depthwise_stride", "conv_bf16", "conv_int8",
         "conv_int8_groups",
         "matmul_f32", "matmul_bf16", "matmul_int8", "eltwise_add_f32", "eltwise_max_f32", "eltwise_div_f32",
         "eltwise_add_int8_saturates", "eltwise_mul_int32_scalar", "eltwise_max_int8_to_int32",
         "act_gelu_bf16", "act_sigmoid_f16"] + [f"act_{op}" for op in kernels_triton.TRITON_ACTIVATIONS]
SELECTED = [c for c in CASES if c[0] in NAMES]


@pytest.mark.parametrize("name, inst, rtol", SELECTED, ids=[c[0] for c in SELECTED])
def test_triton_matches_reference(name, inst, rtol):
    ops = operands(inst, seed=zlib.crc32(name.encode()) % 1000)
    want = kernels_ref.KERNELS[inst.OPCODE](inst, ops)
    got = kernels_triton.KERNELS[inst.OPCODE](inst, ops)
    check(inst, got, want, rtol, ops)


def test_triton_refuses_integer_activation_and_falls_back():
    inst = isa.Activation(id=0, op="relu", x=L(0, 0, (1, 1, 1, 4), "int32"), out=L(0, 0, (1, 1, 1, 4), "int32"))
    assert not kernels_triton.handles(inst)


def test_all_kernel_sets_agree_on_a_program():
    gen = torch.Generator().manual_seed(12)
    b = ProgramBuilder("bm1684x")
    x = b.load(b.input("x", (1, 3, 6, 6), "f32"))
    w = b.load(b.weight(torch.randn(1, 8, 1, 27, generator=gen), "f32"))
    y = b.compute(isa.Conv2d, (1, 8, 6, 6), "f32", layer="conv", x=x, w=w, kernel=(3, 3), pad=(1, 1, 1, 1))
    y = b.activation("silu", y, layer="silu")
    q = b.compute(isa.Cast, y.shape, "int8", layer="quant", x=y, scale=0.05)
    s = b.compute(isa.Eltwise, y.shape, "int8", layer="add", op="add", a=q, b=q)
    b.output("y", b.store(y))
    b.output("s", b.store(s))
    prog = b.build()
    xin = torch.randn(1, 3, 6, 6, generator=gen)
    outs = {k: run_program(prog, {"x": xin}, kernels=k) for k in ("c", "reference", "triton", "auto")}
    for k in ("c", "triton", "auto"):
        assert_allclose(outs[k]["y"], outs["reference"]["y"], rtol=1e-5, atol=1e-5)
    # the int8 path is exact given the same quantized input; compare where the f32 results quantize alike
    same_q = (torch.round(outs["c"]["y"] / 0.05) == torch.round(outs["reference"]["y"] / 0.05))
    assert same_q.float().mean() > 0.99
    assert torch.equal(outs["c"]["s"][same_q], outs["reference"]["s"][same_q])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_on_gpu_large_gemm():
    gen = torch.Generator().manual_seed(0)
    inst = isa.MatMul(id=0, a=L(0, 0, (1, 200, 1, 300), "f32"), b=L(0, 0, (1, 300, 1, 130), "f32"),
                      out=L(0, 0, (1, 200, 1, 130), "f32"))
    ops = [torch.randn(1, 200, 1, 300, generator=gen).numpy(), torch.randn(1, 300, 1, 130, generator=gen).numpy(),
           None]
    got, want = kernels_triton.matmul(inst, ops), kernels_ref.matmul(inst, ops)
    a, b = (torch.from_numpy(o).double()[:, :, 0, :] for o in ops[:2])
    bound = 2 * 300 * 2.0 ** -24 * torch.matmul(a.abs(), b.abs())[:, :, None, :]
    assert (torch.from_numpy(got).double() - torch.from_numpy(want).double()).abs().le(bound).all()
    assert np.isfinite(got).all()

"""Hand-written Programs run on the cmodel and compared with torch (independent of the kernel sets)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cmodel_testutil import assert_allclose, assert_float_close
from test_cmodel_requant import py_requant

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.builder import ProgramBuilder
from torch_tpu.cmodel.kernels_ref import from_torch
from torch_tpu.cmodel.operands import DdrTensor, DType
from torch_tpu.cmodel.simulator import RunResult, run_program
from torch_tpu.errors import ProgramError

KERNELS = ["c", "reference"]


def conv_program(dt: str, cin=3, cout=70, h=10, w=10):
    b = ProgramBuilder("bm1684x")
    x = b.input("x", (1, cin, h, w), dt)
    wt = b.weight(torch.randn(1, cout, 1, cin * 9, generator=torch.Generator().manual_seed(1)), dt)
    bias = b.weight(torch.randn(1, cout, 1, 1, generator=torch.Generator().manual_seed(2)), "f32")
    xl, wl, bl = b.load(x, layer="conv1"), b.load(wt, layer="conv1"), b.load(bias, layer="conv1")
    y = b.compute(isa.Conv2d, (1, cout, h, w), dt, layer="conv1", x=xl, w=wl, bias=bl, kernel=(3, 3),
                  pad=(1, 1, 1, 1), act="relu")
    b.output("y", b.store(y, layer="conv1"))
    return b.build(), wt, bias


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("dt", ["f32", "bf16", "f16"])
def test_conv_relu_program_matches_torch(kernels, dt):
    """70 output channels: 64 lanes plus a second channel group on lanes 0..5."""
    prog, _, _ = conv_program(dt)
    tdt = DType.parse(dt).torch
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(0)).to(tdt)
    w = torch.randn(1, 70, 1, 27, generator=torch.Generator().manual_seed(1)).to(tdt).float().reshape(70, 3, 3, 3)
    bias = torch.randn(1, 70, 1, 1, generator=torch.Generator().manual_seed(2)).reshape(70)
    want = torch.relu(F.conv2d(x.float(), w, bias, padding=1)).to(tdt)
    got = run_program(prog, {"x": x}, kernels=kernels)["y"]
    assert got.dtype == tdt and got.shape == want.shape
    assert_float_close(from_torch(got, DType.parse(dt)), from_torch(want, DType.parse(dt)), DType.parse(dt), 1e-5,
                       1e-5)


@pytest.mark.parametrize("kernels", KERNELS)
def test_tiled_conv_with_halo_rows(kernels):
    """Two H tiles, each loading its halo rows, padding only at the image border, stored by row offset."""
    n, c, h, w, co = 1, 4, 12, 9, 8
    b = ProgramBuilder("bm1684x")
    x = b.input("x", (n, c, h, w), "f32")
    wt = b.weight(torch.randn(1, co, 1, c * 9, generator=torch.Generator().manual_seed(3)), "f32")
    y = b.ddr((n, co, h, w), "f32")
    wl = b.load(wt, layer="conv")
    for r0, r1, in_r0, in_r1, pad in ((0, 6, 0, 7, (1, 0, 1, 1)), (6, 12, 5, 12, (0, 1, 1, 1))):
        rows = in_r1 - in_r0
        xs = DdrTensor(x.addr + in_r0 * w * 4, (n, c, rows, w), x.strides, x.dtype)
        xl = b.load(xs, layer="conv")
        out = b.compute(isa.Conv2d, (n, co, r1 - r0, w), "f32", layer="conv", x=xl, w=wl, kernel=(3, 3), pad=pad)
        b.store(out, DdrTensor(y.addr + r0 * w * 4, out.shape, y.strides, y.dtype), layer="conv")
    b.output("y", y)
    xin = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(4))
    want = F.conv2d(xin, torch.randn(1, co, 1, c * 9, generator=torch.Generator().manual_seed(3)).reshape(co, c, 3, 3),
                    padding=1)
    got = run_program(b.build(), {"x": xin}, kernels=kernels)["y"]
    assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernels", KERNELS)
def test_int8_conv_requant_program_is_bit_exact(kernels):
    gen = torch.Generator().manual_seed(6)
    x = torch.randint(-128, 128, (2, 5, 6, 7), generator=gen, dtype=torch.int8)
    w = torch.randint(-128, 128, (10, 5, 3, 3), generator=gen, dtype=torch.int8)
    bias = torch.randint(-5000, 5000, (10,), generator=gen, dtype=torch.int32)
    mult = tuple(int(v) for v in torch.randint(1 << 29, 1 << 31, (10,), generator=gen))
    shift = tuple(int(v) for v in torch.randint(35, 40, (10,), generator=gen))
    b = ProgramBuilder("bm1684x")
    xd = b.input("x", x.shape, "int8", scale=0.02)
    wl = b.load(b.weight(w.reshape(1, 10, 1, 45), "int8"), layer="conv")
    bl = b.load(b.weight(bias.reshape(1, 10, 1, 1), "int32"), layer="conv")
    acc = b.compute(isa.Conv2d, (2, 10, 3, 4), "int32", layer="conv", x=b.load(xd, layer="conv"), w=wl, bias=bl,
                    kernel=(3, 3), stride=(2, 2), pad=(1, 0, 1, 1), act="relu")
    q = b.compute(isa.Requant, acc.shape, "int8", layer="conv", x=acc, multiplier=mult, shift=shift, zero_point=-3)
    b.output("y", b.store(q, layer="conv"))
    got = run_program(b.build(), {"x": x}, kernels=kernels)["y"]
    # independent integer model: exact conv in int64 by explicit loops over the kernel, Python requant
    xp = F.pad(x.to(torch.int64), (1, 1, 1, 0))
    acc_ref = torch.zeros(2, 10, 3, 4, dtype=torch.int64)
    for ky in range(3):
        for kx in range(3):
            patch = xp[:, :, ky:ky + 5:2, kx:kx + 7:2]                       # (2, 5, 3, 4)
            acc_ref += torch.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx].to(torch.int64))
    acc_ref = torch.clamp(acc_ref + bias.reshape(1, 10, 1, 1), min=0)
    want = np.vectorize(lambda v, c: py_requant(int(v), mult[c], shift[c], -3, -128, 127))(
        acc_ref.numpy(), np.arange(10).reshape(1, 10, 1, 1))
    assert np.array_equal(got.numpy().astype(np.int64), want)


def test_bf16_mlp_block_stage_by_stage_with_debug():
    """matmul + bias -> gelu -> layernorm -> softmax in bf16; every intermediate checked by layer name."""
    gen = torch.Generator().manual_seed(8)
    b = ProgramBuilder("bm1684x")
    x = b.input("x", (1, 8, 1, 16), "bf16")
    w = torch.randn(1, 16, 1, 32, generator=gen)
    bias = torch.randn(1, 1, 1, 32, generator=gen)
    h = b.compute(isa.MatMul, (1, 8, 1, 32), "bf16", layer="fc", a=b.load(x), b=b.load(b.weight(w, "bf16")),
                  bias=b.load(b.weight(bias, "bf16")))
    g = b.activation("gelu", h, layer="gelu")
    n = b.compute(isa.LayerNorm, g.shape, "bf16", layer="ln", x=g, axis=3, eps=1e-5)
    s = b.compute(isa.Softmax, n.shape, "bf16", layer="softmax", x=n, axis=3)
    b.output("y", b.store(s))
    xin = torch.randn(1, 8, 1, 16, generator=gen).to(torch.bfloat16)
    res = run_program(b.build(), {"x": xin}, debug=True)
    assert isinstance(res, RunResult) and list(res.intermediates) == ["fc", "gelu", "ln", "softmax"]
    inter = {k: v[0] for k, v in res.intermediates.items()}
    wb, bb = w.to(torch.bfloat16).float(), bias.to(torch.bfloat16).float()
    stages = [
        ("fc", (xin.float()[0, :, 0] @ wb[0, :, 0] + bb[0, 0]).reshape(1, 8, 1, 32)),
        ("gelu", F.gelu(inter["fc"].float())),
        ("ln", F.layer_norm(inter["gelu"].float(), (32,), eps=1e-5)),
        ("softmax", torch.softmax(inter["ln"].float(), dim=3)),
    ]
    for name, want in stages:
        assert_float_close(from_torch(inter[name], DType.BF16), from_torch(want, DType.BF16), DType.BF16, 1e-5, 1e-6)
    assert torch.equal(res.outputs["y"], inter["softmax"])


@pytest.mark.parametrize("kernels", KERNELS)
def test_pool_eltwise_reduce_program_f16(kernels):
    gen = torch.Generator().manual_seed(10)
    b = ProgramBuilder("bm1684x")
    x = b.load(b.input("x", (2, 6, 8, 8), "f16"))
    mx = b.compute(isa.Pool2d, (2, 6, 4, 4), "f16", layer="maxpool", mode="max", x=x, kernel=(3, 3),
                   stride=(2, 2), pad=(1, 1, 1, 1))
    av = b.compute(isa.Pool2d, (2, 6, 4, 4), "f16", layer="avgpool", mode="avg", x=x, kernel=(3, 3), stride=(2, 2),
                   pad=(1, 1, 1, 1), count_include_pad=False)
    bias = b.load(b.weight(torch.randn(1, 6, 1, 1, generator=gen), "f16"))
    s = b.compute(isa.Eltwise, mx.shape, "f16", layer="add", op="add", a=mx, b=av)
    s2 = b.compute(isa.Eltwise, mx.shape, "f16", layer="add_bias", op="sub", a=s, b=bias)
    r = b.compute(isa.Reduce, (2, 6, 1, 1), "f32", layer="gap", op="mean", x=s2, axes=(2, 3))
    b.output("y", b.store(s2))
    b.output("gap", b.store(r), shape=(2, 6))
    xin = torch.randn(2, 6, 8, 8, generator=gen).half()
    outs = run_program(b.build(), {"x": xin}, kernels=kernels)
    xf = xin.float()
    mxr = F.max_pool2d(xf, 3, 2, 1).half()
    avr = F.avg_pool2d(xf, 3, 2, 1, count_include_pad=False).half()
    br = torch.randn(1, 6, 1, 1, generator=torch.Generator().manual_seed(10)).half()
    yr = ((mxr.float() + avr.float()).half().float() - br.float()).half()
    assert_float_close(from_torch(outs["y"], DType.F16), from_torch(yr, DType.F16), DType.F16, 1e-6)
    assert_allclose(outs["gap"], yr.float().mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)


def test_lut_program_int8_sigmoid():
    scale_in, scale_out = 0.05, 1 / 256
    codes = torch.arange(256, dtype=torch.int64)
    signed = torch.where(codes < 128, codes, codes - 256)               # byte index -> int8 value
    table = torch.clamp(torch.round(torch.sigmoid(signed * scale_in) / scale_out) - 128, -128, 127)
    b = ProgramBuilder("bm1684x")
    x = b.load(b.input("x", (1, 3, 4, 4), "int8"))
    tl = b.load(b.weight(table.reshape(1, 1, 1, 256), "int8"))
    y = b.compute(isa.Lut, x.shape, "int8", layer="sigmoid", x=x, table=tl)
    b.output("y", b.store(y))
    xin = torch.randint(-128, 128, (1, 3, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.int8)
    got = run_program(b.build(), {"x": xin})["y"]
    want = table[xin.to(torch.int64) % 256].to(torch.int8)
    assert torch.equal(got, want)


def test_local_allocation_bug_shows_up_as_wrong_result():
    """b placed one channel group after a's start: fine for a flat buffer of 64 channels, but a has 70
    channels, whose second group (lanes 0..5) lives exactly there; b's load overwrites it."""
    b = ProgramBuilder("bm1684x")
    xa, xb = b.input("a", (1, 70, 2, 2), "f32"), b.input("b", (1, 70, 2, 2), "f32")
    a = b.local((1, 70, 2, 2), "f32", addr=0)
    bb = b.local((1, 70, 2, 2), "f32", addr=64)                       # the bug: should be 128
    b.emit(isa.DmaLoad, src=xa, dst=a)
    b.emit(isa.DmaLoad, src=xb, dst=bb)
    out = b.local((1, 70, 2, 2), "f32", addr=1024)
    b.emit(isa.Eltwise, op="add", a=a, b=bb, out=out)
    b.output("y", b.store(out))
    ta, tb = torch.randn(1, 70, 2, 2), torch.randn(1, 70, 2, 2)
    got = run_program(b.build(), {"a": ta, "b": tb})["y"]
    want = ta + tb
    wrong = ~torch.isclose(got, want).all(dim=(0, 2, 3))
    assert wrong[64:].all() and not wrong[:64].any()          # exactly the wrapped channels are corrupt
    assert_allclose(got[:, 64:], tb[:, :6] + tb[:, 64:], 0.0, 0.0)   # a's group 1 was b's group 0 (lanes 0..5)


def test_inputs_are_checked():
    prog, _, _ = conv_program("f32")
    with pytest.raises(ProgramError, match="input 'x': dtype torch.float16, the program expects f32"):
        run_program(prog, {"x": torch.zeros(1, 3, 10, 10, dtype=torch.float16)})
    with pytest.raises(ProgramError, match="shape"):
        run_program(prog, {"x": torch.zeros(1, 3, 10, 11)})
    with pytest.raises(ProgramError, match="missing"):
        run_program(prog, {})


def test_run_from_file_with_profile_and_trace(tmp_path):
    prog, _, _ = conv_program("f32")
    path = prog.save(tmp_path / "conv.tpu")
    res = run_program(str(path), {"x": np.zeros((1, 3, 10, 10), np.float32)}, profile=True)
    p = res.profile
    assert p.total_cycles > 0 and set(p.layers) == {"conv1"}
    assert p.ddr_read_bytes == 3 * 100 * 4 + 70 * 27 * 4 + 70 * 4 and p.ddr_write_bytes == 70 * 100 * 4
    trace = tmp_path / "trace.json"
    p.save_trace(trace)
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["tid"] for e in events if e["ph"] == "X"} == {0, 1}
    assert {e["args"]["name"] for e in events if e.get("name") == "thread_name"} == {"DMA", "compute"}
    assert "roofline" in p.summary()


def test_kernel_set_choice():
    from torch_tpu.cmodel.kernels import get_kernel_set
    from torch_tpu.errors import ConfigError
    assert get_kernel_set("auto").name == "c" and get_kernel_set("reference").use_c_memory is False
    with pytest.raises(ConfigError, match="cmodel='fast'"):
        get_kernel_set("fast")


def test_kernel_tables_are_checked():
    from torch_tpu.cmodel.kernels import check_table
    with pytest.raises(ProgramError, match=r"unknown opcodes \['fft'\]"):
        check_table("x", {"fft": None}, complete=False)
    with pytest.raises(ProgramError, match="missing opcodes .*'conv2d'"):
        check_table("x", {})


def test_int64_ids_feed_an_int32_input_when_they_fit():
    b = ProgramBuilder("bm1684x")
    x = b.load(b.input("ids", (1, 1, 1, 4), "int32"))
    y = b.compute(isa.Eltwise, (1, 1, 1, 4), "int32", layer="add", op="add", a=x, scalar=1)
    b.output("y", b.store(y))
    prog = b.build()
    ids = torch.tensor([[[[0, 7, 2**31 - 2, -5]]]])                     # torch's default int64
    got = run_program(prog, {"ids": ids})["y"]
    assert got.dtype == torch.int32 and got.tolist() == [[[[1, 8, 2**31 - 1, -4]]]]
    with pytest.raises(ProgramError, match=r"input 'ids': torch.int64 values in \[0, 2147483648\] do not fit"):
        run_program(prog, {"ids": torch.tensor([[[[0, 1, 2, 2**31]]]])})
    with pytest.raises(ProgramError, match="dtype torch.float32, the program expects int32"):
        run_program(prog, {"ids": ids.float()})

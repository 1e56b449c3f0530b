"""C kernels against the torch reference kernels (the definition), on every opcode and dtype family.

Integer results and single-operation float results must be bit-exact. Sums (conv, matmul, avg
pool, sum/mean) are checked against the standard bound of two differently ordered f32 sums,
|got - want| <= 2 n 2^-24 sum|terms|; libm functions (exp, tanh, erf ...) to 1e-6 relative;
softmax/layernorm to 1e-5; each plus one rounding step of a bf16/f16 output.
"""

import dataclasses
import zlib

import numpy as np
import pytest
import torch
from cmodel_testutil import L, assert_float_close, rand, ulp

from torch_tpu.cmodel import isa, kernels_c, kernels_ref
from torch_tpu.cmodel.memory import _cmodel
from torch_tpu.cmodel.operands import DType

EXACT, SUM, FUNC = 0.0, 1e-5, 1e-6


def conv(dt="f32", odt=None, bias_dt=None, cin=6, cout=10, hw=(7, 9), **kw):
    kw.setdefault("kernel", (3, 3))
    kh, kwid = kw["kernel"]
    g = kw.get("groups", 1)
    x = L(0, 0, (2, cin) + hw, dt)
    inst = isa.Conv2d(id=0, x=x, w=L(0, 0, (1, cout, 1, cin // g * kh * kwid), dt),
                      bias=L(0, 0, (1, cout, 1, 1), bias_dt) if bias_dt else None,
                      out=L(0, 0, (2, cout, 1, 1), odt or dt), **kw)
    ho, wo = inst.out_hw()
    return isa.Conv2d(**{**inst.__dict__, "out": L(0, 0, (2, cout, ho, wo), odt or dt)})


def mm(dt="f32", odt=None, bias_dt=None, b=3, bb=1, m=5, k=40, n=19, **kw):
    return isa.MatMul(id=0, a=L(0, 0, (b, m, 1, k), dt), b=L(0, 0, (bb, k, 1, n), dt),
                      bias=L(0, 0, (1, 1, 1, n), bias_dt) if bias_dt else None, out=L(0, 0, (b, m, 1, n), odt or dt),
                      **kw)


def ew(op, dt="f32", odt=None, ashape=(2, 3, 4, 5), bshape=(1, 3, 1, 5), **kw):
    oshape = tuple(max(a, b) for a, b in zip(ashape, bshape or ashape))
    return isa.Eltwise(id=0, op=op, a=L(0, 0, ashape, dt), b=L(0, 0, bshape, dt) if bshape else None,
                       out=L(0, 0, oshape, odt or dt), **kw)


def act(op, dt="f32", odt=None, **kw):
    return isa.Activation(id=0, op=op, x=L(0, 0, (2, 3, 4, 5), dt), out=L(0, 0, (2, 3, 4, 5), odt or dt), **kw)


def pool(mode, dt="f32", **kw):
    inst = isa.Pool2d(id=0, mode=mode, x=L(0, 0, (2, 3, 9, 8), dt), out=L(0, 0, (1, 1, 1, 1), dt), **kw)
    return isa.Pool2d(**{**inst.__dict__, "out": L(0, 0, (2, 3) + inst.out_hw(), dt)})


def cast(src, dst, **kw):
    return isa.Cast(id=0, x=L(0, 0, (2, 3, 4, 5), src), out=L(0, 0, (2, 3, 4, 5), dst), **kw)


def red(op, axes, dt="f32", odt=None):
    x = L(0, 0, (2, 3, 4, 5), dt)
    oshape = tuple(1 if d in axes else s for d, s in enumerate(x.shape))
    return isa.Reduce(id=0, op=op, x=x, out=L(0, 0, oshape, odt or dt), axes=axes)


CASES = [
    ("conv_f32_pad_stride", conv(kernel=(3, 3), stride=(2, 1), pad=(1, 0, 2, 1), bias_dt="f32", act="relu"), SUM),
    ("conv_f32_groups_dilation", conv(kernel=(3, 2), groups=2, dilation=(2, 3), pad=(2, 2, 1, 1), act="relu6",
                                      bias_dt="f32"), SUM),
    ("conv_f32_depthwise", conv(cin=8, cout=8, groups=8, pad=(1, 1, 1, 1), act="clip", act_lo=-0.5, act_hi=0.5), SUM),
    ("conv_f32_depthwise_mult_stride", conv(cin=4, cout=8, groups=4, stride=(2, 2), dilation=(2, 1),
                                            pad=(2, 1, 0, 2), bias_dt="f32"), SUM),
    ("conv_int8_depthwise_stride", conv("int8", odt="int32", cin=6, cout=12, groups=6, stride=(2, 3),
                                        pad=(1, 1, 1, 1), bias_dt="int32"), EXACT),
    ("conv_f32_1x1", conv(kernel=(1, 1), cin=20, cout=33, bias_dt="f32"), SUM),
    ("conv_bf16", conv("bf16", bias_dt="f32", pad=(1, 1, 1, 1)), SUM),
    ("conv_f16_to_f32", conv("f16", odt="f32", bias_dt="f16"), SUM),
    ("conv_int8", conv("int8", odt="int32", bias_dt="int32", pad=(1, 1, 1, 1), act="relu"), EXACT),
    ("conv_int8_groups", conv("int8", odt="int32", groups=2, kernel=(2, 3), stride=(2, 2)), EXACT),
    ("conv_int8_clip_1x1", conv("int8", odt="int32", kernel=(1, 1), cin=17, act="clip", act_lo=-300,
                                act_hi=400), EXACT),
    ("matmul_f32", mm(bias_dt="f32", act="relu6"), SUM),
    ("matmul_f32_batched_b", mm(bb=3, m=7, k=13, n=33), SUM),
    ("matmul_bf16", mm("bf16", bias_dt="bf16"), SUM),
    ("matmul_int8", mm("int8", odt="int32", bias_dt="int32", act="clip", act_lo=-1000, act_hi=900), EXACT),
    ("matmul_int8_odd_k", mm("int8", odt="int32", k=31, n=21, bb=3), EXACT),
] + [(f"eltwise_{op}_f32", ew(op), EXACT) for op in isa.ELTWISE_OPS] + [
    ("eltwise_add_bf16", ew("add", "bf16"), EXACT),
    ("eltwise_mul_f16_to_f32", ew("mul", "f16", "f32"), EXACT),
    ("eltwise_sub_scalar", ew("sub", bshape=None, scalar=0.75), EXACT),
    ("eltwise_add_int8_saturates", ew("add", "int8"), EXACT),
    ("eltwise_mul_int32_scalar", ew("mul", "int32", bshape=None, scalar=-7), EXACT),
    ("eltwise_max_int8_to_int32", ew("max", "int8", "int32", ashape=(2, 1, 4, 1), bshape=(1, 3, 1, 5)), EXACT),
] + [(f"act_{op}", act(op, alpha=0.2, lo=-0.3, hi=0.7), FUNC) for op in isa.ACTIVATIONS] + [
    ("act_gelu_bf16", act("gelu", "bf16"), FUNC),
    ("act_sigmoid_f16", act("sigmoid", "f16"), FUNC),
    ("act_relu_int32", act("relu", "int32"), EXACT),
    ("act_clip_int8", act("clip", "int8", lo=-20, hi=30), EXACT),
    ("act_neg_int8_saturates", act("neg", "int8"), EXACT),
    ("pool_max_pad", pool("max", kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 0)), EXACT),
    ("pool_avg_include_pad", pool("avg", kernel=(3, 2), stride=(2, 2), pad=(1, 1, 1, 1)), SUM),
    ("pool_avg_exclude_pad", pool("avg", kernel=(3, 3), stride=(1, 2), pad=(1, 2, 0, 1), count_include_pad=False),
     SUM),
    ("pool_avg_bf16", pool("avg", "bf16", kernel=(2, 2), stride=(2, 2)), SUM),
    ("pool_max_int8", pool("max", "int8", kernel=(2, 3), stride=(2, 1), pad=(1, 0, 1, 1)), EXACT),
    ("pool_avg_int8", pool("avg", "int8", kernel=(3, 3), stride=(3, 3), multiplier=1908874354, shift=34), EXACT),
    ("lut_int8", isa.Lut(id=0, x=L(0, 0, (2, 3, 4, 5), "int8"), table=L(0, 0, (1, 1, 1, 256), "int8"),
                         out=L(0, 0, (2, 3, 4, 5), "int8")), EXACT),
    ("lut_uint8_to_bf16", isa.Lut(id=0, x=L(0, 0, (2, 3, 4, 5), "uint8"), table=L(0, 0, (1, 1, 1, 256), "bf16"),
                                  out=L(0, 0, (2, 3, 4, 5), "bf16")), EXACT),
    ("requant_per_channel", isa.Requant(id=0, x=L(0, 0, (2, 3, 4, 5), "int32"), out=L(0, 0, (2, 3, 4, 5), "int8"),
                                        multiplier=(1 << 30, 1234567890, 7), shift=(24, 30, 0), zero_point=3), EXACT),
    ("requant_int8_to_int32", isa.Requant(id=0, x=L(0, 0, (2, 3, 4, 5), "int8"), out=L(0, 0, (2, 3, 4, 5), "int32"),
                                          multiplier=(1 << 30,), shift=(33,)), EXACT),
    ("cast_f32_bf16", cast("f32", "bf16"), EXACT),
    ("cast_f32_f16", cast("f32", "f16"), EXACT),
    ("cast_bf16_f32", cast("bf16", "f32"), EXACT),
    ("cast_f16_bf16", cast("f16", "bf16"), EXACT),
    ("cast_quant_half_even", cast("f32", "int8", scale=0.0125, zero_point=-5, round_mode="half_even"), EXACT),
    ("cast_quant_half_away", cast("bf16", "uint8", scale=0.0078125, zero_point=128), EXACT),
    ("cast_dequant", cast("int8", "f32", scale=0.037, zero_point=4), EXACT),
    ("cast_int32_int8", cast("int32", "int8"), EXACT),
    ("reduce_sum_hw", red("sum", (2, 3)), SUM),
    ("reduce_mean_c", red("mean", (1,)), SUM),
    ("reduce_max_all", red("max", (0, 1, 2, 3), "bf16"), EXACT),
    ("reduce_min_w", red("min", (3,)), EXACT),
    ("reduce_sum_int8_to_int32", red("sum", (1, 3), "int8", "int32"), EXACT),
    ("softmax_c", isa.Softmax(id=0, x=L(0, 0, (2, 7, 3, 4)), out=L(0, 0, (2, 7, 3, 4)), axis=1), FUNC * 10),
    ("log_softmax_w_bf16", isa.Softmax(id=0, x=L(0, 0, (2, 3, 4, 9), "bf16"), out=L(0, 0, (2, 3, 4, 9), "bf16"),
                                       axis=3, log=True), FUNC * 10),
    ("layernorm_w", isa.LayerNorm(id=0, x=L(0, 0, (2, 3, 4, 16)), weight=L(0, 0, (1, 1, 1, 16)),
                                  bias=L(0, 0, (1, 1, 1, 16)), out=L(0, 0, (2, 3, 4, 16)), axis=3), SUM),
    ("layernorm_chw_f16", isa.LayerNorm(id=0, x=L(0, 0, (2, 3, 4, 5), "f16"), out=L(0, 0, (2, 3, 4, 5), "f16"),
                                        axis=1, eps=1e-3), SUM),
]


def operands(inst: isa.Instruction, seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    ops = []
    for name in inst.INPUTS:
        t = getattr(inst, name)
        if t is None:
            ops.append(None)
            continue
        if isinstance(inst, isa.Requant) or t.dtype == DType.INT32:
            ops.append(rand(t.shape, t.dtype, gen, lo=-(1 << 20), hi=1 << 20))
        elif isinstance(inst, isa.Activation) and inst.op in ("log", "sqrt", "rsqrt") and t.dtype.is_float:
            ops.append(rand(t.shape, t.dtype, gen, scale=1.0))
            ops[-1] = kernels_ref.from_torch(kernels_ref.f32(ops[-1], t.dtype).abs() + 0.01, t.dtype)
        elif isinstance(inst, isa.Cast) and not inst.out.dtype.is_float and t.dtype.is_float:
            vals = torch.randint(-40, 40, t.shape, generator=gen) * 0.5 * inst.scale   # exact ties included
            ops.append(kernels_ref.from_torch(torch.cat([vals.reshape(-1)[:-3], torch.tensor([1e9, -1e9, 1e30])]
                                                        ).reshape(t.shape), t.dtype))
        elif isinstance(inst, isa.Cast) and inst.out.dtype in (DType.F16, DType.BF16):
            v = torch.randn(t.shape, generator=gen) * torch.pow(10.0, torch.randint(-9, 6, t.shape, generator=gen))
            edge = [65519.0, 65520.0, float("inf"), float("nan"), 2.0 ** -25, -(2.0 ** -24) * 1.5]
            v.view(-1)[:6] = torch.tensor(edge)
            ops.append(kernels_ref.from_torch(v, t.dtype))
        else:
            ops.append(rand(t.shape, t.dtype, gen, scale=2.0))
    return ops


def sum_terms(inst) -> int:
    """How many f32 terms each output sums (0 when the op is not a sum)."""
    if isinstance(inst, isa.Conv2d):
        return inst.x.shape[1] // inst.groups * inst.kernel[0] * inst.kernel[1] + 1
    if isinstance(inst, isa.MatMul):
        return inst.a.shape[3] + 1
    if isinstance(inst, isa.Pool2d) and inst.mode == "avg":
        return inst.kernel[0] * inst.kernel[1] + 1
    if isinstance(inst, isa.Reduce) and inst.op in ("sum", "mean"):
        return int(np.prod([inst.x.shape[a] for a in inst.axes])) + 1
    return 0


def sum_bound(inst, ops) -> np.ndarray:
    """Standard bound on the f32 error of a sum of n terms, for each of two differently ordered results:
    |got - want| <= 2 n 2^-24 sum |terms|; sum |terms| from the reference on |operands| (no activation)."""
    plain = dataclasses.replace(inst, act="none") if hasattr(inst, "act") else inst
    absops = [None if o is None else kernels_ref.from_torch(kernels_ref.f32(o, t.dtype).abs(), t.dtype)
              for o, t in zip(ops, plain.inputs())]
    absref = kernels_ref.f32(kernels_ref.KERNELS[inst.OPCODE](plain, absops), inst.out.dtype).double()
    return (2 * sum_terms(inst) * 2.0 ** -24 * 1.01 * absref).numpy()


def check(inst, got, want, rtol, ops=None):
    assert got.shape == want.shape == inst.out.shape and got.dtype == want.dtype == inst.out.dtype.numpy
    if ops is not None and sum_terms(inst) and inst.out.dtype.is_float and inst.inputs()[0].dtype.is_float:
        g = kernels_ref.f32(got, inst.out.dtype).double()
        w = kernels_ref.f32(want, inst.out.dtype).double()
        mag = torch.maximum(g.abs(), w.abs())
        tol = torch.from_numpy(sum_bound(inst, ops))
        if inst.out.dtype != DType.F32:
            tol = tol + ulp(inst.out.dtype, mag)
        bad = (g - w).abs() > tol
        assert not bad.any(), f"{int(bad.sum())} of {bad.numel()} outside the f32 summation bound"
        return
    if not inst.out.dtype.is_float or rtol == EXACT:
        a, b = got.view(np.uint8), want.view(np.uint8)
        if inst.out.dtype.is_float:   # NaN payloads may differ; compare NaN positions and the rest bitwise
            ga, wa = kernels_ref.f32(got, inst.out.dtype), kernels_ref.f32(want, inst.out.dtype)
            assert torch.equal(ga.isnan(), wa.isnan())
            assert torch.equal(torch.nan_to_num(ga), torch.nan_to_num(wa)), "float results differ"
            return
        assert np.array_equal(a, b), f"{int((got != want).sum())} of {got.size} integer results differ"
        return
    assert_float_close(got, want, inst.out.dtype, rtol, atol=rtol)


@pytest.mark.parametrize("name, inst, rtol", CASES, ids=[c[0] for c in CASES])
def test_c_matches_reference(name, inst, rtol):
    inst.check(__import__("torch_tpu.targets", fromlist=["x"]).get_target("bm1684x"))
    ops = operands(inst, seed=zlib.crc32(name.encode()) % 1000)
    want = kernels_ref.KERNELS[inst.OPCODE](inst, ops)
    got = kernels_c.KERNELS[inst.OPCODE](inst, ops)
    check(inst, got, want, rtol, ops)


def simd_levels():
    levels = ["generic"]
    for lv in ("avx2", "avx512", "avx512vnni"):
        try:
            _cmodel.set_simd(lv)
            levels.append(lv)
        except ValueError:
            pass
    _cmodel.set_simd(levels[-1])
    return levels


@pytest.mark.parametrize("name", ["conv_f32_pad_stride", "conv_int8", "matmul_f32_batched_b", "matmul_int8_odd_k",
                                  "conv_f32_1x1"])
def test_every_simd_level_matches_reference(name):
    inst, rtol = next((i, r) for n, i, r in CASES if n == name)
    ops = operands(inst, seed=7)
    want = kernels_ref.KERNELS[inst.OPCODE](inst, ops)
    levels = simd_levels()
    try:
        for lv in levels:
            _cmodel.set_simd(lv)
            check(inst, kernels_c.KERNELS[inst.OPCODE](inst, ops), want, rtol, ops)
    finally:
        _cmodel.set_simd(levels[-1])


def test_gemm_blocking_edges_large_k():
    """K > the 256-deep K block and N not a multiple of the vector tile: blocked == reference within the
    standard f32 dot-product bound |error| <= K * 2^-24 * sum_k |a_k b_k| (for each of the two results)."""
    k = 600
    inst = mm(b=1, m=13, k=k, n=45)
    ops = operands(inst, 3)
    got, want = kernels_c.matmul(inst, ops), kernels_ref.matmul(inst, ops)
    a, b = (torch.from_numpy(o).double()[:, :, 0, :] for o in ops[:2])
    bound = 2 * k * 2.0 ** -24 * torch.matmul(a.abs(), b.abs())[:, :, None, :]
    assert ((torch.from_numpy(got).double() - torch.from_numpy(want).double()).abs() <= bound).all()


def test_f16_bf16_rounding_matches_torch_bits():
    """The C f32 -> f16/bf16 conversion is torch's round-to-nearest-even, over all bit patterns sampled."""
    gen = torch.Generator().manual_seed(11)
    bits = torch.randint(-2 ** 31, 2 ** 31 - 1, (200_000,), dtype=torch.int64, generator=gen).to(torch.int32)
    x = bits.view(torch.float32)
    for dst in (DType.F16, DType.BF16):
        inst = cast("f32", dst.label)
        inst = isa.Cast(**{**inst.__dict__, "x": L(0, 0, (1, 1, 1, x.numel())), "out": L(0, 0, (1, 1, 1, x.numel()),
                                                                                           dst.label)})
        got = kernels_c.cast(inst, [x.numpy().reshape(1, 1, 1, -1)])
        want = kernels_ref.cast(inst, [x.numpy().reshape(1, 1, 1, -1)])
        check(inst, got, want, EXACT)


def test_c_kernels_refuse_short_buffers():
    inst = CASES[0][1]
    x, w, b = operands(inst, 1)
    with pytest.raises(ValueError, match="operand 'x'"):
        kernels_c.conv2d(inst, [x[:1], w, b])


def test_c_kernels_refuse_bad_arguments_instead_of_crashing():
    """Found by fuzzing: a float input with a 1-byte integer output, huge or empty dims, huge strides."""
    f32 = np.zeros(64, np.float32)
    with pytest.raises(ValueError, match="not both float or both integer"):
        _cmodel.activation(np.zeros(4, np.uint8), int(DType.UINT8), f32, int(DType.F32), 4, 0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="dimensions too large"):
        _cmodel.reduce(f32, 0, f32, 0, (2 ** 31, 16, 2 ** 31, 100), 1, 0)
    with pytest.raises(ValueError, match="tensor dims must be in"):
        _cmodel.softmax(f32, 0, f32, 0, (3, 100, 2 ** 31, 0), 3, 0)
    with pytest.raises(ValueError, match="stride .* too large"):
        _cmodel.copy(np.zeros(64, np.uint8), (0, 0, 2 ** 62, 1, 1, 1), f32, (0, 0, 1, 1, 1, 1), (2, 1, 1, 1), 4)

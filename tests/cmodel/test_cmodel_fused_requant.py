"""int8 conv2d / matmul with a fused requant and a pad value: every kernel set (C at every SIMD level, Triton in
its interpreter, the reference) against a pure-integer model and against the unfused instruction chain; field
checks, the Program file round trip and the epilogue's timing."""

import dataclasses
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cmodel_testutil import L
from test_cmodel_kernels import simd_levels
from test_cmodel_requant import py_requant

from torch_tpu.cmodel import codec, isa, kernels_c, kernels_ref, kernels_triton
from torch_tpu.cmodel.memory import _cmodel
from torch_tpu.cmodel.timing import instruction_cost
from torch_tpu.errors import ProgramError
from torch_tpu.targets import get_target

I32_MIN, I32_MAX = -2**31, 2**31 - 1


# ---- the pure-integer model ------------------------------------------------------------------------------------

def int_conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, inst: isa.Conv2d) -> torch.Tensor:
    """Exact int64 conv: input padded with ``pad_value``, a sum of one shifted slice per tap (no float)."""
    n, cin, _, _ = inst.x.shape
    _, cout, ho, wo = inst.out.shape
    (kh, kw), (sh, sw), (dh, dw), g = inst.kernel, inst.stride, inst.dilation, inst.groups
    pt, pb, pl, pr = inst.pad
    xp = F.pad(torch.from_numpy(x).to(torch.int64), (pl, pr, pt, pb), value=inst.pad_value)
    wt = torch.from_numpy(w).to(torch.int64).reshape(cout, cin // g, kh, kw)
    acc = torch.zeros((n, cout, ho, wo), dtype=torch.int64)
    cig, cog = cin // g, cout // g
    for gi in range(g):
        xs = xp[:, gi * cig:(gi + 1) * cig]
        for ky in range(kh):
            for kx in range(kw):
                tap = xs[:, :, ky * dh:ky * dh + sh * (ho - 1) + 1:sh, kx * dw:kx * dw + sw * (wo - 1) + 1:sw]
                acc[:, gi * cog:(gi + 1) * cog] += torch.einsum("nchw,oc->nohw", tap,
                                                                wt[gi * cog:(gi + 1) * cog, :, ky, kx])
    if bias is not None:
        acc += torch.from_numpy(bias).to(torch.int64).reshape(1, cout, 1, 1)
    return acc


def int_matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None) -> torch.Tensor:
    at, bt = (torch.from_numpy(v).to(torch.int64)[:, :, 0, :] for v in (a, b))
    acc = torch.einsum("bmk,bkn->bmn", at, bt.expand(at.shape[0], -1, -1))
    if bias is not None:
        acc += torch.from_numpy(bias).to(torch.int64).reshape(-1)
    return acc[:, :, None, :]


def model_epilogue(acc: torch.Tensor, inst, axis: int) -> np.ndarray:
    """act -> saturate to int32 -> requant (Python integers, test_cmodel_requant.py's model) -> clamp."""
    if inst.act == "relu":
        acc = acc.clamp(min=0)
    elif inst.act == "clip":
        acc = acc.clamp(int(inst.act_lo), int(inst.act_hi))
    acc = acc.clamp(I32_MIN, I32_MAX)
    out = np.empty(acc.shape, dtype=np.int8)
    flat, idx = acc.reshape(-1).tolist(), np.indices(acc.shape)[axis].reshape(-1)
    per = len(inst.multiplier) > 1
    for i, v in enumerate(flat):
        p = int(idx[i]) if per else 0
        out.reshape(-1)[i] = py_requant(v, inst.multiplier[p], inst.shift[p], inst.zero_point, inst.qmin, inst.qmax)
    return out


# ---- random instructions ---------------------------------------------------------------------------------------

def rand_requant(gen: torch.Generator, channels: int, per_channel: bool) -> dict:
    """Multipliers in [2^29, 2^31), shifts that bring a few-thousand accumulator into and past int8, plus the
    extremes (m = 0, 2^31 - 1; s = 0, 63) on the first channels."""
    c = channels if per_channel else 1
    m = torch.randint(1 << 29, 1 << 31, (c,), generator=gen).tolist()
    s = torch.randint(33, 42, (c,), generator=gen).tolist()
    if per_channel and c >= 4:
        m[:3], s[:3] = [0, (1 << 31) - 1, 1 << 30], [17, 63, 0]
    lo = int(torch.randint(-128, 0, (1,), generator=gen))
    hi = int(torch.randint(lo, 128, (1,), generator=gen))
    qmin, qmax = [(-128, 127), (lo, hi)][int(torch.randint(0, 2, (1,), generator=gen))]
    return dict(multiplier=tuple(m), shift=tuple(s), zero_point=int(torch.randint(-20, 21, (1,), generator=gen)),
                qmin=qmin, qmax=qmax)


ACTS = [dict(act="none"), dict(act="relu"), dict(act="clip", act_lo=-3000.0, act_hi=2500.0),
        dict(act="clip", act_lo=-1e10, act_hi=5e9)]  # bounds beyond int32: the int32 saturation decides


def conv_case(seed: int) -> isa.Conv2d:
    gen = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=gen))  # noqa: E731
    groups = [1, 1, 2, 0][r(0, 3)]           # 0: depthwise
    cin = r(1, 6) * (2 if groups == 2 else 1) if groups else r(2, 9)
    groups = groups or cin
    cout = cin * r(1, 2) if groups == cin else r(1, 12) * groups
    kh, kw, sh, sw, dh, dw = r(1, 3), r(1, 3), r(1, 2), r(1, 2), r(1, 2), 1
    pad = (r(0, 2), r(0, 2), r(0, 2), r(0, 1))
    n, h, w = r(1, 2), r(4, 9), r(4, 13)
    if h + pad[0] + pad[1] < dh * (kh - 1) + 1:
        h = dh * (kh - 1) + 1
    x, wt = L(0, 0, (n, cin, h, w), "int8"), L(0, 0, (1, cout, 1, cin // groups * kh * kw), "int8")
    probe = isa.Conv2d(id=0, x=x, w=wt, out=L(0, 0, (n, cout, 1, 1), "int32"), kernel=(kh, kw), stride=(sh, sw),
                       pad=pad, dilation=(dh, dw), groups=groups)
    ho, wo = probe.out_hw()
    bias = L(0, 0, (1, cout, 1, 1), "int32") if r(0, 3) else None
    return isa.Conv2d(id=0, layer=f"conv{seed}", x=x, w=wt, bias=bias, out=L(0, 0, (n, cout, ho, wo), "int8"),
                      kernel=(kh, kw), stride=(sh, sw), pad=pad, dilation=(dh, dw), groups=groups,
                      pad_value=r(-128, 127), **ACTS[r(0, 3)], **rand_requant(gen, cout, bool(r(0, 2))))


def matmul_case(seed: int) -> isa.MatMul:
    gen = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=gen))  # noqa: E731
    bsz, m, k, n = r(1, 2), r(1, 13), r(1, 70), r(1, 45)
    bb = [1, bsz][r(0, 1)]
    return isa.MatMul(id=0, layer=f"mm{seed}", a=L(0, 0, (bsz, m, 1, k), "int8"), b=L(0, 0, (bb, k, 1, n), "int8"),
                      bias=L(0, 0, (1, 1, 1, n), "int32") if r(0, 2) else None, out=L(0, 0, (bsz, m, 1, n), "int8"),
                      **ACTS[r(0, 3)], **rand_requant(gen, n, bool(r(0, 2))))


def operands(inst, seed: int) -> list:
    gen = torch.Generator().manual_seed(seed + 1000)
    ops = []
    for name in inst.INPUTS:
        t = getattr(inst, name)
        if t is None:
            ops.append(None)
        elif t.dtype.label == "int32":
            ops.append(torch.randint(-4000, 4000, t.shape, generator=gen, dtype=torch.int32).numpy())
        else:
            ops.append(torch.randint(-128, 128, t.shape, generator=gen, dtype=torch.int8).numpy())
    return ops


def model(inst, ops) -> np.ndarray:
    if isinstance(inst, isa.Conv2d):
        return model_epilogue(int_conv(*ops, inst), inst, 1)
    return model_epilogue(int_matmul(*ops), inst, 3)


CONVS = [conv_case(s) for s in range(24)]
MATMULS = [matmul_case(s) for s in range(100, 116)]
CASES = CONVS + MATMULS


def _check(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.int8 and got.shape == want.shape, (what, got.dtype, got.shape)
    bad = got != want
    assert not bad.any(), f"{what}: {int(bad.sum())} of {bad.size} differ (got {got[bad][:4]}, want {want[bad][:4]})"


@pytest.mark.parametrize("inst", CASES, ids=[c.layer for c in CASES])
def test_reference_and_c_match_the_integer_model(inst):
    inst.check(get_target("bm1684x"))
    ops = operands(inst, zlib.crc32(inst.layer.encode()))
    want = model(inst, ops)
    _check(kernels_ref.KERNELS[inst.OPCODE](inst, ops), want, "reference")
    levels = simd_levels()
    try:
        for lv in levels:
            _cmodel.set_simd(lv)
            _check(kernels_c.KERNELS[inst.OPCODE](inst, ops), want, f"C {lv}")
    finally:
        _cmodel.set_simd(levels[-1])


def test_the_integer_model_samples_every_feature():
    """The random cases cover what they claim: pads read non-zero values, per-channel and per-tensor requants,
    every activation, narrowed bounds, saturated outputs, depthwise and grouped convs."""
    assert any(c.pad_value and any(c.pad) for c in CONVS)
    assert {len(c.multiplier) > 1 for c in CASES} == {True, False}
    assert {c.act for c in CASES} == {"none", "relu", "clip"}
    assert any((c.qmin, c.qmax) != (-128, 127) for c in CASES)
    assert any(c.groups == c.x.shape[1] > 1 for c in CONVS) and any(1 < c.groups < c.x.shape[1] for c in CONVS)
    outs = np.concatenate([model(c, operands(c, zlib.crc32(c.layer.encode()))).reshape(-1) for c in CASES[:8]])
    assert (outs == 127).any() and (outs == -128).any() and ((outs > -128) & (outs < 127)).mean() > 0.3


@pytest.mark.parametrize("inst", CONVS[:6] + MATMULS[:4], ids=[c.layer for c in CONVS[:6] + MATMULS[:4]])
def test_fused_equals_the_unfused_chain(inst):
    """conv/matmul (int32) -> requant (int8) -> clip == the fused instruction, on every kernel set."""
    ops = operands(inst, zlib.crc32(inst.layer.encode()))
    out32 = L(0, 0, inst.out.shape, "int32")
    plain = dict(multiplier=(), shift=(), zero_point=0, qmin=-128, qmax=127)
    unfused = dataclasses.replace(inst, out=out32, **plain)
    for ks in (kernels_ref, kernels_c):
        acc = ks.KERNELS[inst.OPCODE](unfused, ops)
        c = inst.out.shape[1] if isinstance(inst, isa.Conv2d) else 1
        if isinstance(inst, isa.MatMul) and len(inst.multiplier) > 1:  # per column: requant the transposed tile
            acc = np.ascontiguousarray(acc.transpose(0, 3, 2, 1))
            c = acc.shape[1]
        rq = isa.Requant(id=1, x=L(0, 0, acc.shape, "int32"), out=L(0, 0, acc.shape, "int8"),
                         multiplier=inst.multiplier, shift=inst.shift, zero_point=inst.zero_point)
        assert c in (1, acc.shape[1])
        y = ks.requant(rq, [acc])
        y = ks.activation(isa.Activation(id=2, op="clip", x=rq.out, out=rq.out, lo=inst.qmin, hi=inst.qmax), [y])
        if isinstance(inst, isa.MatMul) and len(inst.multiplier) > 1:
            y = np.ascontiguousarray(y.transpose(0, 3, 2, 1))
        _check(ks.KERNELS[inst.OPCODE](inst, ops), y, ks.__name__)


def test_requant_epilogue_spec_matches_the_integer_model():
    gen = torch.Generator().manual_seed(3)
    for v in [0, 1, -1, I32_MAX, I32_MIN, 2**40, -2**40] + torch.randint(-2**33, 2**33, (200,), generator=gen).tolist():
        for m, s, zp, lo, hi in [(1 << 30, 31, 0, -128, 127), ((1 << 31) - 1, 63, -7, -128, 127), (1, 0, 3, -5, 9),
                                 (123456789, 40, 0, 0, 127)]:
            want = py_requant(max(I32_MIN, min(I32_MAX, v)), m, s, zp, lo, hi)
            assert kernels_ref.requant_epilogue(v, m, s, zp, lo, hi) == want


def test_avx2_row_tails_and_per_column_parameters():
    """Rows whose length is not a multiple of the 8-wide vector loop, per-column requant with 1..40 columns."""
    gen = torch.Generator().manual_seed(11)
    for n in (1, 7, 8, 9, 16, 23, 40):
        inst = isa.MatMul(id=0, a=L(0, 0, (1, 7, 1, 33), "int8"), b=L(0, 0, (1, 33, 1, n), "int8"),
                          bias=L(0, 0, (1, 1, 1, n), "int32"), out=L(0, 0, (1, 7, 1, n), "int8"),
                          **rand_requant(gen, n, True))
        ops = operands(inst, n)
        want = model(inst, ops)
        levels = simd_levels()
        try:
            for lv in levels:
                _cmodel.set_simd(lv)
                _check(kernels_c.matmul(inst, ops), want, f"n={n} {lv}")
        finally:
            _cmodel.set_simd(levels[-1])


def test_large_tiles_use_every_thread_split():
    """A conv big enough for the threaded GEMM (column panels and shared-B modes): same result for 1 and 3
    threads and equal to the integer model."""
    gen = torch.Generator().manual_seed(5)
    for shape, cout in (((1, 32, 30, 30), 48), ((1, 96, 7, 7), 70)):
        n, cin, h, w = shape
        inst = isa.Conv2d(id=0, x=L(0, 0, shape, "int8"), w=L(0, 0, (1, cout, 1, cin * 9), "int8"),
                          bias=L(0, 0, (1, cout, 1, 1), "int32"), out=L(0, 0, (n, cout, h, w), "int8"),
                          kernel=(3, 3), pad=(1, 1, 1, 1), pad_value=-128, act="relu",
                          **rand_requant(gen, cout, True))
        ops = operands(inst, 1)
        want = model(inst, ops)
        try:
            for t in (1, 3):
                kernels_c.set_threads(t)
                _check(kernels_c.conv2d(inst, ops), want, f"{shape} threads={t}")
        finally:
            kernels_c.set_threads(0)


TRITON = [CONVS[i] for i in (0, 1, 3, 5)] + MATMULS[:3]


@pytest.mark.skipif(not kernels_triton.available(), reason="triton is not installed")
@pytest.mark.parametrize("inst", TRITON, ids=[c.layer for c in TRITON])
def test_triton_matches_the_integer_model(inst):
    ops = operands(inst, zlib.crc32(inst.layer.encode()))
    _check(kernels_triton.KERNELS[inst.OPCODE](inst, ops), model(inst, ops), "triton")


# ---- field checks, file, timing ---------------------------------------------------------------------------------

def _conv(**kw) -> isa.Conv2d:
    base = dict(id=4, layer="c", x=L(0, 0, (1, 4, 6, 6), "int8"), w=L(0, 1024, (1, 8, 1, 36), "int8"),
                out=L(0, 2048, (1, 8, 6, 6), "int8"), kernel=(3, 3), pad=(1, 1, 1, 1), multiplier=(1 << 30,),
                shift=(35,))
    return isa.Conv2d(**{**base, **kw})


@pytest.mark.parametrize("kw, field, msg", [
    (dict(multiplier=(1, 2, 3), shift=(1, 2, 3)), "multiplier", "1 or 8 multipliers"),
    (dict(shift=(64,)), "shift", "[0, 63]"),
    (dict(multiplier=(-1,)), "multiplier", "[0, 2^31)"),
    (dict(multiplier=(1 << 31,)), "multiplier", "[0, 2^31)"),
    (dict(shift=()), "multiplier", "as many shifts"),
    (dict(qmin=5, qmax=4), "qmin", "int8 bounds"),
    (dict(qmax=128), "qmin", "int8 bounds"),
    (dict(out=L(0, 2048, (1, 8, 6, 6), "int32")), "out", "fused requant produces int8"),
    (dict(multiplier=(), shift=(), zero_point=3, out=L(0, 2048, (1, 8, 6, 6), "int32")), "zero_point",
     "only apply with a fused requant"),
    (dict(multiplier=(), shift=()), "out", "integer MACs produce int32"),
    (dict(pad_value=128), "pad_value", "not an int8 value"),
    (dict(x=L(0, 0, (1, 4, 6, 6)), w=L(0, 1024, (1, 8, 1, 36)), out=L(0, 4096, (1, 8, 6, 6)), multiplier=(), shift=(),
          pad_value=1), "pad_value", "needs int8 operands"),
    (dict(x=L(0, 0, (1, 4, 6, 6)), w=L(0, 1024, (1, 8, 1, 36)), out=L(0, 4096, (1, 8, 6, 6))), "multiplier",
     "needs int8 operands"),
])
def test_field_checks_name_the_field(kw, field, msg):
    with pytest.raises(ProgramError, match=rf"instruction 4 \(conv2d, layer 'c'\): field '{field}'.*") as e:
        _conv(**kw).check(get_target("bm1684x"))
    assert msg in str(e.value)


def test_matmul_per_column_length_is_checked():
    inst = isa.MatMul(id=1, a=L(0, 0, (1, 4, 1, 8), "int8"), b=L(0, 64, (1, 8, 1, 5), "int8"),
                      out=L(0, 128, (1, 4, 1, 5), "int8"), multiplier=(1, 2, 3, 4), shift=(1, 1, 1, 1))
    with pytest.raises(ProgramError, match="needs 1 or 5 multipliers"):
        inst.check(get_target("bm1684x"))


def test_c_refuses_bad_requant_arguments():
    """The C entry points check what the kernels rely on, even when called without the ISA's checks."""
    inst = _conv()
    ops = operands(inst, 0)
    out = np.empty(inst.out.shape, np.int8)
    args = lambda rq, pv=0: (out, 3, ops[0], 3, ops[1], 3, None, 0, (1, 4, 6, 6), (8, 4, 3, 3), (6, 6), (1, 1),  # noqa
                             (1, 1), (1, 1), 1, 0, 0.0, 0.0, pv, rq)
    m, s = np.array([1 << 30], np.int32), np.array([35], np.int32)
    for rq, pv, msg in [((m, np.array([64], np.int32), 0, -128, 127), 0, "shift outside"),
                        ((np.array([-5], np.int32), s, 0, -128, 127), 0, "multiplier outside"),
                        ((np.ones(3, np.int32), np.ones(3, np.int32), 0, -128, 127), 0, "1 or 8 int32 values"),
                        ((m, s, 0, 10, 9), 0, "bounds"), ((m, s, 0, -128, 127), 300, "pad value")]:
        with pytest.raises(ValueError, match=msg):
            _cmodel.conv2d(*args(rq, pv))


def test_codec_round_trip_and_old_files_are_refused(tmp_path):
    inst = _conv(pad_value=-128, zero_point=-3, qmin=-100, qmax=90, act="relu")
    assert codec.decode(codec.encode(inst)) == inst
    enc = codec.encode(isa.Conv2d(id=0, x=inst.x, w=inst.w, out=L(0, 2048, (1, 8, 6, 6), "int32"), kernel=(3, 3)))
    with pytest.raises(ProgramError, match="field 'multiplier'"):
        codec.decode({**enc, "multiplier": [1.5]})
    from torch_tpu.cmodel.builder import ProgramBuilder
    from torch_tpu.cmodel.program import FORMAT_VERSION, MAGIC, Program
    b = ProgramBuilder("bm1684x")
    x = b.load(b.input("x", (1, 2, 2, 2), "f32"))
    b.output("y", b.store(x))
    path = tmp_path / "p.tpu"
    b.build().save(path)
    data = bytearray(path.read_bytes())
    assert data[:8] == MAGIC and int.from_bytes(data[8:12], "little") == FORMAT_VERSION == 2
    data[8:12] = (1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ProgramError, match="format version 1, this cmodel reads 2"):
        Program.load(path)


def test_fused_requant_timing_is_an_epilogue():
    """3x3 conv 64->64 on 56x56 int8: 7076 cycles with an int32 output; fused, the int8 results stream out at
    64 per cycle per lane (+ ceil(3136 / 64) = 49) instead of a Requant instruction (20 + 3136 / 16 = 216)."""
    t = get_target("bm1684x")
    x, w = L(0, 0, (1, 64, 56, 56), "int8"), L(0, 0, (1, 64, 1, 576), "int8")
    plain = isa.Conv2d(id=0, x=x, w=w, out=L(0, 0, (1, 64, 56, 56), "int32"), kernel=(3, 3), pad=(1, 1, 1, 1))
    fused = isa.Conv2d(id=0, x=x, w=w, out=L(0, 0, (1, 64, 56, 56), "int8"), kernel=(3, 3), pad=(1, 1, 1, 1),
                       multiplier=(1 << 30,), shift=(40,))
    rq = isa.Requant(id=1, x=plain.out, out=fused.out, multiplier=(1 << 30,), shift=(40,))
    assert instruction_cost(plain, t).cycles == 7076
    assert instruction_cost(fused, t).cycles == 7076 + 49
    assert instruction_cost(rq, t).cycles == 216
    mm = isa.MatMul(id=0, a=L(0, 0, (1, 128, 1, 256), "int8"), b=L(0, 0, (1, 256, 1, 512), "int8"),
                    out=L(0, 0, (1, 128, 1, 512), "int8"), multiplier=(1,), shift=(0,))
    # MACs: 2 lane groups x 512 x 256 / 256 = 1024 (+ 20); epilogue 2 x 512 / 64 = 16
    assert instruction_cost(mm, t).cycles == 20 + 1024 + 16


# ---- the element-wise steps of int8 residual adds (vectorised paths) --------------------------------------------

@pytest.mark.parametrize("x_dt, out_dt", [("int8", "int32"), ("int8", "int8"), ("int32", "int32"), ("int32", "int8")])
def test_requant_vector_paths_match_the_integer_model(x_dt, out_dt):
    """Every SIMD level, planes of 4k + 3 elements (vector body and scalar tail), per-channel extremes."""
    gen = torch.Generator().manual_seed(21)
    lo, hi = (-128, 127) if x_dt == "int8" else (-2**31, 2**31)
    x = torch.randint(lo, hi, (2, 5, 3, 7), generator=gen, dtype=torch.int64)
    x.view(-1)[:4] = torch.tensor([lo, hi - 1, 0, -1])
    mult, shift = (0, 1, (1 << 31) - 1, 1 << 30, 1518500250), (0, 1, 63, 31, 3)
    omin, omax = (-128, 127) if out_dt == "int8" else (I32_MIN, I32_MAX)
    inst = isa.Requant(id=0, x=L(0, 0, x.shape, x_dt), out=L(0, 0, x.shape, out_dt), multiplier=mult, shift=shift,
                       zero_point=-9)
    xs = x.numpy().astype(np.int8 if x_dt == "int8" else np.int32)
    want = np.array([py_requant(int(v), mult[c], shift[c], -9, omin, omax)
                     for (_, c, _, _), v in np.ndenumerate(xs)]).reshape(x.shape)
    levels = simd_levels()
    try:
        for lv in levels:
            _cmodel.set_simd(lv)
            assert np.array_equal(kernels_c.requant(inst, [xs]).astype(np.int64), want), lv
    finally:
        _cmodel.set_simd(levels[-1])


@pytest.mark.parametrize("op, a_dt, b", [("add", "int32", True), ("sub", "int32", True), ("sub", "int8", False),
                                         ("add", "int32", False)])
def test_int32_add_sub_paths_saturate_like_the_reference(op, a_dt, b):
    gen = torch.Generator().manual_seed(2)
    shape = (1, 3, 5, 4099)                  # more than one 4096-element chunk
    lo, hi = (-128, 128) if a_dt == "int8" else (-2**31, 2**31)
    a = torch.randint(lo, hi, shape, generator=gen).numpy().astype(np.int8 if a_dt == "int8" else np.int32)
    bb = torch.randint(-2**31, 2**31, shape, generator=gen).numpy().astype(np.int32) if b else None
    inst = isa.Eltwise(id=0, op=op, a=L(0, 0, shape, a_dt), b=L(0, 0, shape, "int32") if b else None,
                       scalar=0.0 if b else -2**31 + 5 if a_dt == "int32" else 100.0, out=L(0, 0, shape, "int32"))
    want = kernels_ref.eltwise(inst, [a, bb])
    assert (want == I32_MAX).any() or (want == I32_MIN).any() or a_dt == "int8"   # saturation is exercised
    levels = simd_levels()
    try:
        for lv in levels:
            _cmodel.set_simd(lv)
            assert np.array_equal(kernels_c.eltwise(inst, [a, bb]), want), lv
    finally:
        _cmodel.set_simd(levels[-1])

"""The Triton kernel set: conv2d (im2col + GEMM) and matmul on one blocked GEMM kernel with a fused
bias/activation/int8-requant epilogue, binary eltwise, unary activations. Same signature and numerics as
:mod:`torch_tpu.cmodel.kernels_ref`; the other opcodes (pool2d, lut, requant, cast, reduce, softmax,
layernorm, compare, select, gather) are in :mod:`torch_tpu.cmodel.kernels_triton_misc`, merged into ``KERNELS``.

The kernels accumulate in f32 (``tl.dot`` with ``input_precision="ieee"``: no TF32) or int32 for int8,
run the epilogue in f32 / int64, and the wrapper rounds ONCE into the output dtype
(torch's ``.to``: nearest even; saturation for integers).

On a CUDA device they run on the GPU. Without one they run in Triton's interpreter, which must be
switched on by setting ``TRITON_INTERPRET=1`` in the environment before this module is imported
(the test suite's conftest does).

Example:
    >>> available()   # doctest: +SKIP
    True
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.kernels_ref import KernelFn, Operands, f32, from_torch, i64
from torch_tpu.errors import TorchTpuError

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None


def device() -> str:
    """``cuda`` when a GPU is present, else ``cpu`` (Triton interpreter)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def available() -> bool:
    """Whether the Triton kernels can run here (triton installed; a GPU or TRITON_INTERPRET=1)."""
    return triton is not None and (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1")


def _require() -> None:
    if not available():
        raise TorchTpuError("Triton kernels need triton and a CUDA device, or TRITON_INTERPRET=1 set before "
                            "torch_tpu.cmodel.kernels_triton is imported")


_ACT = {name: code for code, name in enumerate(isa.FUSED_ACTS)}
_EW = {name: code for code, name in enumerate(isa.ELTWISE_OPS)}
#: activations with a Triton form (the integer activations and the rest fall back to the C set)
TRITON_ACTIVATIONS = ("relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "exp", "log", "sqrt",
                      "rsqrt", "abs", "neg", "hardsigmoid", "hardswish", "reciprocal", "square", "erf")
_UN = {name: code for code, name in enumerate(TRITON_ACTIVATIONS)}

if triton is not None:

    @triton.jit
    def _tanh(x):
        # small |x|: odd Taylor series (error < 1e-11 relative); else (1 - e) / (1 + e), e = exp(-2|x|)
        ax = tl.abs(x)
        x2 = x * x
        small = x * (1.0 + x2 * (-0.333333333333 + x2 * (0.133333333333 + x2 * (-0.053968253968))))
        e = tl.exp(-2.0 * ax)
        big = (1.0 - e) / (1.0 + e)
        big = tl.where(x < 0, -big, big)
        return tl.where(ax < 0.0625, small, big)

    @triton.jit
    def _gemm_kernel(a_ptr, b_ptr, c_ptr, bias_ptr, m_ptr, s_ptr, M, N, K, lo, hi, ilo, ihi, zp, qlo, qhi,
                     HAS_BIAS: tl.constexpr, ACT: tl.constexpr, IS_INT: tl.constexpr, RQ: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        """c[M, N] = act(a[M, K] . b[K, N] + bias[N]); f32 or int32 accumulation, f32 / int64 epilogue; with RQ
        the int8 requant of kernels_ref.requant_epilogue per column (multiplier m[N], shift s[N]) in the epilogue."""
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        if IS_INT:
            acc = tl.zeros((BM, BN), dtype=tl.int32)
        else:
            acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            a = tl.load(a_ptr + rm[:, None] * K + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0)
            b = tl.load(b_ptr + kk[:, None] * N + rn[None, :], mask=(kk[:, None] < K) & (rn[None, :] < N), other=0)
            if IS_INT:
                acc += tl.dot(a, b)
            else:
                acc += tl.dot(a, b, input_precision="ieee")
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        if IS_INT:
            y = acc.to(tl.int64)
            if HAS_BIAS:
                y += tl.load(bias_ptr + rn, mask=rn < N, other=0).to(tl.int64)[None, :]
            if ACT == 1:
                y = tl.maximum(y, 0)
            if ACT == 3:
                y = tl.minimum(tl.maximum(y, ilo), ihi)
            if RQ:
                y = tl.minimum(tl.maximum(y, -2147483648), 2147483647)
                y = y * tl.load(m_ptr + rn, mask=rn < N, other=0).to(tl.int64)[None, :]
                sh = tl.load(s_ptr + rn, mask=rn < N, other=0).to(tl.int64)[None, :]
                half = tl.where(sh > 0, tl.full(sh.shape, 1, tl.int64) << tl.maximum(sh - 1, 0), 0)
                mag = (tl.abs(y) + half) >> sh
                y = tl.where(y < 0, -mag, mag) + zp
                y = tl.minimum(tl.maximum(y, qlo), qhi)
        else:
            y = acc
            if HAS_BIAS:
                y += tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
            if ACT == 1:
                y = tl.maximum(y, 0.0)
            if ACT == 2:
                y = tl.minimum(tl.maximum(y, 0.0), 6.0)
            if ACT == 3:
                y = tl.minimum(tl.maximum(y, lo), hi)
        tl.store(c_ptr + rm[:, None] * N + rn[None, :], y, mask=mask)

    @triton.jit
    def _binary_kernel(a_ptr, b_ptr, o_ptr, n, OP: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        a = tl.load(a_ptr + offs, mask=m, other=0)
        b = tl.load(b_ptr + offs, mask=m, other=1)
        if OP == 0:
            y = a + b
        elif OP == 1:
            y = a - b
        elif OP == 2:
            y = a * b
        elif OP == 3:
            y = tl.div_rn(a, b)  # IEEE division: a plain / is approximate on CUDA
        elif OP == 4:
            y = tl.where((a > b) | (a != a), a, b)
        else:
            y = tl.where((a < b) | (a != a), a, b)
        tl.store(o_ptr + offs, y, mask=m)

    @triton.jit
    def _unary_kernel(x_ptr, o_ptr, n, alpha, lo, hi, OP: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        x = tl.load(x_ptr + offs, mask=m, other=1.0)
        if OP == 0:
            y = tl.maximum(x, 0.0)
        elif OP == 1:
            y = tl.minimum(tl.maximum(x, 0.0), 6.0)
        elif OP == 2:
            y = tl.minimum(tl.maximum(x, lo), hi)
        elif OP == 3:
            y = tl.where(x > 0, x, x * alpha)
        elif OP == 4:
            y = 1.0 / (1.0 + tl.exp(-x))
        elif OP == 5:
            y = _tanh(x)
        elif OP == 6:
            y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
        elif OP == 7:
            y = x / (1.0 + tl.exp(-x))
        elif OP == 8:
            y = tl.exp(x)
        elif OP == 9:
            y = tl.log(x)
        elif OP == 10:
            y = tl.sqrt(x)
        elif OP == 11:
            y = tl.div_rn(1.0, tl.sqrt_rn(x))
        elif OP == 12:
            y = tl.abs(x)
        elif OP == 13:
            y = -x
        elif OP == 14:
            y = tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
        elif OP == 15:
            y = x * tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
        elif OP == 16:
            y = tl.div_rn(1.0, x)
        elif OP == 17:
            y = x * x
        else:
            y = tl.math.erf(x)
        tl.store(o_ptr + offs, y, mask=m)


def gemm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, act: str = "none", lo: float = 0.0,
         hi: float = 0.0, requant: tuple | None = None) -> torch.Tensor:
    """``act(a @ b + bias)`` for 2-D ``a`` (M, K), ``b`` (K, N): f32 operands -> f32, int8 -> int64; ``requant``
    = (multiplier, shift, zero_point, qmin, qmax) with int32 tensors of N values: the int8 fused requant."""
    _require()
    is_int = a.dtype == torch.int8
    m, k = a.shape
    n = b.shape[1]
    dev = device()
    a, b = a.contiguous().to(dev), b.contiguous().to(dev)
    c = torch.empty((m, n), dtype=torch.int64 if is_int else torch.float32, device=dev)
    if bias is not None:
        bias = bias.contiguous().to(dev)
    mult, shift, zp, qlo, qhi = requant if requant is not None else (c, c, 0, -128, 127)
    if requant is not None:
        mult, shift = mult.contiguous().to(dev), shift.contiguous().to(dev)
    bm, bn, bk = 32, 32, 32
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _gemm_kernel[grid](a, b, c, bias if bias is not None else c, mult, shift, m, n, k, float(lo), float(hi), int(lo),
                       int(hi), int(zp), int(qlo), int(qhi), HAS_BIAS=bias is not None, ACT=_ACT[act], IS_INT=is_int,
                       RQ=requant is not None, BM=bm, BN=bn, BK=bk)
    return c.cpu()


def _requant_cols(inst: isa.Conv2d | isa.MatMul, n: int, start: int = 0) -> tuple | None:
    """The fused requant of ``inst`` for ``n`` GEMM columns from channel ``start`` (per tensor: repeated)."""
    if not inst.multiplier:
        return None
    m, s = (torch.tensor(v, dtype=torch.int32) for v in (inst.multiplier, inst.shift))
    if len(inst.multiplier) == 1:
        m, s = m.expand(n), s.expand(n)
    else:
        m, s = m[start:start + n], s[start:start + n]
    return m, s, inst.zero_point, inst.qmin, inst.qmax


def _mac_operands(arr: np.ndarray, t: isa.LocalTensor) -> torch.Tensor:
    return f32(arr, t.dtype) if t.dtype.is_float else torch.from_numpy(np.ascontiguousarray(arr))


def conv2d(inst: isa.Conv2d, ops: Operands) -> np.ndarray:
    """im2col (F.unfold over the input padded with ``pad_value``) + the Triton GEMM per (batch, group), bias,
    activation and the int8 requant fused in the GEMM epilogue."""
    x, w, b = ops
    n, cin, _, _ = inst.x.shape
    cout, ho, wo = inst.out.shape[1:]
    g = inst.groups
    kh, kw = inst.kernel
    pt, pb, pl, pr = inst.pad
    is_int = not inst.x.dtype.is_float
    xt = _mac_operands(x, inst.x)
    # unfold needs a float tensor; int8 values are exact in f32 and converted back
    cols = F.unfold(F.pad(xt.float() if is_int else xt, (pl, pr, pt, pb), value=float(inst.pad_value)), (kh, kw),
                    dilation=inst.dilation, stride=inst.stride)
    if is_int:
        cols = cols.to(torch.int8)
    wt = _mac_operands(w, inst.w).reshape(cout, -1)
    bt = None if b is None else (f32(b, inst.bias.dtype) if not is_int else i64(b, inst.bias.dtype).to(torch.int32))
    cout_g, kc = cout // g, cin // g * kh * kw
    out = torch.empty((n, cout, ho * wo), dtype=torch.int64 if is_int else torch.float32)
    for i in range(n):
        for gi in range(g):
            col = cols[i, gi * kc:(gi + 1) * kc]
            bias_g = None if bt is None else bt.reshape(-1)[gi * cout_g:(gi + 1) * cout_g]
            # out^T (P, Cout_g) = col^T . W_g^T, so the per-output-channel bias runs along the GEMM's columns
            out[i, gi * cout_g:(gi + 1) * cout_g] = gemm(col.t(), wt[gi * cout_g:(gi + 1) * cout_g].t(), bias_g,
                                                          inst.act, inst.act_lo, inst.act_hi,
                                                          _requant_cols(inst, cout_g, gi * cout_g)).t()
    return from_torch(out.reshape(inst.out.shape), inst.out.dtype)


def matmul(inst: isa.MatMul, ops: Operands) -> np.ndarray:
    """Batched matmul: the Triton GEMM per batch item."""
    a, b, bias = ops
    at, bt = _mac_operands(a, inst.a)[:, :, 0, :], _mac_operands(b, inst.b)[:, :, 0, :]
    is_int = not inst.a.dtype.is_float
    biast = None if bias is None else (i64(bias, inst.bias.dtype).to(torch.int32) if is_int
                                       else f32(bias, inst.bias.dtype)).reshape(-1)
    rq = _requant_cols(inst, inst.out.shape[3])
    outs = [gemm(at[i], bt[i if bt.shape[0] > 1 else 0], biast, inst.act, inst.act_lo, inst.act_hi, rq)
            for i in range(at.shape[0])]
    return from_torch(torch.stack(outs)[:, :, None, :], inst.out.dtype)


def eltwise(inst: isa.Eltwise, ops: Operands) -> np.ndarray:
    """Broadcast in torch (expand), then one elementwise Triton kernel in f32 or int64."""
    _require()
    a, b = ops
    is_float = inst.a.dtype.is_float
    cv = f32 if is_float else i64
    shape = inst.out.shape
    at = cv(a, inst.a.dtype).expand(shape).contiguous()
    if b is not None:
        bt = cv(b, inst.b.dtype).expand(shape).contiguous()
    else:
        bt = torch.full(shape, inst.scalar if is_float else int(inst.scalar),
                        dtype=torch.float32 if is_float else torch.int64)
    dev = device()
    at, bt = at.to(dev), bt.to(dev)
    out = torch.empty_like(at)
    n = at.numel()
    _binary_kernel[(triton.cdiv(n, 1024),)](at, bt, out, n, OP=_EW[inst.op], BLOCK=1024)
    return from_torch(out.cpu(), inst.out.dtype)


def activation(inst: isa.Activation, ops: Operands) -> np.ndarray:
    """Unary activation in f32 on Triton (float tiles and the ops in TRITON_ACTIVATIONS)."""
    _require()
    (x,) = ops
    if not inst.x.dtype.is_float or inst.op not in _UN:
        raise TorchTpuError(f"Triton activation has no kernel for {inst.op} on {inst.x.dtype.label}")
    xt = f32(x, inst.x.dtype).contiguous().to(device())
    out = torch.empty_like(xt)
    n = xt.numel()
    _unary_kernel[(triton.cdiv(n, 1024),)](xt, out, n, float(inst.alpha), float(inst.lo), float(inst.hi),
                                           OP=_UN[inst.op], BLOCK=1024)
    return from_torch(out.cpu(), inst.out.dtype)


def handles(inst: isa.Instruction) -> bool:
    """Whether this set has a kernel for ``inst`` (else the fallback set runs it)."""
    if isinstance(inst, isa.Activation):
        return inst.x.dtype.is_float and inst.op in _UN
    return inst.OPCODE in KERNELS


KERNELS: dict[str, KernelFn] = {"conv2d": conv2d, "matmul": matmul, "eltwise": eltwise, "activation": activation}

# pool2d, lut, requant, cast, reduce, softmax, layernorm, compare, select, gather (imported last: that module reads
# device() / _require() from this one)
from torch_tpu.cmodel.kernels_triton_misc import KERNELS as _MISC  # noqa: E402

KERNELS.update(_MISC)

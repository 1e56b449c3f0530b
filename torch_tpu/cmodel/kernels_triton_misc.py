"""Triton kernels for the cmodel opcodes besides the MAC / eltwise / activation ones: pool2d, lut, requant, qadd,
cast, reduce, softmax, layernorm, compare, select, gather. Same signature and numerics as
:mod:`torch_tpu.cmodel.kernels_ref` (the definition); :mod:`torch_tpu.cmodel.kernels_triton` merges this table
into its ``KERNELS``.

The kernels read the operands in their storage dtype (bf16 widens to f32 exactly) and write the output in its
storage dtype, so the one rounding happens inside the kernel:

* integers are exact in int64 and saturate to the output dtype (requant: ``rshift_round_half_away(x * m, s) + zp``,
  the product exact since ``|x| < 2^31`` and ``m < 2^31``);
* floats compute in f32 with correctly rounded division and square root (``tl.div_rn``, ``tl.sqrt_rn``; a plain
  ``/`` is an approximate division on CUDA), then round once: f16 through Triton's conversion (nearest even),
  bf16 through :func:`_bf16_bits`, an integer formulation of nearest even (the interpreter's own f32 -> bf16 cast
  truncates);
* float -> int casts round in integers (the f32 quotient is split into its truncation and an exact fraction),
  so neither f64 nor a rounding intrinsic is needed; an integer compared with a scalar becomes an interval test
  with integer bounds (:func:`int_interval`), exact without f64;
* lut, select and gather move storage bits (as int8/int16/int32), so every dtype is copied exactly.

Broadcast operands (compare, select) are read with stride 0 on their size-1 dims inside the kernel; reduce and
softmax address their axes with strides too, so no operand is rearranged on the host.

Kernels run on CUDA when present, else in Triton's interpreter (``TRITON_INTERPRET=1`` set before triton is
imported, as for :mod:`torch_tpu.cmodel.kernels_triton`).

Example:
    >>> int_interval("lt", 2.5)   # x < 2.5  <=>  x in [-2^40, 2]
    (-1099511627776, 2, False)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.kernels_ref import KernelFn, Operands, to_torch
from torch_tpu.cmodel.operands import DType, LocalTensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton is optional
    triton = None

#: beyond every integer storage value (int32 at most): the open end of an integer interval
_BIG = 1 << 40
_BLOCK = 1024
#: storage bits of an element of each size, for the kernels that copy values unchanged
_BITS = {1: np.int8, 2: np.int16, 4: np.int32}
_TORCH_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32}


def _device() -> str:
    """The device the kernels run on (checked: triton present, a GPU or the interpreter)."""
    # imported here: kernels_triton imports this module at its end to merge the tables
    from torch_tpu.cmodel.kernels_triton import _require, device
    _require()
    return device()


if triton is not None:

    @triton.jit
    def _offset(idx, s1, s2, s3, t0, t1, t2, t3):
        """Element offset of flat index ``idx`` over a shape (., s1, s2, s3) in a tensor with strides t0..t3."""
        w = idx % s3
        r = idx // s3
        h = r % s2
        r = r // s2
        return (r // s1) * t0 + (r % s1) * t1 + h * t2 + w * t3

    @triton.jit
    def _bf16_bits(y):
        """f32 -> bf16 bits, round to nearest even (torch's rule; NaN -> 0x7FC0), as int16."""
        u = y.to(tl.uint32, bitcast=True)
        r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        r = tl.where(y != y, 0x7FC0, r)
        return r.to(tl.int16)

    @triton.jit
    def _store_float(ptr, y, mask, OUT_BF16: tl.constexpr):
        """Round f32 ``y`` once into the output dtype (f32 as is, f16 nearest even, bf16 bits) and store."""
        if OUT_BF16:
            tl.store(ptr, _bf16_bits(y), mask=mask)
        else:
            tl.store(ptr, y.to(ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _store_int(ptr, v, mask, qlo, qhi):
        """Saturate int64 ``v`` to [qlo, qhi] (the output dtype's range) and store."""
        tl.store(ptr, tl.minimum(tl.maximum(v, qlo), qhi).to(ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _rshift_rhaz(v, s):
        """``sign(v) * ((|v| + 2^(s-1)) >> s)`` over int64 ``v`` and shifts ``s`` in [0, 63] (same shape)."""
        half = tl.where(s > 0, tl.full(v.shape, 1, tl.int64) << tl.maximum(s - 1, 0), 0)
        mag = (tl.abs(v) + half) >> s
        return tl.where(v < 0, -mag, mag)

    @triton.jit
    def _pool_kernel(x_ptr, o_ptr, total, H, W, Ho, Wo, kh, kw, sh, sw, pt, pl, area, mult, shift, qlo, qhi,
                     MAX: tl.constexpr, IS_FLOAT: tl.constexpr, INCLUDE_PAD: tl.constexpr, OUT_BF16: tl.constexpr,
                     BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < total
        ow = offs % Wo
        oh = (offs // Wo) % Ho
        base = (offs // (Wo * Ho)) * (H * W)
        h0 = oh * sh - pt
        w0 = ow * sw - pl
        cnt = tl.zeros((BLOCK,), dtype=tl.int32)
        if IS_FLOAT:
            if MAX:
                acc = tl.full((BLOCK,), float("-inf"), tl.float32)
            else:
                acc = tl.zeros((BLOCK,), dtype=tl.float32)
        else:
            if MAX:
                acc = tl.full((BLOCK,), -1099511627776, tl.int64)   # -2^40: a window of pads only saturates
            else:
                acc = tl.zeros((BLOCK,), dtype=tl.int64)
        for ky in range(0, kh):
            for kx in range(0, kw):
                h = h0 + ky
                w = w0 + kx
                valid = m & (h >= 0) & (h < H) & (w >= 0) & (w < W)
                v = tl.load(x_ptr + base + h * W + w, mask=valid, other=0)
                cnt += valid.to(tl.int32)
                if IS_FLOAT:
                    v = v.to(tl.float32)
                    if MAX:
                        acc = tl.where(valid & ((v > acc) | (v != v)), v, acc)
                    else:
                        acc += v
                else:
                    v = v.to(tl.int64)
                    if MAX:
                        acc = tl.where(valid & (v > acc), v, acc)
                    else:
                        acc += v
        if IS_FLOAT:
            if not MAX:
                if INCLUDE_PAD:
                    acc = tl.div_rn(acc, tl.zeros((BLOCK,), dtype=tl.float32) + area)
                else:
                    acc = tl.div_rn(acc, cnt.to(tl.float32))
            _store_float(o_ptr + offs, acc, m, OUT_BF16)
        else:
            if not MAX:
                acc = _rshift_rhaz(acc * mult, tl.zeros((BLOCK,), dtype=tl.int64) + shift)
            _store_int(o_ptr + offs, acc, m, qlo, qhi)

    @triton.jit
    def _lut_kernel(x_ptr, t_ptr, o_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        idx = tl.load(x_ptr + offs, mask=m, other=0).to(tl.int32) & 0xFF   # x's byte, unsigned
        tl.store(o_ptr + offs, tl.load(t_ptr + idx, mask=m), mask=m)

    @triton.jit
    def _requant_kernel(x_ptr, o_ptr, m_ptr, s_ptr, n, C, HW, zp, qlo, qhi, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        ch = (offs // HW) % C
        x = tl.load(x_ptr + offs, mask=m, other=0).to(tl.int64)
        mult = tl.load(m_ptr + ch, mask=m, other=0).to(tl.int64)
        sh = tl.load(s_ptr + ch, mask=m, other=0).to(tl.int64)
        _store_int(o_ptr + offs, _rshift_rhaz(x * mult, sh) + zp, m, qlo, qhi)

    @triton.jit
    def _qadd_kernel(a_ptr, b_ptr, o_ptr, n, sign, a_zp, a_m, a_s, b_zp, b_m, b_s, mult, shift, zp, qlo, qhi,
                     BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        zero = tl.zeros((BLOCK,), dtype=tl.int64)
        ta = _rshift_rhaz((tl.load(a_ptr + offs, mask=m, other=0).to(tl.int64) - a_zp) * a_m, zero + a_s)
        tb = _rshift_rhaz((tl.load(b_ptr + offs, mask=m, other=0).to(tl.int64) - b_zp) * b_m, zero + b_s)
        _store_int(o_ptr + offs, _rshift_rhaz((ta + sign * tb) * mult, zero + shift) + zp, m, qlo, qhi)

    @triton.jit
    def _cast_kernel(x_ptr, o_ptr, n, scale, zp, qlo, qhi, fmax, SRC_FLOAT: tl.constexpr, DST_FLOAT: tl.constexpr,
                     HALF_EVEN: tl.constexpr, OUT_BF16: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        x = tl.load(x_ptr + offs, mask=m, other=0)
        if SRC_FLOAT and DST_FLOAT:
            _store_float(o_ptr + offs, x.to(tl.float32), m, OUT_BF16)
        elif DST_FLOAT:
            _store_float(o_ptr + offs, (x.to(tl.int64) - zp).to(tl.float32) * scale, m, OUT_BF16)
        elif SRC_FLOAT:
            q = tl.div_rn(x.to(tl.float32), scale)
            # the reference clamps to +-4e18 (fmax: the largest f32 below it); NaN -> 0
            inside = tl.abs(q) <= fmax
            t = tl.where(inside, q, 0.0).to(tl.int64)             # truncation toward zero, exact
            frac = tl.abs(q - t.to(tl.float32))                     # exact: the fraction bits of q
            step = tl.where(q < 0, -1, 1).to(tl.int64)
            if HALF_EVEN:
                up = (frac > 0.5) | ((frac == 0.5) & ((t & 1) != 0))
            else:
                up = frac >= 0.5
            r = tl.where(inside & up, t + step, t)
            r = tl.where(tl.abs(q) > fmax, step * 4000000000000000000, r)
            _store_int(o_ptr + offs, r + zp, m, qlo, qhi)
        else:
            _store_int(o_ptr + offs, x.to(tl.int64), m, qlo, qhi)

    @triton.jit
    def _reduce_kernel(x_ptr, o_ptr, M, K, os1, os2, os3, rs1, rs2, rs3, t0, t1, t2, t3, count, qlo, qhi,
                       OP: tl.constexpr, IS_FLOAT: tl.constexpr, OUT_BF16: tl.constexpr, BM: tl.constexpr,
                       BK: tl.constexpr):
        """Out element i of M (kept dims, shape (., os1, os2, os3)) reduces the K elements of the reduced dims
        (shape (., rs1, rs2, rs3)); both index the input through its strides t0..t3. OP: 0 sum, 1 mean, 2 max,
        3 min."""
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        rmask = rows < M
        orow = _offset(rows, os1, os2, os3, t0, t1, t2, t3)
        if IS_FLOAT:
            if OP == 2:
                acc = tl.full((BM,), float("-inf"), tl.float32)
            elif OP == 3:
                acc = tl.full((BM,), float("inf"), tl.float32)
            else:
                acc = tl.zeros((BM,), dtype=tl.float32)
            nan = tl.zeros((BM,), dtype=tl.int32)
        else:
            acc = tl.zeros((BM,), dtype=tl.int64)
            if OP == 2:
                acc = acc - 1099511627776   # 2^40: beyond every integer storage value
            elif OP == 3:
                acc = acc + 1099511627776
        for k0 in range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            msk = rmask[:, None] & (ks < K)[None, :]
            off = orow[:, None] + _offset(ks, rs1, rs2, rs3, t0, t1, t2, t3)[None, :]
            v = tl.load(x_ptr + off, mask=msk, other=0)
            if IS_FLOAT:
                v = v.to(tl.float32)
                nan = tl.maximum(nan, tl.max(((v != v) & msk).to(tl.int32), axis=1))
                if OP == 2:
                    acc = tl.maximum(acc, tl.max(tl.where(msk, v, float("-inf")), axis=1))
                elif OP == 3:
                    acc = tl.minimum(acc, tl.min(tl.where(msk, v, float("inf")), axis=1))
                else:
                    acc += tl.sum(tl.where(msk, v, 0.0), axis=1)
            else:
                v = v.to(tl.int64)
                if OP == 2:
                    acc = tl.maximum(acc, tl.max(tl.where(msk, v, -1099511627776), axis=1))
                elif OP == 3:
                    acc = tl.minimum(acc, tl.min(tl.where(msk, v, 1099511627776), axis=1))
                else:
                    acc += tl.sum(tl.where(msk, v, 0), axis=1)
        if IS_FLOAT:
            if OP == 1:
                acc = tl.div_rn(acc, count)
            if OP >= 2:
                acc = tl.where(nan > 0, float("nan"), acc)   # max / min propagate NaN, as torch.amax
            _store_float(o_ptr + rows, acc, rmask, OUT_BF16)
        else:
            _store_int(o_ptr + rows, acc, rmask, qlo, qhi)

    @triton.jit
    def _softmax_kernel(x_ptr, o_ptr, R, L, inner, LOG: tl.constexpr, OUT_BF16: tl.constexpr, BR: tl.constexpr,
                        BL: tl.constexpr):
        """Row r of R = outer * inner runs along the axis: elements base + k * inner, k < L. Three passes: max,
        sum of exp, output. (Each loop's result is used once, broadcast, before the next loop: Triton 3.x's
        thread-locality pass asserts on a reduction loop result with two uses, when compiling for CUDA.)"""
        rows = tl.program_id(0) * BR + tl.arange(0, BR)
        rmask = rows < R
        base = (rows // inner) * (L * inner) + rows % inner
        mx = tl.full((BR,), float("-inf"), tl.float32)
        for k0 in range(0, L, BL):
            ks = k0 + tl.arange(0, BL)
            msk = rmask[:, None] & (ks < L)[None, :]
            v = tl.load(x_ptr + base[:, None] + ks[None, :] * inner, mask=msk, other=float("-inf")).to(tl.float32)
            mx = tl.maximum(mx, tl.max(v, axis=1))
        mx2 = mx[:, None]
        total = tl.zeros((BR,), dtype=tl.float32)
        for k0 in range(0, L, BL):
            ks = k0 + tl.arange(0, BL)
            msk = rmask[:, None] & (ks < L)[None, :]
            v = tl.load(x_ptr + base[:, None] + ks[None, :] * inner, mask=msk, other=0.0).to(tl.float32)
            total += tl.sum(tl.where(msk, tl.exp(v - mx2), 0.0), axis=1)
        if LOG:
            den = tl.log(total)[:, None]
        else:
            den = total[:, None]
        for k0 in range(0, L, BL):
            ks = k0 + tl.arange(0, BL)
            msk = rmask[:, None] & (ks < L)[None, :]
            off = base[:, None] + ks[None, :] * inner
            v = tl.load(x_ptr + off, mask=msk, other=0.0).to(tl.float32)
            if LOG:
                y = (v - mx2) - den
            else:
                y = tl.div_rn(tl.exp(v - mx2), den)
            _store_float(o_ptr + off, y, msk, OUT_BF16)

    @triton.jit
    def _layernorm_kernel(x_ptr, w_ptr, b_ptr, o_ptr, R, K, kf, eps, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                          OUT_BF16: tl.constexpr, BR: tl.constexpr, BK: tl.constexpr):
        """Rows of K contiguous elements: mean, biased variance (two passes), then (x - mean) * rstd * w + b."""
        rows = tl.program_id(0) * BR + tl.arange(0, BR)
        rmask = rows < R
        total = tl.zeros((BR,), dtype=tl.float32)
        for k0 in range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            msk = rmask[:, None] & (ks < K)[None, :]
            total += tl.sum(tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=msk, other=0.0).to(tl.float32),
                            axis=1)
        mean = tl.div_rn(total, kf)
        sq = tl.zeros((BR,), dtype=tl.float32)
        for k0 in range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            msk = rmask[:, None] & (ks < K)[None, :]
            v = tl.load(x_ptr + rows[:, None] * K + ks[None, :], mask=msk, other=0.0).to(tl.float32)
            d = tl.where(msk, v - mean[:, None], 0.0)
            sq += tl.sum(d * d, axis=1)
        rstd = tl.div_rn(tl.full((BR,), 1.0, tl.float32), tl.sqrt_rn(tl.div_rn(sq, kf) + eps))
        for k0 in range(0, K, BK):
            ks = k0 + tl.arange(0, BK)
            kmask = ks < K
            msk = rmask[:, None] & kmask[None, :]
            off = rows[:, None] * K + ks[None, :]
            y = (tl.load(x_ptr + off, mask=msk, other=0.0).to(tl.float32) - mean[:, None]) * rstd[:, None]
            if HAS_W:
                y = y * tl.load(w_ptr + ks, mask=kmask, other=0.0).to(tl.float32)[None, :]
            if HAS_B:
                y = y + tl.load(b_ptr + ks, mask=kmask, other=0.0).to(tl.float32)[None, :]
            _store_float(o_ptr + off, y, msk, OUT_BF16)

    @triton.jit
    def _compare_kernel(a_ptr, b_ptr, o_ptr, n, s1, s2, s3, a0, a1, a2, a3, b0, b1, b2, b3, scalar, lo, hi,
                        OP: tl.constexpr, IS_FLOAT: tl.constexpr, HAS_B: tl.constexpr, BLOCK: tl.constexpr):
        """OP: 0 eq 1 ne 2 lt 3 le 4 gt 5 ge; an integer ``a`` against the scalar tests lo <= a <= hi (negated
        for ne); float operands compare in f32 (IEEE: NaN is only ``ne``)."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        a = tl.load(a_ptr + _offset(offs, s1, s2, s3, a0, a1, a2, a3), mask=m, other=0)
        if IS_FLOAT:
            a = a.to(tl.float32)
        else:
            a = a.to(tl.int64)
        if HAS_B or IS_FLOAT:
            if HAS_B:
                b = tl.load(b_ptr + _offset(offs, s1, s2, s3, b0, b1, b2, b3), mask=m, other=0)
                if IS_FLOAT:
                    b = b.to(tl.float32)
                else:
                    b = b.to(tl.int64)
            else:
                b = tl.zeros((BLOCK,), dtype=tl.float32) + scalar
            if OP == 0:
                y = a == b
            elif OP == 1:
                y = a != b
            elif OP == 2:
                y = a < b
            elif OP == 3:
                y = a <= b
            elif OP == 4:
                y = a > b
            else:
                y = a >= b
        else:
            if OP == 1:
                y = (a < lo) | (a > hi)
            else:
                y = (a >= lo) & (a <= hi)
        tl.store(o_ptr + offs, y.to(tl.uint8), mask=m)

    @triton.jit
    def _select_kernel(c_ptr, a_ptr, b_ptr, o_ptr, n, s1, s2, s3, c0, c1, c2, c3, a0, a1, a2, a3, b0, b1, b2, b3,
                       BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        c = tl.load(c_ptr + _offset(offs, s1, s2, s3, c0, c1, c2, c3), mask=m, other=0)
        a = tl.load(a_ptr + _offset(offs, s1, s2, s3, a0, a1, a2, a3), mask=m, other=0)
        b = tl.load(b_ptr + _offset(offs, s1, s2, s3, b0, b1, b2, b3), mask=m, other=0)
        tl.store(o_ptr + offs, tl.where(c != 0, a, b), mask=m)

    @triton.jit
    def _gather_kernel(t_ptr, i_ptr, p_ptr, o_ptr, rows, V, D, base, HAS_PREV: tl.constexpr, BR: tl.constexpr,
                       BD: tl.constexpr):
        r = tl.program_id(0) * BR + tl.arange(0, BR)
        d = tl.program_id(1) * BD + tl.arange(0, BD)
        rmask = r < rows
        msk = rmask[:, None] & (d < D)[None, :]
        row = tl.load(i_ptr + r, mask=rmask, other=0).to(tl.int64) - base
        hit = (row >= 0) & (row < V)
        v = tl.load(t_ptr + row[:, None] * D + d[None, :], mask=msk & hit[:, None], other=0)
        if HAS_PREV:
            v = tl.where(hit[:, None], v, tl.load(p_ptr + r[:, None] * D + d[None, :], mask=msk, other=0))
        tl.store(o_ptr + r[:, None] * D + d[None, :], v, mask=msk)


# ---- host side: operands in, the storage array out ---------------------------------------------

def _operand(a: np.ndarray, t: LocalTensor, dev: str) -> torch.Tensor:
    """A dense operand on the device in its storage dtype (bf16 as torch.bfloat16)."""
    return to_torch(a, t.dtype).contiguous().to(dev)


def _bits(a: np.ndarray, dev: str) -> torch.Tensor:
    """A dense operand's storage bits (int8/int16/int32 of its element size) on the device."""
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a.view(_BITS[a.itemsize])).to(dev)


def _empty(t: LocalTensor, dev: str) -> torch.Tensor:
    """The output tile in its storage dtype (bf16 as int16 bits)."""
    return torch.empty(t.shape, dtype=torch.int16 if t.dtype == DType.BF16 else t.dtype.torch, device=dev)


def _result(o: torch.Tensor, t: LocalTensor) -> np.ndarray:
    return o.cpu().numpy().view(t.dtype.numpy)


def _int_range(t: LocalTensor) -> tuple[int, int]:
    """Saturation bounds of an integer output (ignored by float outputs)."""
    if t.dtype.is_float:
        return 0, 0
    info = torch.iinfo(t.dtype.torch)
    return info.min, info.max


def _strides(shape: tuple, out: tuple) -> list[int]:
    """Element strides of a dense tensor of ``shape`` read broadcast to ``out``: 0 on its size-1 dims."""
    st, acc = [0, 0, 0, 0], 1
    for d in (3, 2, 1, 0):
        st[d] = acc if shape[d] != 1 or out[d] == 1 else 0
        acc *= shape[d]
    return st


def _pow2(n: int, cap: int) -> int:
    return min(triton.next_power_of_2(max(int(n), 1)), cap)


def pool2d(inst: isa.Pool2d, ops: Operands) -> np.ndarray:
    """Max / avg pool, one output element per lane of the block, looping over the window's taps in row-major
    order (pads: skipped by max, zeros in the sum; the divisor counts them when ``count_include_pad``)."""
    dev = _device()
    (x,) = ops
    n, c, h, w = inst.x.shape
    ho, wo = inst.out.shape[2:]
    out = _empty(inst.out, dev)
    total = n * c * ho * wo
    qlo, qhi = _int_range(inst.out)
    _pool_kernel[(triton.cdiv(total, _BLOCK),)](
        _operand(x, inst.x, dev), out, total, h, w, ho, wo, *inst.kernel, *inst.stride, inst.pad[0], inst.pad[2],
        float(inst.kernel[0] * inst.kernel[1]), inst.multiplier, inst.shift, qlo, qhi, MAX=inst.mode == "max",
        IS_FLOAT=inst.x.dtype.is_float, INCLUDE_PAD=bool(inst.count_include_pad), OUT_BF16=inst.out.dtype == DType.BF16,
        BLOCK=_BLOCK)
    return _result(out, inst.out)


def lut(inst: isa.Lut, ops: Operands) -> np.ndarray:
    """``table[x & 0xff]``: the table's storage bits copied."""
    dev = _device()
    x, table = ops
    out = torch.empty(inst.out.shape, dtype=_TORCH_BITS[inst.out.dtype.size], device=dev)
    n = inst.x.numel
    _lut_kernel[(triton.cdiv(n, _BLOCK),)](_bits(x, dev), _bits(table, dev), out, n, BLOCK=_BLOCK)
    return _result(out, inst.out)


def requant(inst: isa.Requant, ops: Operands) -> np.ndarray:
    """``sat(rshift_round_half_away(x * multiplier[c], shift[c]) + zero_point)`` in int64."""
    dev = _device()
    (x,) = ops
    n, c, h, w = inst.x.shape
    mult = torch.tensor(inst.multiplier, dtype=torch.int32).expand(c).contiguous().to(dev)
    shift = torch.tensor(inst.shift, dtype=torch.int32).expand(c).contiguous().to(dev)
    out = _empty(inst.out, dev)
    total = inst.x.numel
    _requant_kernel[(triton.cdiv(total, _BLOCK),)](_operand(x, inst.x, dev), out, mult, shift, total, c, h * w,
                                                   inst.zero_point, *_int_range(inst.out), BLOCK=_BLOCK)
    return _result(out, inst.out)


def qadd(inst: isa.QAdd, ops: Operands) -> np.ndarray:
    """Two rescaled int8 inputs added / subtracted in int64, requantized (see :class:`isa.QAdd`)."""
    dev = _device()
    a, b = ops
    out = _empty(inst.out, dev)
    n = inst.out.numel
    _qadd_kernel[(triton.cdiv(n, _BLOCK),)](_operand(a, inst.a, dev), _operand(b, inst.b, dev), out, n,
                                            1 if inst.op == "add" else -1, inst.a_zp, inst.a_multiplier,
                                            inst.a_shift, inst.b_zp, inst.b_multiplier, inst.b_shift,
                                            inst.multiplier, inst.shift, inst.zero_point, inst.qmin, inst.qmax,
                                            BLOCK=_BLOCK)
    return _result(out, inst.out)


#: the largest f32 value below 4e18, the clamp of a float -> int cast
_F32_BELOW_4E18 = float(np.nextafter(np.float32(4e18), np.float32(0)) if np.float32(4e18) > 4e18
                        else np.float32(4e18))


def cast(inst: isa.Cast, ops: Operands) -> np.ndarray:
    """float <-> float (rounded once), dequantize ``(x - zp) * scale`` in f32, quantize
    ``sat(round(x / scale) + zp)`` with the instruction's rounding (in integers), int -> int saturation."""
    dev = _device()
    (x,) = ops
    src, dst = inst.x.dtype, inst.out.dtype
    out = _empty(inst.out, dev)
    total = inst.x.numel
    # the f32 scale (torch.tensor(scale, dtype=float32): nearest, overflow to inf), exact as a kernel argument
    with np.errstate(over="ignore"):
        scale = float(np.float32(inst.scale))
    _cast_kernel[(triton.cdiv(total, _BLOCK),)](
        _operand(x, inst.x, dev), out, total, scale, inst.zero_point, *_int_range(inst.out), _F32_BELOW_4E18,
        SRC_FLOAT=src.is_float, DST_FLOAT=dst.is_float, HALF_EVEN=inst.round_mode == "half_even",
        OUT_BF16=dst == DType.BF16, BLOCK=_BLOCK)
    return _result(out, inst.out)


def reduce(inst: isa.Reduce, ops: Operands) -> np.ndarray:
    """sum / mean / max / min over ``axes``: f32 (NaN propagates through max/min), or exact int64."""
    dev = _device()
    (x,) = ops
    shape = inst.x.shape
    kept = inst.out.shape
    red = tuple(s if d in inst.axes else 1 for d, s in enumerate(shape))
    strides = _strides(shape, shape)
    m, k = math.prod(kept), math.prod(red)
    out = _empty(inst.out, dev)
    bk = _pow2(k, 256)
    bm = max(1, 4096 // bk)
    _reduce_kernel[(triton.cdiv(m, bm),)](
        _operand(x, inst.x, dev), out, m, k, *kept[1:], *red[1:], *strides, float(k), *_int_range(inst.out),
        OP=isa.REDUCE_OPS.index(inst.op), IS_FLOAT=inst.x.dtype.is_float, OUT_BF16=inst.out.dtype == DType.BF16,
        BM=bm, BK=bk)
    return _result(out, inst.out)


def softmax(inst: isa.Softmax, ops: Operands) -> np.ndarray:
    """``exp(x - max) / sum`` (or ``(x - max) - log(sum)``) along ``axis`` in f32, three passes per row."""
    dev = _device()
    (x,) = ops
    shape = inst.x.shape
    length = shape[inst.axis]
    inner = math.prod(shape[inst.axis + 1:])
    rows = inst.x.numel // length
    out = _empty(inst.out, dev)
    bl = _pow2(length, 1024)
    br = max(1, 4096 // bl)
    _softmax_kernel[(triton.cdiv(rows, br),)](_operand(x, inst.x, dev), out, rows, length, inner, LOG=bool(inst.log),
                                              OUT_BF16=inst.out.dtype == DType.BF16, BR=br, BL=bl)
    return _result(out, inst.out)


def layernorm(inst: isa.LayerNorm, ops: Operands) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over dims ``axis..3`` in f32 (biased variance)."""
    dev = _device()
    x, w, b = ops
    k = math.prod(inst.x.shape[inst.axis:])
    rows = inst.x.numel // k
    out = _empty(inst.out, dev)
    xt = _operand(x, inst.x, dev)
    wt = _operand(w, inst.weight, dev) if w is not None else xt
    bt = _operand(b, inst.bias, dev) if b is not None else xt
    bk = _pow2(k, 1024)
    br = max(1, 4096 // bk)
    _layernorm_kernel[(triton.cdiv(rows, br),)](xt, wt, bt, out, rows, k, float(k), float(np.float32(inst.eps)),
                                                HAS_W=w is not None, HAS_B=b is not None,
                                                OUT_BF16=inst.out.dtype == DType.BF16, BR=br, BK=bk)
    return _result(out, inst.out)


def int_interval(op: str, s: float) -> tuple[int, int, bool]:
    """Integers ``x`` with ``x OP s`` for a real scalar ``s``, as ``(lo, hi, negate)``: ``lo <= x <= hi``, or its
    complement when ``negate`` (ne). Exact for every integer storage value (|x| < 2^40 = the open end); an empty
    interval is (1, 0); NaN satisfies only ne."""
    if math.isnan(s):
        return 1, 0, op == "ne"
    if op in ("eq", "ne"):
        lo = hi = int(s) if s.is_integer() and abs(s) < _BIG else None
        return (1, 0, op == "ne") if lo is None else (lo, hi, op == "ne")
    if math.isinf(s):
        everything = (s > 0) == (op in ("lt", "le"))
        return (-_BIG, _BIG, False) if everything else (1, 0, False)
    lo, hi = {"lt": (-_BIG, math.ceil(s) - 1), "le": (-_BIG, math.floor(s)),
              "gt": (math.floor(s) + 1, _BIG), "ge": (math.ceil(s), _BIG)}[op]
    lo, hi = max(-_BIG, min(_BIG, lo)), max(-_BIG, min(_BIG, hi))
    return (lo, hi, False) if lo <= hi else (1, 0, False)


def compare(inst: isa.Compare, ops: Operands) -> np.ndarray:
    """``(a OP b) ? 1 : 0`` (uint8) with broadcast: f32 for floats, int64 for integers, and an integer ``a``
    against the scalar through :func:`int_interval` (the same answer as comparing in f64)."""
    dev = _device()
    a, b = ops
    oshape = inst.out.shape
    is_float = inst.a.dtype.is_float
    at = _operand(a, inst.a, dev)
    bt = _operand(b, inst.b, dev) if b is not None else at
    bstr = _strides(inst.b.shape, oshape) if b is not None else [0, 0, 0, 0]
    op = isa.COMPARE_OPS.index(inst.op)
    lo, hi = int_interval(inst.op, float(inst.scalar))[:2] if not is_float and b is None else (0, 0)
    out = torch.empty(oshape, dtype=torch.uint8, device=dev)
    n = inst.out.numel
    # the f32 scalar (torch.tensor(scalar, dtype=float32): nearest, overflow to inf), exact as a kernel argument
    with np.errstate(over="ignore"):
        scalar = float(np.float32(inst.scalar))
    _compare_kernel[(triton.cdiv(n, _BLOCK),)](at, bt, out, n, *oshape[1:], *_strides(inst.a.shape, oshape), *bstr,
                                               scalar, lo, hi, OP=op, IS_FLOAT=is_float, HAS_B=b is not None,
                                               BLOCK=_BLOCK)
    return out.cpu().numpy()


def select(inst: isa.Select, ops: Operands) -> np.ndarray:
    """``cond != 0 ? a : b`` with broadcast, copying storage bits."""
    dev = _device()
    cond, a, b = ops
    oshape = inst.out.shape
    at, bt = _bits(a, dev), _bits(b, dev)
    out = torch.empty(oshape, dtype=at.dtype, device=dev)
    n = inst.out.numel
    _select_kernel[(triton.cdiv(n, _BLOCK),)](_bits(cond, dev), at, bt, out, n, *oshape[1:],
                                              *_strides(inst.cond.shape, oshape), *_strides(inst.a.shape, oshape),
                                              *_strides(inst.b.shape, oshape), BLOCK=_BLOCK)
    return _result(out, inst.out)


def gather(inst: isa.Gather, ops: Operands) -> np.ndarray:
    """Rows ``table[index - base]`` where the index falls in the table, else ``prev`` (or zeros): bit copies."""
    dev = _device()
    table, index, prev = ops
    n, c, _, d = inst.out.shape
    tt = _bits(table, dev)
    out = torch.empty(inst.out.shape, dtype=tt.dtype, device=dev)
    pt = _bits(prev, dev) if prev is not None else out
    rows = n * c
    bd = _pow2(d, 256)
    br = max(1, 2048 // bd)
    _gather_kernel[(triton.cdiv(rows, br), triton.cdiv(d, bd))](tt, _bits(index, dev), pt, out, rows,
                                                                inst.table.shape[1], d, inst.base,
                                                                HAS_PREV=prev is not None, BR=br, BD=bd)
    return _result(out, inst.out)


#: opcode -> kernel; merged into kernels_triton.KERNELS
KERNELS: dict[str, KernelFn] = {
    "pool2d": pool2d, "lut": lut, "requant": requant, "qadd": qadd, "cast": cast, "reduce": reduce, "softmax": softmax,
    "layernorm": layernorm, "compare": compare, "select": select, "gather": gather,
}

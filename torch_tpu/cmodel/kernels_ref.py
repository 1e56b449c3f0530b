"""Reference kernels in torch: the definition the C and Triton kernels are tested against.

Every kernel has the signature ``kernel(inst, operands) -> np.ndarray``: ``operands`` are the dense
arrays of ``inst.INPUTS`` (storage dtype, the tile's N,C,H,W shape, ``None`` for an absent optional
operand) and the result is the dense output tile in ``inst.out``'s storage dtype. The numeric
convention: operands converted to f32 (integers exactly, in int64/f64), computed, rounded ONCE into
the output dtype (round to nearest even for bf16/f16, saturation for integers).

Example:
    >>> from torch_tpu.cmodel.isa import Activation
    >>> from torch_tpu.cmodel.operands import DType, LocalTensor
    >>> t = LocalTensor(0, 0, (1, 1, 1, 3), DType.F32)
    >>> activation(Activation(id=0, op="relu", x=t, out=t), [np.array([[[[-1., 0., 2.]]]], np.float32)]).tolist()
    [[[[0.0, 0.0, 2.0]]]]
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.operands import DType

Operands = list[np.ndarray | None]
KernelFn = Callable[[isa.Instruction, Operands], np.ndarray]


def to_torch(a: np.ndarray, dtype: DType) -> torch.Tensor:
    """Storage array -> torch tensor of ``dtype`` (bf16 from its raw bits)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(torch.bfloat16) if dtype == DType.BF16 else t


def from_torch(t: torch.Tensor, dtype: DType) -> np.ndarray:
    """torch tensor -> storage array of ``dtype``: floats rounded once (nearest even), integers saturated."""
    if dtype.is_float:
        t = t.to(dtype.torch)
        return (t.view(torch.uint16) if dtype == DType.BF16 else t).contiguous().numpy()
    info = torch.iinfo(dtype.torch)
    return t.to(torch.int64).clamp(info.min, info.max).to(dtype.torch).contiguous().numpy()


def f32(a: np.ndarray, dtype: DType) -> torch.Tensor:
    return to_torch(a, dtype).to(torch.float32)


def i64(a: np.ndarray, dtype: DType) -> torch.Tensor:
    return to_torch(a, dtype).to(torch.int64)


def rshift_round_half_away(v: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``sign(v) * ((|v| + 2^(s-1)) >> s)`` for s in [0, 63] (int64; s = 0 returns v)."""
    s = shift
    half = torch.where(s > 0, torch.ones_like(s) << (s - 1).clamp(min=0), torch.zeros_like(s))
    return torch.where(v >= 0, (v + half) >> s, -((-v + half) >> s))


def requant_epilogue(acc: int, multiplier: int, shift: int, zero_point: int, qmin: int, qmax: int) -> int:
    """The fused requantization of one int8 MAC result (``acc`` after bias and activation), as the kernels do it:

    ``clamp(rshift_round_half_away(sat_int32(acc) * multiplier, shift) + zero_point, qmin, qmax)``

    with ``rshift_round_half_away(v, s) = sign(v) * ((|v| + 2^(s-1)) >> s)`` (exact in int64: |v| < 2^62) and
    ``-128 <= qmin <= qmax <= 127``. It equals the unfused chain ``conv/matmul (int32 out) -> requant (int8 out)
    -> clip(qmin, qmax)`` exactly: the int32 output saturates, requant's int8 saturation is inside the clamp.
    The scalar form of :func:`fused_requant` (the specification the tests hold the kernels to).

    Example:
        >>> requant_epilogue(1000, 1 << 30, 33, -5, -128, 127)   # 1000 / 8 = 125 (rounded), + zp
        120
    """
    v = max(-(1 << 31), min((1 << 31) - 1, acc)) * multiplier
    half = (1 << shift) >> 1
    v = (abs(v) + half) >> shift if v >= 0 else -((-v + half) >> shift)
    return max(qmin, min(qmax, v + zero_point))


def _fused_act(y: torch.Tensor, act: str, lo: float, hi: float, is_float: bool) -> torch.Tensor:
    if act == "relu":
        return torch.clamp(y, min=0)
    if act == "relu6":
        return torch.clamp(y, 0.0, 6.0)
    if act == "clip":
        return torch.clamp(y, lo, hi) if is_float else torch.clamp(y, int(lo), int(hi))
    return y


def fused_requant(y: torch.Tensor, inst: isa.Conv2d | isa.MatMul, axis: int) -> torch.Tensor:
    """:func:`requant_epilogue` over an int64 accumulator: per-channel parameters along ``axis``."""
    shape = [1] * y.dim()
    shape[axis] = -1 if len(inst.multiplier) > 1 else 1
    m = torch.tensor(inst.multiplier, dtype=torch.int64).reshape(shape)
    s = torch.tensor(inst.shift, dtype=torch.int64).reshape(shape)
    v = rshift_round_half_away(y.clamp(-2**31, 2**31 - 1) * m, s.expand(y.shape))
    return (v + inst.zero_point).clamp(inst.qmin, inst.qmax)


def conv2d(inst: isa.Conv2d, ops: Operands) -> np.ndarray:
    """Grouped/dilated conv over the input padded with ``pad_value``; f32 (float) or exact integer
    (int8 -> int32, or int8 through the fused requant) accumulation."""
    x, w, b = ops
    cout = inst.out.shape[1]
    kh, kw = inst.kernel
    pt, pb, pl, pr = inst.pad
    is_float = inst.x.dtype.is_float
    if is_float:
        xt, wt = f32(x, inst.x.dtype), f32(w, inst.w.dtype)
    else:  # exact: |products| <= 2^14, sums far below 2^53
        xt, wt = i64(x, inst.x.dtype).double(), i64(w, inst.w.dtype).double()
    wt = wt.reshape(cout, inst.x.shape[1] // inst.groups, kh, kw)
    y = F.conv2d(F.pad(xt, (pl, pr, pt, pb), value=float(inst.pad_value)), wt, stride=inst.stride,
                 dilation=inst.dilation, groups=inst.groups)
    if not is_float:
        y = y.round().to(torch.int64)
    if b is not None:
        bt = f32(b, inst.bias.dtype) if is_float else i64(b, inst.bias.dtype)
        y = y + bt.reshape(1, cout, 1, 1)
    y = _fused_act(y, inst.act, inst.act_lo, inst.act_hi, is_float)
    return from_torch(fused_requant(y, inst, 1) if inst.multiplier else y, inst.out.dtype)


def matmul(inst: isa.MatMul, ops: Operands) -> np.ndarray:
    """``a (B, M, 1, K) @ b (B|1, K, 1, N) + bias``; f32 or exact integer accumulation."""
    a, b, bias = ops
    is_float = inst.a.dtype.is_float
    conv = (lambda arr, dt: f32(arr, dt)) if is_float else (lambda arr, dt: i64(arr, dt).double())
    at = conv(a, inst.a.dtype)[:, :, 0, :]
    bt = conv(b, inst.b.dtype)[:, :, 0, :]
    y = torch.matmul(at, bt)
    if not is_float:
        y = y.round().to(torch.int64)
    if bias is not None:
        y = y + (f32(bias, inst.bias.dtype) if is_float else i64(bias, inst.bias.dtype)).reshape(-1)
    y = _fused_act(y, inst.act, inst.act_lo, inst.act_hi, is_float)
    if inst.multiplier:
        y = fused_requant(y, inst, 2)
    return from_torch(y[:, :, None, :], inst.out.dtype)


_BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "max": torch.maximum,
    "min": torch.minimum,
}


def eltwise(inst: isa.Eltwise, ops: Operands) -> np.ndarray:
    """``a OP b`` (or ``a OP scalar``) with broadcast; f32 or exact int64 then saturation."""
    a, b = ops
    is_float = inst.a.dtype.is_float
    cv = f32 if is_float else i64
    at = cv(a, inst.a.dtype)
    if b is not None:
        bt = cv(b, inst.b.dtype)
    else:
        bt = torch.tensor(inst.scalar if is_float else int(inst.scalar),
                          dtype=torch.float32 if is_float else torch.int64)
    y = _BINARY[inst.op](at, bt)
    return from_torch(y.expand(inst.out.shape), inst.out.dtype)


_SOFTPLUS = lambda x: F.softplus(x, beta=1.0, threshold=20.0)  # noqa: E731
_UNARY: dict[str, Callable[[torch.Tensor, isa.Activation], torch.Tensor]] = {
    "relu": lambda x, i: torch.relu(x),
    "relu6": lambda x, i: torch.clamp(x, 0.0, 6.0),
    "clip": lambda x, i: torch.clamp(x, i.lo, i.hi),
    "leaky_relu": lambda x, i: F.leaky_relu(x, i.alpha),
    "sigmoid": lambda x, i: torch.sigmoid(x),
    "tanh": lambda x, i: torch.tanh(x),
    "gelu": lambda x, i: F.gelu(x),
    "gelu_tanh": lambda x, i: F.gelu(x, approximate="tanh"),
    "silu": lambda x, i: F.silu(x),
    "exp": lambda x, i: torch.exp(x),
    "log": lambda x, i: torch.log(x),
    "sqrt": lambda x, i: torch.sqrt(x),
    "rsqrt": lambda x, i: torch.rsqrt(x),
    "abs": lambda x, i: torch.abs(x),
    "neg": lambda x, i: torch.neg(x),
    "hardsigmoid": lambda x, i: F.hardsigmoid(x),
    "hardswish": lambda x, i: F.hardswish(x),
    "elu": lambda x, i: F.elu(x, i.alpha),
    "reciprocal": lambda x, i: torch.reciprocal(x),
    "square": lambda x, i: x * x,
    "erf": lambda x, i: torch.erf(x),
    "softplus": lambda x, i: _SOFTPLUS(x),
    "mish": lambda x, i: F.mish(x),
}
_UNARY_INT = {
    "relu": lambda x, i: torch.clamp(x, min=0),
    "clip": lambda x, i: torch.clamp(x, int(i.lo), int(i.hi)),
    "abs": lambda x, i: torch.abs(x),
    "neg": lambda x, i: torch.neg(x),
}
assert tuple(_UNARY) == isa.ACTIVATIONS and tuple(_UNARY_INT) == isa.INT_ACTIVATIONS


def activation(inst: isa.Activation, ops: Operands) -> np.ndarray:
    """``f(x)`` in f32 (or exact int64 for the integer activations), rounded once."""
    (x,) = ops
    if inst.x.dtype.is_float:
        return from_torch(_UNARY[inst.op](f32(x, inst.x.dtype), inst), inst.out.dtype)
    return from_torch(_UNARY_INT[inst.op](i64(x, inst.x.dtype), inst), inst.out.dtype)


def pool2d(inst: isa.Pool2d, ops: Operands) -> np.ndarray:
    """Max / avg pool over the padded input (see :class:`isa.Pool2d` for the divisor rules)."""
    (x,) = ops
    pt, pb, pl, pr = inst.pad
    is_float = inst.x.dtype.is_float
    xt = f32(x, inst.x.dtype) if is_float else i64(x, inst.x.dtype).double()
    if inst.mode == "max":
        y = F.max_pool2d(F.pad(xt, (pl, pr, pt, pb), value=-float("inf")), inst.kernel, inst.stride)
        return from_torch(y if is_float else y.to(torch.int64), inst.out.dtype)
    summed = F.avg_pool2d(F.pad(xt, (pl, pr, pt, pb)), inst.kernel, inst.stride, divisor_override=1)
    if not is_float:
        s = summed.round().to(torch.int64) * inst.multiplier
        return from_torch(rshift_round_half_away(s, torch.tensor(inst.shift)), inst.out.dtype)
    if inst.count_include_pad:
        count = torch.full_like(summed, float(inst.kernel[0] * inst.kernel[1]))
    else:
        ones = F.pad(torch.ones_like(xt[:1, :1]), (pl, pr, pt, pb))
        count = F.avg_pool2d(ones, inst.kernel, inst.stride, divisor_override=1)
    return from_torch(summed / count, inst.out.dtype)


def lut(inst: isa.Lut, ops: Operands) -> np.ndarray:
    """``table[x & 0xff]``."""
    x, table = ops
    return table.reshape(-1)[x.view(np.uint8).astype(np.int64)].reshape(inst.out.shape)


def requant(inst: isa.Requant, ops: Operands) -> np.ndarray:
    """``sat(rshift_round_half_away(x * multiplier[c], shift[c]) + zero_point)``."""
    (x,) = ops
    c = inst.x.shape[1]
    m = torch.tensor(inst.multiplier, dtype=torch.int64).expand(c).reshape(1, c, 1, 1)
    s = torch.tensor(inst.shift, dtype=torch.int64).expand(c).reshape(1, c, 1, 1)
    v = rshift_round_half_away(i64(x, inst.x.dtype) * m, s.expand(inst.x.shape))
    return from_torch(v + inst.zero_point, inst.out.dtype)


def qadd(inst: isa.QAdd, ops: Operands) -> np.ndarray:
    """Two rescaled int8 inputs added / subtracted in int64, requantized (see :class:`isa.QAdd`)."""
    a, b = ops
    ta = rshift_round_half_away((i64(a, inst.a.dtype) - inst.a_zp) * inst.a_multiplier,
                                torch.full(inst.a.shape, inst.a_shift, dtype=torch.int64))
    tb = rshift_round_half_away((i64(b, inst.b.dtype) - inst.b_zp) * inst.b_multiplier,
                                torch.full(inst.b.shape, inst.b_shift, dtype=torch.int64))
    acc = ta + tb if inst.op == "add" else ta - tb
    v = rshift_round_half_away(acc * inst.multiplier, torch.full(inst.out.shape, inst.shift, dtype=torch.int64))
    return from_torch((v + inst.zero_point).clamp(inst.qmin, inst.qmax), inst.out.dtype)


def cast(inst: isa.Cast, ops: Operands) -> np.ndarray:
    """Float <-> float / int rounding and (de)quantization (see :class:`isa.Cast`)."""
    (x,) = ops
    src, dst = inst.x.dtype, inst.out.dtype
    if src.is_float and dst.is_float:
        return from_torch(f32(x, src), dst)
    if not src.is_float:
        v = i64(x, src)
        if dst.is_float:
            return from_torch((v - inst.zero_point).to(torch.float32) * torch.tensor(inst.scale, dtype=torch.float32),
                              dst)
        return from_torch(v, dst)
    q = (f32(x, src) / torch.tensor(inst.scale, dtype=torch.float32)).double()
    r = torch.round(q) if inst.round_mode == "half_even" else torch.sign(q) * torch.floor(q.abs() + 0.5)
    r = torch.nan_to_num(r, nan=0.0).clamp(-4e18, 4e18)
    return from_torch(r.to(torch.int64) + inst.zero_point, dst)


def reduce(inst: isa.Reduce, ops: Operands) -> np.ndarray:
    """sum / mean / max / min over ``axes`` with kept dims."""
    (x,) = ops
    dims = list(inst.axes)
    if inst.x.dtype.is_float:
        xt = f32(x, inst.x.dtype)
        fn = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax, "min": torch.amin}[inst.op]
    else:
        xt = i64(x, inst.x.dtype)
        fn = {"sum": torch.sum, "max": torch.amax, "min": torch.amin}[inst.op]
    return from_torch(fn(xt, dim=dims, keepdim=True), inst.out.dtype)


def softmax(inst: isa.Softmax, ops: Operands) -> np.ndarray:
    """Softmax / log-softmax along ``axis`` in f32."""
    (x,) = ops
    fn = torch.log_softmax if inst.log else torch.softmax
    return from_torch(fn(f32(x, inst.x.dtype), dim=inst.axis), inst.out.dtype)


def layernorm(inst: isa.LayerNorm, ops: Operands) -> np.ndarray:
    """``F.layer_norm`` over dims ``axis..3`` in f32."""
    x, w, b = ops
    norm_shape = inst.x.shape[inst.axis:]
    wt = f32(w, inst.weight.dtype).reshape(norm_shape) if w is not None else None
    bt = f32(b, inst.bias.dtype).reshape(norm_shape) if b is not None else None
    y = F.layer_norm(f32(x, inst.x.dtype), norm_shape, wt, bt, inst.eps)
    return from_torch(y, inst.out.dtype)


_COMPARE = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}


def compare(inst: isa.Compare, ops: Operands) -> np.ndarray:
    """``(a OP b) ? 1 : 0`` as uint8: floats compared in f32, integers in int64 (f64 against the scalar)."""
    a, b = ops
    if inst.a.dtype.is_float:
        at = f32(a, inst.a.dtype)
        bt = f32(b, inst.b.dtype) if b is not None else torch.tensor(inst.scalar, dtype=torch.float32)
    else:
        at = i64(a, inst.a.dtype)
        bt = i64(b, inst.b.dtype) if b is not None else torch.tensor(inst.scalar, dtype=torch.float64)
        if b is None:
            at = at.double()
    return _COMPARE[inst.op](at, bt).expand(inst.out.shape).to(torch.uint8).contiguous().numpy()


def select(inst: isa.Select, ops: Operands) -> np.ndarray:
    """``cond != 0 ? a : b`` with broadcast; storage values are copied as they are."""
    cond, a, b = ops
    # numpy, not torch.where: older torch builds have no CPU where for uint16 (bf16/f16 storage)
    y = np.where(np.asarray(cond) != 0, a, b)
    return np.array(np.broadcast_to(y, inst.out.shape), order="C")   # a writable C-order copy of the read-only view


def gather(inst: isa.Gather, ops: Operands) -> np.ndarray:
    """Rows ``table[index - base]`` where the index falls in the table, else ``prev`` (or zeros)."""
    table, index, prev = ops
    n, c, _, d = inst.out.shape
    rows = np.ascontiguousarray(table).reshape(-1, d)
    idx = np.ascontiguousarray(index).reshape(-1).astype(np.int64) - inst.base
    hit = (idx >= 0) & (idx < rows.shape[0])
    y = np.array(prev, copy=True).reshape(-1, d) if prev is not None else np.zeros((n * c, d), rows.dtype)
    y[hit] = rows[idx[hit]]
    return y.reshape(inst.out.shape)


#: opcode -> kernel (registration in one place)
KERNELS: dict[str, KernelFn] = {
    "conv2d": conv2d, "matmul": matmul, "eltwise": eltwise, "activation": activation, "pool2d": pool2d,
    "lut": lut, "requant": requant, "qadd": qadd, "cast": cast, "reduce": reduce, "softmax": softmax,
    "layernorm": layernorm, "compare": compare, "select": select, "gather": gather,
}

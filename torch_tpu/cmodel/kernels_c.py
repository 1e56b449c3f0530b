"""The C kernel set: thin wrappers that pass an instruction's fields and dense operands to
``torch_tpu.cmodel._cmodel`` (csrc/). Same signature as :mod:`torch_tpu.cmodel.kernels_ref`:
``kernel(inst, operands) -> np.ndarray``.

Example:
    >>> from torch_tpu.cmodel.memory import c_available
    >>> c_available()
    True
"""

from __future__ import annotations

import numpy as np

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.kernels_ref import KernelFn, Operands
from torch_tpu.cmodel.memory import _cmodel

if _cmodel is None:
    raise ImportError("the cmodel C extension torch_tpu.cmodel._cmodel is not built: `pip install -e .` (setup.py "
                      "compiles torch_tpu/cmodel/csrc) or `python setup.py build_ext --inplace`")

_ACT = {name: code for code, name in enumerate(isa.FUSED_ACTS)}
_EW = {name: code for code, name in enumerate(isa.ELTWISE_OPS)}
_UNARY = {name: code for code, name in enumerate(isa.ACTIVATIONS)}
_REDUCE = {name: code for code, name in enumerate(isa.REDUCE_OPS)}


def set_threads(n: int = 0) -> None:
    """Threads the C kernels use: ``n >= 1`` exactly, ``0`` the default (the CPUs this process may run
    on, ``os.sched_getaffinity``). Results do not depend on it (kernels split work over output tiles).

    Example:
        >>> set_threads(1); threads()
        1
        >>> set_threads(0)
    """
    _cmodel.set_threads(int(n))


def threads() -> int:
    """How many threads the C kernels use."""
    return _cmodel.threads()


def _out(t: isa.LocalTensor) -> np.ndarray:
    return np.empty(t.shape, dtype=t.dtype.numpy)


def _dt(t: isa.LocalTensor | None) -> int:
    return int(t.dtype) if t is not None else 0


def _requant(inst: isa.Conv2d | isa.MatMul) -> tuple:
    """The fused requant argument of the C conv2d / matmul: (multiplier, shift, zero_point, qmin, qmax), with
    ``None`` buffers when the instruction has none."""
    if not inst.multiplier:
        return None, None, 0, -128, 127
    return (np.asarray(inst.multiplier, dtype=np.int32), np.asarray(inst.shift, dtype=np.int32), inst.zero_point,
            inst.qmin, inst.qmax)


def conv2d(inst: isa.Conv2d, ops: Operands) -> np.ndarray:
    x, w, b = ops
    out = _out(inst.out)
    n, cin, h, wd = inst.x.shape
    cout, ho, wo = inst.out.shape[1:]
    kh, kw = inst.kernel
    _cmodel.conv2d(out, int(inst.out.dtype), x, int(inst.x.dtype), w, int(inst.w.dtype), b, _dt(inst.bias),
                   (n, cin, h, wd), (cout, cin // inst.groups, kh, kw), (ho, wo), inst.stride,
                   (inst.pad[0], inst.pad[2]), inst.dilation, inst.groups, _ACT[inst.act], inst.act_lo, inst.act_hi,
                   inst.pad_value, _requant(inst))
    return out


def matmul(inst: isa.MatMul, ops: Operands) -> np.ndarray:
    a, b, bias = ops
    out = _out(inst.out)
    bsz, m, _, k = inst.a.shape
    _cmodel.matmul(out, int(inst.out.dtype), a, int(inst.a.dtype), b, int(inst.b.dtype), bias, _dt(inst.bias),
                   (bsz, inst.b.shape[0], m, k, inst.b.shape[3]), _ACT[inst.act], inst.act_lo, inst.act_hi,
                   _requant(inst))
    return out


def eltwise(inst: isa.Eltwise, ops: Operands) -> np.ndarray:
    a, b = ops
    out = _out(inst.out)
    bshape = inst.b.shape if inst.b is not None else (1, 1, 1, 1)
    _cmodel.eltwise(out, int(inst.out.dtype), a, int(inst.a.dtype), inst.a.shape, b, _dt(inst.b), bshape,
                    inst.out.shape, _EW[inst.op], float(inst.scalar))
    return out


def activation(inst: isa.Activation, ops: Operands) -> np.ndarray:
    (x,) = ops
    out = _out(inst.out)
    _cmodel.activation(out, int(inst.out.dtype), x, int(inst.x.dtype), inst.x.numel, _UNARY[inst.op], inst.alpha,
                       inst.lo, inst.hi)
    return out


def pool2d(inst: isa.Pool2d, ops: Operands) -> np.ndarray:
    (x,) = ops
    out = _out(inst.out)
    _cmodel.pool2d(out, int(inst.out.dtype), x, int(inst.x.dtype), inst.x.shape, inst.out.shape[2:], inst.kernel,
                   inst.stride, inst.pad, 0 if inst.mode == "max" else 1, int(inst.count_include_pad),
                   inst.multiplier, inst.shift)
    return out


def lut(inst: isa.Lut, ops: Operands) -> np.ndarray:
    x, table = ops
    out = _out(inst.out)
    _cmodel.lut(out, int(inst.out.dtype), x, int(inst.x.dtype), inst.x.numel, table)
    return out


def requant(inst: isa.Requant, ops: Operands) -> np.ndarray:
    (x,) = ops
    out = _out(inst.out)
    n, c, h, w = inst.x.shape
    _cmodel.requant(out, int(inst.out.dtype), x, int(inst.x.dtype), (n, c, h * w),
                    np.asarray(inst.multiplier, dtype=np.int32), np.asarray(inst.shift, dtype=np.int32),
                    inst.zero_point)
    return out


def qadd(inst: isa.QAdd, ops: Operands) -> np.ndarray:
    a, b = ops
    out = _out(inst.out)
    _cmodel.qadd(out, int(inst.out.dtype), a, int(inst.a.dtype), b, int(inst.b.dtype), inst.out.numel,
                 1 if inst.op == "add" else -1, (inst.a_zp, inst.a_multiplier, inst.a_shift),
                 (inst.b_zp, inst.b_multiplier, inst.b_shift),
                 (inst.multiplier, inst.shift, inst.zero_point, inst.qmin, inst.qmax))
    return out


def cast(inst: isa.Cast, ops: Operands) -> np.ndarray:
    (x,) = ops
    out = _out(inst.out)
    _cmodel.cast(out, int(inst.out.dtype), x, int(inst.x.dtype), inst.x.numel, inst.scale, inst.zero_point,
                 isa.ROUND_MODES.index(inst.round_mode))
    return out


def reduce(inst: isa.Reduce, ops: Operands) -> np.ndarray:
    (x,) = ops
    out = _out(inst.out)
    mask = sum(1 << a for a in inst.axes)
    _cmodel.reduce(out, int(inst.out.dtype), x, int(inst.x.dtype), inst.x.shape, mask, _REDUCE[inst.op])
    return out


def softmax(inst: isa.Softmax, ops: Operands) -> np.ndarray:
    (x,) = ops
    out = _out(inst.out)
    _cmodel.softmax(out, int(inst.out.dtype), x, int(inst.x.dtype), inst.x.shape, inst.axis, int(inst.log))
    return out


def layernorm(inst: isa.LayerNorm, ops: Operands) -> np.ndarray:
    x, w, b = ops
    out = _out(inst.out)
    _cmodel.layernorm(out, int(inst.out.dtype), x, int(inst.x.dtype), inst.x.shape, inst.axis, w, _dt(inst.weight),
                      b, _dt(inst.bias), inst.eps)
    return out


def compare(inst: isa.Compare, ops: Operands) -> np.ndarray:
    a, b = ops
    out = _out(inst.out)
    bshape = inst.b.shape if inst.b is not None else (1, 1, 1, 1)
    _cmodel.compare(out, a, int(inst.a.dtype), inst.a.shape, b, _dt(inst.b), bshape, inst.out.shape,
                    isa.COMPARE_OPS.index(inst.op), float(inst.scalar))
    return out


def select(inst: isa.Select, ops: Operands) -> np.ndarray:
    cond, a, b = ops
    out = _out(inst.out)
    _cmodel.select(out, int(inst.out.dtype), cond, inst.cond.shape, a, inst.a.shape, b, inst.b.shape, inst.out.shape)
    return out


def gather(inst: isa.Gather, ops: Operands) -> np.ndarray:
    table, index, prev = ops
    out = _out(inst.out)
    n, c, _, d = inst.out.shape
    _cmodel.gather(out, int(inst.out.dtype), table, inst.table.shape[1], index, prev, n * c, d, inst.base)
    return out


KERNELS: dict[str, KernelFn] = {
    "conv2d": conv2d, "matmul": matmul, "eltwise": eltwise, "activation": activation, "pool2d": pool2d,
    "lut": lut, "requant": requant, "qadd": qadd, "cast": cast, "reduce": reduce, "softmax": softmax,
    "layernorm": layernorm, "compare": compare, "select": select, "gather": gather,
}

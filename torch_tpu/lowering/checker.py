"""The TPU-graph checker, run after lowering in tests (and between stages with ``check=True``).

:func:`check_tpu` verifies, for a pure TPU graph of one (target, precision):

* only ``torch.ops.tpu.*`` ops (plus ``getitem``), ``get_attr``, placeholders and the output;
* ``meta['val']`` on every value, equal in shape and dtype to what the op's fake implementation gives;
* dtypes follow the precision: float values are stored in the precision's dtype or f32, graph inputs and
  outputs are f32, the float tensor operands of an op (other than ``tpu.cast``) share one dtype, and the
  op's float result has that dtype;
* a ``tpu.cast`` changes the dtype (no identity casts);
* stable names are unique.

At precision ``int8`` (see :func:`check_int8_node`) float values may be f32 or any float precision of the
target (layers kept in float by the qtable or for lack of an int8 rule), and every ``*_int8`` op is checked:
int8 activations and weights, int32 bias, an int32 multiplier and shift per output channel (or per tensor)
in range, int8 results (f32/bf16/f16 only from ``dequantize_int8``; the float-output MACs ``*_int8_f32``
give f32 from a positive f32 scale per output channel or per tensor); a ``tpu.cast`` never touches int8
(precision boundaries are ``quantize_int8`` / ``dequantize_int8``), and float ops never read int8 values
except data movement.

For a partitioned module, every ``tpu_<i>`` submodule is checked.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode

from torch_tpu.errors import VerificationError
from torch_tpu.graph.names import stable_name
from torch_tpu.graph.printer import dtype_str, op_str, type_str
from torch_tpu.lowering.builder import fetch_attr
from torch_tpu.targets import PRECISION_DTYPES, Target, get_target
from torch_tpu.tpu_ops import define_all, is_tpu_op, op_defs

_MIXED_OK = {"cast", "embedding", "gather", "where"}

#: non-int8 ops that may move int8 values (no arithmetic).
INT8_DATA_MOVEMENT = {"reshape", "permute", "expand", "slice", "copy", "concat"}
#: int8 op -> {argument index: expected dtype} for its tensor operands other than int8 ones.
_INT8_SPECIAL = {
    "conv2d_int8": {2: torch.int32, 7: torch.int32, 8: torch.int64},
    "conv2d_lut_int8": {2: torch.int32, 7: torch.int32, 8: torch.int64, 11: torch.int32, 12: torch.int32},
    "linear_int8": {2: torch.int32, 3: torch.int32, 4: torch.int64},
    "conv2d_int8_f32": {2: torch.int32, 7: torch.float32},
    "linear_int8_f32": {2: torch.int32, 3: torch.float32},
}
#: int8 MACs with an f32 result (the accumulator dequantized; ``tpu_ops/int8_mac.py``)
INT8_F32_OPS = {"conv2d_int8_f32", "linear_int8_f32", "matmul_int8_f32"}


def check_int8_node(gm: fx.GraphModule, node: fx.Node, short: str, gm_name: str) -> None:
    """Dtype and qparam checks of one ``*_int8`` op (module doc)."""
    special = _INT8_SPECIAL.get(short, {})
    for i, a in enumerate(node.args):
        items = a if isinstance(a, (list, tuple)) else [a]
        for it in items:
            v = it.meta.get("val") if isinstance(it, fx.Node) else None
            if not isinstance(v, torch.Tensor):
                continue
            want = special.get(i, torch.int8)
            if short == "quantize_int8" and i == 0:
                if not v.dtype.is_floating_point:
                    raise _fail(gm_name, node, f"quantizes a {dtype_str(v.dtype)} value")
            elif v.dtype != want:
                raise _fail(gm_name, node, f"operand {i} is {dtype_str(v.dtype)}, expected {dtype_str(want)}")
    out = node.meta["val"]
    if short == "dequantize_int8":
        if not out.dtype.is_floating_point:
            raise _fail(gm_name, node, f"dequantizes to {dtype_str(out.dtype)}")
    elif short in INT8_F32_OPS:
        if out.dtype != torch.float32:
            raise _fail(gm_name, node, f"result is {dtype_str(out.dtype)}, expected f32")
        scale = node.args[7] if short == "conv2d_int8_f32" else node.args[3] if short == "linear_int8_f32" \
            else node.args[2]
        if isinstance(scale, fx.Node):
            if scale.op != "get_attr":
                raise _fail(gm_name, node, "scale is not a constant")
            scale = fetch_attr(gm, scale.target)
            channels = out.shape[1] if short == "conv2d_int8_f32" else out.shape[-1]
            if scale.dim() > 1 or scale.numel() not in (1, channels):
                raise _fail(gm_name, node, f"scale has shape {list(scale.shape)}, expected 1 or {channels} values")
        if not bool(torch.all(torch.isfinite(torch.as_tensor(scale)) & (torch.as_tensor(scale) > 0))):
            raise _fail(gm_name, node, "scale is not finite and positive")
        return
    elif out.dtype != torch.int8:
        raise _fail(gm_name, node, f"result is {dtype_str(out.dtype)}, expected int8")
    if short in _INT8_SPECIAL:
        conv = short in ("conv2d_int8", "conv2d_lut_int8")
        m_node, s_node = node.args[7:9] if conv else node.args[3:5]
        channels = out.shape[1] if conv else out.shape[-1]
        for what, n, lo, hi in (("multiplier", m_node, 0, 2 ** 31 - 1), ("shift", s_node, 0, 63)):
            if not isinstance(n, fx.Node) or n.op != "get_attr":
                raise _fail(gm_name, node, f"{what} is not a constant")
            t = fetch_attr(gm, n.target)
            if t.numel() not in (1, channels) or t.dim() > 1:
                raise _fail(gm_name, node, f"{what} has shape {list(t.shape)}, expected 1 or {channels} values")
            if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
                raise _fail(gm_name, node, f"{what} outside [{lo}, {hi}]")


def _fail(gm_name: str, node: fx.Node, msg: str) -> VerificationError:
    op = op_str(node.target) if node.op == "call_function" else node.op
    return VerificationError(f"check_tpu[{gm_name}]: node '{stable_name(node)}' ({op}): {msg}")


def _float_tensors(args) -> list[torch.Tensor]:
    out = []
    fx.node.map_arg(args, lambda n: out.append(n.meta.get("val")))
    return [v for v in out if isinstance(v, torch.Tensor) and v.dtype.is_floating_point]


def check_tpu(gm: fx.GraphModule, target: Target | str, precision: str, *, name: str = "tpu") -> None:
    """Raise :class:`VerificationError` (naming the node and op) if ``gm`` breaks a TPU-graph invariant.

    Example:
        >>> check_tpu(lower(top.gm, "bm1684x", "bf16"), "bm1684x", "bf16")    # doctest: +SKIP
    """
    target = get_target(target)
    subs = [(n, m) for n, m in gm.named_children() if n.startswith("tpu_") and isinstance(m, fx.GraphModule)]
    if subs:
        for sub_name, sub in subs:
            check_tpu(sub, target, precision, name=sub_name)
        return
    dtype = PRECISION_DTYPES[precision]
    allowed = {dtype, torch.float32}
    if precision == "int8":
        allowed |= {PRECISION_DTYPES[p] for p in target.precisions if p in ("bf16", "f16")}
    fakes = {define_all()[k]: d.fake for k, d in op_defs().items()}
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    seen: dict[str, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            outs = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
            for o in outs:
                v = o.meta.get("val") if isinstance(o, fx.Node) else None
                if isinstance(v, torch.Tensor) and v.dtype.is_floating_point and v.dtype != torch.float32:
                    raise _fail(name, node, f"graph output '{stable_name(o)}' is {dtype_str(v.dtype)}, "
                                "expected f32 at the boundary")
            continue
        sn = stable_name(node)
        if sn in seen:
            raise _fail(name, node, f"stable name also used by node {seen[sn].name}")
        seen[sn] = node
        val = node.meta.get("val")
        if node.op not in ("placeholder", "get_attr", "call_function"):
            raise _fail(name, node, f"a {node.op} node in a TPU graph")
        if node.op == "call_function" and node.target is not operator.getitem and not is_tpu_op(node.target):
            raise _fail(name, node, "not a tpu op")
        if val is None:
            raise _fail(name, node, "no meta['val']")
        if node.op == "placeholder" and isinstance(val, torch.Tensor) and val.dtype.is_floating_point \
                and val.dtype != torch.float32:
            raise _fail(name, node, f"graph input is {dtype_str(val.dtype)}, expected f32")
        if isinstance(val, torch.Tensor) and val.dtype.is_floating_point and val.dtype not in allowed:
            raise _fail(name, node, f"{dtype_str(val.dtype)} value at precision {precision}")
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        short = node.target._schema.name.split("::")[-1]
        fake_args = fx.node.map_arg(node.args, lambda n: n.meta["val"])
        fake_kwargs = fx.node.map_arg(node.kwargs, lambda n: n.meta["val"])
        with mode:
            expect = fakes[node.target](*fake_args, **fake_kwargs)
        if type_str(expect) != type_str(val):
            raise _fail(name, node, f"meta['val'] is {type_str(val)} but the op gives {type_str(expect)}")
        ins = _float_tensors((node.args, node.kwargs))
        if precision == "int8":
            if short.endswith("_int8") or short in INT8_F32_OPS:
                check_int8_node(gm, node, short, name)
                continue
            if short == "cast" and val.dtype == torch.int8:
                raise _fail(name, node, "casts to int8 (quantize with quantize_int8)")
            int8_in = []
            fx.node.map_arg(node.args, lambda n: int8_in.append(n) if getattr(n.meta.get("val"), "dtype", None)
                            == torch.int8 else None)
            if int8_in and (short not in INT8_DATA_MOVEMENT or val.dtype != torch.int8):
                raise _fail(name, node, f"reads int8 value '{stable_name(int8_in[0])}' without dequantize_int8")
        if short == "cast":
            if node.args[0].meta["val"].dtype == val.dtype:
                raise _fail(name, node, f"cast to the same dtype {dtype_str(val.dtype)}")
            continue
        in_dtypes = {v.dtype for v in ins}
        if len(in_dtypes) > 1:
            raise _fail(name, node, f"float operands of mixed dtypes {sorted(dtype_str(d) for d in in_dtypes)}")
        if in_dtypes and val.dtype.is_floating_point and val.dtype not in in_dtypes:
            raise _fail(name, node, f"result {dtype_str(val.dtype)} from {dtype_str(next(iter(in_dtypes)))} operands")

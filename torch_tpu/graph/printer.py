"""Readable text for any graph level (TOP, TPU): one line per op.

Each line: ``stable_name = op(inputs; attributes) : dtype[shape]``. Tensor operands are shown by their
stable names, scalar/list arguments by schema argument name. Used by ``dump_dir``, ``TopGraph.save`` and
error messages, so a tensor can be followed by name from the source to the cmodel.

Example line::

    layer1.0.bn1 = tpu.conv2d(maxpool, layer1.0.conv1.weight, layer1.0.bn1.bias; stride=[1, 1], ...) : f32[1,64,56,56]
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx

from torch_tpu.graph.names import stable_name

_DTYPE_SHORT = {
    torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
    torch.int8: "i8", torch.uint8: "u8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
    torch.bool: "bool",
}


def dtype_str(dtype: torch.dtype) -> str:
    return _DTYPE_SHORT.get(dtype, str(dtype).replace("torch.", ""))


def type_str(val: Any) -> str:
    """``f32[1,3,224,224]`` for a tensor (or fake tensor); a tuple of those for tuples."""
    if isinstance(val, torch.Tensor):
        return f"{dtype_str(val.dtype)}[{','.join(str(s) for s in val.shape)}]"
    if isinstance(val, (tuple, list)):
        return "(" + ", ".join(type_str(v) for v in val) + ")"
    if val is None:
        return "?"
    return type(val).__name__


def op_str(target) -> str:
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        ns, name = target._schema.name.split("::")
        overload = target._overloadname
        return f"{ns}.{name}" + ("" if overload == "default" else f".{overload}")
    return getattr(target, "__name__", str(target))


def _arg_str(a: Any) -> str:
    if isinstance(a, fx.Node):
        return stable_name(a)
    if isinstance(a, (list, tuple)):
        inner = ", ".join(_arg_str(x) for x in a)
        return f"[{inner}]"
    if isinstance(a, torch.dtype):
        return dtype_str(a)
    if isinstance(a, float):
        return f"{a:.6g}"
    return repr(a)


def _split_args(node: fx.Node) -> tuple[list[str], list[str]]:
    """(operand strings, attribute strings) using the op schema where there is one."""
    operands, attrs = [], []
    schema = getattr(node.target, "_schema", None)
    names = [a.name for a in schema.arguments] if schema is not None else []
    for i, a in enumerate(node.args):
        is_tensorish = isinstance(a, fx.Node) or (isinstance(a, (list, tuple)) and a and
                                                  all(isinstance(x, fx.Node) for x in a))
        if is_tensorish or a is None and i < 3:
            operands.append(_arg_str(a))
        else:
            key = names[i] if i < len(names) else f"arg{i}"
            attrs.append(f"{key}={_arg_str(a)}")
    for k, v in node.kwargs.items():
        (operands if isinstance(v, fx.Node) else attrs).append(
            f"{k}={_arg_str(v)}" if not isinstance(v, fx.Node) else _arg_str(v))
    return operands, attrs


def format_node(node: fx.Node) -> str:
    val = node.meta.get("val")
    if node.op == "placeholder":
        return f"input  {stable_name(node)} : {type_str(val)}"
    if node.op == "get_attr":
        return f"const  {stable_name(node)} : {type_str(val)}"
    if node.op == "output":
        outs = node.args[0]
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return "output " + ", ".join(_arg_str(o) for o in outs)
    if node.op == "call_module":
        return f"{stable_name(node)} = call {node.target}({', '.join(_arg_str(a) for a in node.args)}) : {type_str(val)}"
    operands, attrs = _split_args(node)
    inner = ", ".join(operands)
    if attrs:
        inner += "; " + ", ".join(attrs)
    extra = ""
    if "flops" in node.meta:
        extra = f"  # flops={node.meta['flops']}"
    return f"{stable_name(node)} = {op_str(node.target)}({inner}) : {type_str(val)}{extra}"


def format_graph(gm: fx.GraphModule, title: str = "graph") -> str:
    """The whole graph as text, one line per node, submodules (partitions) appended after."""
    lines = [f"# {title}"]
    for n in gm.graph.nodes:
        lines.append("  " + format_node(n))
    for name, sub in gm.named_children():
        if isinstance(sub, fx.GraphModule):
            lines.append("")
            lines.append(format_graph(sub, f"{title} / {name}"))
    return "\n".join(lines) + "\n"

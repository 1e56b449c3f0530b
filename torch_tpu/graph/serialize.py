"""Graphs of any level to and from disk without pickle: JSON for the graph, safetensors for tensors.

Used by the on-disk compile cache (a TPU graph, possibly partitioned into submodules, with eager
fallback ops between them). Only ``call_function`` targets in the ``aten`` and ``tpu`` namespaces and
``operator.getitem`` are accepted on load, resolved by name through ``torch.ops``: nothing from the file
is executed as code.

Layout of a ``.tgraph`` file (a zip): ``graph.json`` (format, version, modules, nodes, meta) and
``tensors.safetensors`` (every get_attr tensor, keyed ``<module>/<attr>``).
"""

from __future__ import annotations

import json
import math
import operator
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from torch_tpu.errors import ModelFormatError
from torch_tpu.graph.names import STABLE_NAME, stable_name

FORMAT = "torch_tpu.graph"
VERSION = 1
_ALLOWED_NS = ("aten", "tpu", "prims")
_DTYPES = {str(d).replace("torch.", ""): d for d in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.int16,
    torch.int32, torch.int64, torch.bool)}


def _target_str(target) -> str:
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        ns, name = target._schema.name.split("::")
        return f"{ns}.{name}.{target._overloadname}"
    raise ModelFormatError("<graph>", f"cannot serialize call target {target!r}")


def _resolve(target: str, path: str):
    if target == "getitem":
        return operator.getitem
    parts = target.split(".")
    if len(parts) != 3 or parts[0] not in _ALLOWED_NS:
        raise ModelFormatError(path, f"refusing call target '{target}' (only aten/tpu ops)")
    try:
        return getattr(getattr(getattr(torch.ops, parts[0]), parts[1]), parts[2])
    except AttributeError:
        raise ModelFormatError(path, f"unknown op '{target}' (is torch_tpu.tpu_ops imported?)") from None


def _enc(a: Any) -> Any:
    if isinstance(a, fx.Node):
        return {"node": a.name}
    if isinstance(a, (list, tuple)):
        return {"list" if isinstance(a, list) else "tuple": [_enc(x) for x in a]}
    if isinstance(a, torch.dtype):
        return {"dtype": str(a).replace("torch.", "")}
    if isinstance(a, torch.device):
        return {"device": str(a)}
    if isinstance(a, torch.memory_format):
        return {"memory_format": str(a).replace("torch.", "")}
    if isinstance(a, torch.layout):
        return {"layout": str(a).replace("torch.", "")}
    if isinstance(a, float) and not math.isfinite(a):
        return {"float": repr(a)}
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    raise ModelFormatError("<graph>", f"cannot serialize argument {a!r} of type {type(a).__name__}")


def _dec(a: Any, env: dict[str, fx.Node], path: str) -> Any:
    if isinstance(a, dict):
        if "node" in a:
            if a["node"] not in env:
                raise ModelFormatError(path, f"reference to unknown node '{a['node']}'")
            return env[a["node"]]
        if "list" in a:
            return [_dec(x, env, path) for x in a["list"]]
        if "tuple" in a:
            return tuple(_dec(x, env, path) for x in a["tuple"])
        if "dtype" in a:
            return _DTYPES[a["dtype"]]
        if "device" in a:
            return torch.device(a["device"])
        if "memory_format" in a:
            return getattr(torch, a["memory_format"])
        if "layout" in a:
            return getattr(torch, a["layout"])
        if "float" in a:
            return float(a["float"])
        raise ModelFormatError(path, f"bad argument encoding {a!r}")
    return a


def _val_json(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
    if isinstance(v, (tuple, list)):
        return {"items": [_val_json(x) for x in v]}
    return None


def _val_from_json(j: Any) -> Any:
    if j is None:
        return None
    if "items" in j:
        return tuple(_val_from_json(x) for x in j["items"])
    return torch.empty(j["shape"], dtype=_DTYPES[j["dtype"]], device="meta")


def _module_json(gm: fx.GraphModule, prefix: str, tensors: dict[str, torch.Tensor]) -> dict:
    nodes = []
    for n in gm.graph.nodes:
        entry: dict[str, Any] = {"name": n.name, "op": n.op, STABLE_NAME: stable_name(n),
                                 "val": _val_json(n.meta.get("val"))}
        if n.op == "call_function":
            entry["target"] = _target_str(n.target)
        elif n.op in ("get_attr", "call_module"):
            entry["target"] = str(n.target)
        if n.op == "get_attr":
            key = f"{prefix}/{n.target}"
            if key not in tensors:
                t = operator.attrgetter(str(n.target))(gm)
                tensors[key] = t.detach().contiguous().clone()
        entry["args"] = _enc(tuple(n.args))
        entry["kwargs"] = {k: _enc(v) for k, v in n.kwargs.items()}
        nodes.append(entry)
    subs = {name: _module_json(sub, f"{prefix}.{name}" if prefix else name, tensors)
            for name, sub in gm.named_children() if isinstance(sub, fx.GraphModule)}
    return {"nodes": nodes, "submodules": subs}


def save_graph(gm: fx.GraphModule, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``gm`` (and its GraphModule children) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    doc = {"format": FORMAT, "version": VERSION, "meta": meta or {}, "root": _module_json(gm, "", tensors)}
    tmp = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("graph.json", json.dumps(doc))
        z.writestr("tensors.safetensors", st_save(tensors))
    os.replace(tmp, path)
    return path


def _build(doc: dict, prefix: str, tensors: dict[str, torch.Tensor], path: str) -> fx.GraphModule:
    root = torch.nn.Module()
    for name, sub in doc.get("submodules", {}).items():
        root.add_module(name, _build(sub, f"{prefix}.{name}" if prefix else name, tensors, path))
    g = fx.Graph()
    env: dict[str, fx.Node] = {}
    for e in doc["nodes"]:
        op = e["op"]
        args = _dec(e["args"], env, path)
        kwargs = {k: _dec(v, env, path) for k, v in e["kwargs"].items()}
        if op == "placeholder":
            n = g.placeholder(e["name"])
        elif op == "get_attr":
            key = f"{prefix}/{e['target']}"
            if key not in tensors:
                raise ModelFormatError(path, f"missing tensor '{key}'")
            owner = root
            *parents, leaf = e["target"].split(".")
            for p in parents:
                if not hasattr(owner, p):
                    owner.add_module(p, torch.nn.Module())
                owner = getattr(owner, p)
            if not hasattr(owner, leaf):
                owner.register_buffer(leaf, tensors[key])
            n = g.get_attr(e["target"])
        elif op == "call_function":
            n = g.call_function(_resolve(e["target"], path), args, kwargs)
        elif op == "call_module":
            if e["target"] not in doc.get("submodules", {}):
                raise ModelFormatError(path, f"call to unknown submodule '{e['target']}'")
            n = g.call_module(e["target"], args, kwargs)
        elif op == "output":
            n = g.output(args[0])
        else:
            raise ModelFormatError(path, f"unknown node kind '{op}'")
        n.name = e["name"]
        n.meta[STABLE_NAME] = e[STABLE_NAME]
        val = _val_from_json(e.get("val"))
        if val is not None:
            n.meta["val"] = val
        env[e["name"]] = n
    g.lint()
    return fx.GraphModule(root, g)


def load_graph(path: str | os.PathLike) -> tuple[fx.GraphModule, dict]:
    """Read a graph written by :func:`save_graph`; returns ``(graph_module, meta)``."""
    path = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            doc = json.loads(z.read("graph.json"))
            tensors = st_load(z.read("tensors.safetensors"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFormatError(path, f"not a torch_tpu graph file ({type(e).__name__}: {e})") from None
    if doc.get("format") != FORMAT or doc.get("version", 0) > VERSION:
        raise ModelFormatError(path, f"unsupported graph format {doc.get('format')} v{doc.get('version')}")
    try:
        gm = _build(doc["root"], "", tensors, path)
    except (KeyError, TypeError) as e:
        raise ModelFormatError(path, f"corrupt graph description ({type(e).__name__}: {e})") from None
    return gm, doc.get("meta", {})

"""The TOP graph: chip-independent, float, core ATen, every value named.

A :class:`TopGraph` wraps a flat ``torch.fx.GraphModule`` (tensor inputs in, tuple of tensors out) whose
nodes are core ATen ops, whose weights are ``get_attr`` attributes, and where every node has
``meta["val"]`` and ``meta["stable_name"]``. It is callable, prints as text, and saves as a torch.export
``.pt2`` archive plus a ``.txt`` dump. :func:`load_top` reads it back without unpickling anything: the
archive is checked for pickled payloads first and every tensor load is forced to ``weights_only``.

Example:
    >>> top = torch_tpu.transform(model, example_inputs=(x,))   # doctest: +SKIP
    >>> top.save("resnet18")      # resnet18.pt2 + resnet18.txt      # doctest: +SKIP
    >>> again = torch_tpu.graph.load_top("resnet18.pt2")            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from torch_tpu.errors import ModelFormatError
from torch_tpu.graph.meta import example_from_meta, refresh_meta, run_named
from torch_tpu.graph.names import STABLE_NAME, set_stable_name, stable_name
from torch_tpu.graph.printer import format_graph

FORMAT_VERSION = 1
_EXTRA = "torch_tpu.json"


class TopGraph:
    """A TOP-level graph.

    Attributes:
        gm: the flat GraphModule.
        source: where it came from (``torch``, ``onnx``, ``caffe``, ``tflite``).
        meta: JSON-able facts carried with the graph (preprocess config, source file, ...).
        out_spec: pytree spec to rebuild the source model's output structure (None: flat tuple).
    """

    def __init__(self, gm: fx.GraphModule, *, source: str = "torch", meta: dict[str, Any] | None = None,
                 out_spec: pytree.TreeSpec | None = None):
        self.gm = gm
        self.source = source
        self.meta = dict(meta or {})
        self.out_spec = out_spec

    # -- running -------------------------------------------------------------------------------
    def run_flat(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            out = self.gm(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        flat = self.run_flat(*inputs)
        if self.out_spec is not None:
            return pytree.tree_unflatten(list(flat), self.out_spec)
        return flat[0] if len(flat) == 1 else flat

    def named_values(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor value by stable name, in graph order (inputs and computed values)."""
        return run_named(self.gm, *inputs)[1]

    # -- facts ---------------------------------------------------------------------------------
    @property
    def input_nodes(self) -> list[fx.Node]:
        return [n for n in self.gm.graph.nodes if n.op == "placeholder"]

    @property
    def output_nodes(self) -> list[fx.Node]:
        out = next(n for n in reversed(self.gm.graph.nodes) if n.op == "output")
        args = out.args[0]
        return list(args) if isinstance(args, (tuple, list)) else [args]

    @property
    def input_names(self) -> list[str]:
        return [stable_name(n) for n in self.input_nodes]

    @property
    def output_names(self) -> list[str]:
        return [stable_name(n) for n in self.output_nodes]

    @property
    def input_specs(self) -> list[tuple[tuple[int, ...], torch.dtype]]:
        return [(tuple(n.meta["val"].shape), n.meta["val"].dtype) for n in self.input_nodes]

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        return example_from_meta(self.gm, seed=seed)

    def text(self) -> str:
        return format_graph(self.gm, f"TOP graph ({self.source})")

    def __repr__(self) -> str:
        n_ops = sum(1 for n in self.gm.graph.nodes if n.op == "call_function")
        return (f"TopGraph(source={self.source}, inputs={self.input_names}, outputs={self.output_names}, "
                f"ops={n_ops})")

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.pt2`` (torch.export archive) and ``<path>.txt`` (text dump); return the .pt2 path."""
        path = Path(path)
        if path.suffix == ".pt2":
            path = path.with_suffix("")
        path.parent.mkdir(parents=True, exist_ok=True)
        for n in self.gm.graph.nodes:
            n.meta.setdefault("custom", {})
            n.meta["custom"] = {**n.meta["custom"], STABLE_NAME: stable_name(n)}
        ep = torch.export.export(self.gm, self.example_inputs(), strict=False)
        header = {
            "format": "torch_tpu.top", "version": FORMAT_VERSION, "source": self.source, "meta": self.meta,
            "input_names": self.input_names, "output_names": self.output_names,
            "attr_names": {str(n.target): stable_name(n) for n in self.gm.graph.nodes if n.op == "get_attr"},
            "out_spec": pytree.treespec_dumps(self.out_spec) if self.out_spec is not None else None,
        }
        pt2 = path.with_suffix(".pt2")
        tmp = pt2.with_name(pt2.stem + ".partial.pt2")
        torch.export.save(ep, tmp, extra_files={_EXTRA: json.dumps(header)})
        os.replace(tmp, pt2)  # never leave a half-written archive under the real name
        path.with_suffix(".txt").write_text(self.text())
        return pt2


def _check_archive(path: Path) -> None:
    """Refuse archives that would make torch.export.load unpickle objects."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelFormatError(str(path), f"not a .pt2 archive ({e})") from None
    with zf:
        for name in zf.namelist():
            if name.endswith(("model_weights_config.json", "model_constants_config.json")):
                try:
                    cfg = json.loads(zf.read(name))
                except (ValueError, zipfile.BadZipFile) as e:
                    raise ModelFormatError(str(path), f"corrupt entry {name} ({e})") from None
                for fqn, entry in cfg.get("config", {}).items():
                    if entry.get("use_pickle", False):
                        raise ModelFormatError(str(path), f"tensor '{fqn}' is stored as a pickle; refusing to "
                                               "unpickle (re-save it with torch_tpu)")
                    ctype = entry.get("constant_type")
                    if ctype not in (None, "TENSOR", "tensor", 0):
                        raise ModelFormatError(str(path), f"constant '{fqn}' is a {ctype} object; refusing to "
                                               "unpickle")


@contextlib.contextmanager
def _weights_only():
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def flatten_codegen(gm: fx.GraphModule) -> fx.GraphModule:
    """Drop pytree in/out handling and dynamo guard calls: flat tensors in, a tuple out."""
    g = gm.graph
    for n in list(g.nodes):
        if n.op == "call_module" and str(n.target).startswith("_guards_fn"):
            g.erase_node(n)
    g._codegen = fx.graph.CodeGen()
    g.eliminate_dead_code()
    out = next(n for n in reversed(g.nodes) if n.op == "output")
    if not isinstance(out.args[0], (tuple, list)):
        out.args = ((out.args[0],),)
    else:
        out.args = (tuple(out.args[0]),)
    for name in [name for name, _ in gm.named_children() if name.startswith("_guards_fn")]:
        delattr(gm, name)
    for p in gm.parameters():
        p.requires_grad_(False)
    g.lint()
    gm.recompile()
    return gm


def load_top(path: str | os.PathLike) -> TopGraph:
    """Read a TOP graph written by :meth:`TopGraph.save` (never unpickles code)."""
    path = Path(path)
    if not path.exists() and path.with_suffix(".pt2").exists():
        path = path.with_suffix(".pt2")
    if not path.exists():
        raise ModelFormatError(str(path), "no such file")
    _check_archive(path)
    extra = {_EXTRA: ""}
    try:
        with _weights_only():
            ep = torch.export.load(path, extra_files=extra)
    except ModelFormatError:
        raise
    except Exception as e:  # torch raises many types on corrupt archives
        raise ModelFormatError(str(path), f"cannot read the torch.export archive: {type(e).__name__}: {e}") from None
    try:
        header = json.loads(extra[_EXTRA])
    except ValueError:
        raise ModelFormatError(str(path), f"missing or corrupt {_EXTRA}; not written by torch_tpu") from None
    if header.get("format") != "torch_tpu.top" or header.get("version", 0) > FORMAT_VERSION:
        raise ModelFormatError(str(path), f"unsupported TOP format {header.get('format')} v{header.get('version')}")
    gm = flatten_codegen(ep.module())
    for n in gm.graph.nodes:
        custom = n.meta.get("custom") or {}
        if STABLE_NAME in custom:
            set_stable_name(n, custom[STABLE_NAME])
    # getitem nodes re-created by tracing inherit the tuple's name: restore the naming rule.
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is operator.getitem:
            saved = (n.meta.get("custom") or {}).get(STABLE_NAME)
            if saved is None or saved == stable_name(n.args[0]):  # inherited from the tuple by re-tracing
                base = stable_name(n.args[0]).removesuffix("#tuple")
                set_stable_name(n, base if n.args[1] == 0 else f"{base}#{n.args[1]}")
    for n, name in zip([n for n in gm.graph.nodes if n.op == "placeholder"], header["input_names"]):
        set_stable_name(n, name)
    attr_names = header.get("attr_names", {})
    for n in gm.graph.nodes:
        if n.op == "get_attr":
            set_stable_name(n, attr_names.get(str(n.target), str(n.target)))
    refresh_meta(gm)
    out_spec = pytree.treespec_loads(header["out_spec"]) if header.get("out_spec") else None
    return TopGraph(gm, source=header.get("source", "torch"), meta=header.get("meta", {}), out_spec=out_spec)


def top_from_graph_module(gm: fx.GraphModule, *, source: str, meta: dict | None = None,
                          out_spec: pytree.TreeSpec | None = None,
                          inputs: Sequence[torch.Tensor] | None = None) -> TopGraph:
    """Wrap an already-flat core-ATen GraphModule whose nodes carry stable names."""
    if any("val" not in n.meta for n in gm.graph.nodes if n.op != "output"):
        refresh_meta(gm, inputs)
    return TopGraph(gm, source=source, meta=meta, out_spec=out_spec)

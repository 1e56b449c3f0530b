"""``load_caffe``: ``.prototxt`` + ``.caffemodel`` -> TOP graph."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.fx.traceback as fx_traceback

from torch_tpu.frontends.caffe.builder import CaffeModule, name_graph, plan_network
from torch_tpu.frontends.caffe.reader import read_net
from torch_tpu.frontends.caffe.registry import REGISTRY, LayerRegistry
from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.top import TopGraph


def _preprocess_meta(preprocess: Any) -> Any:
    if preprocess is None:
        return None
    for attr in ("to_dict", "as_dict"):
        if hasattr(preprocess, attr):
            return getattr(preprocess, attr)()
    return dict(preprocess) if isinstance(preprocess, Mapping) else preprocess


def load_caffe(prototxt: str | os.PathLike, caffemodel: str | os.PathLike | None = None, *,
               input_shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]] | None = None,
               preprocess: Any = None, registry: LayerRegistry | None = None) -> TopGraph:
    """Import a Caffe network as a TOP graph (core ATen, ``meta["val"]`` and stable names on every node).

    Args:
        prototxt: the network definition (text).
        caffemodel: the trained weights (binary); may be omitted only for a network without weights.
        input_shapes: shapes of the graph inputs, by blob name or in input order; they override the
            prototxt's ``Input`` shapes (e.g. another batch size).
        preprocess: the input preprocessing config (mean, scale, channel order ...); stored as
            ``top.meta["preprocess"]`` for calibration and test inputs.
        registry: a layer table other than the default (tests, extensions).

    Returns:
        A :class:`TopGraph` with ``source == "caffe"``. Stable names follow Caffe's blob (top) names;
        the rules are in :mod:`torch_tpu.frontends.caffe.builder`. ``top.meta["caffe"]`` holds the file
        names, the layer list (name, type, bottoms, tops) and the alias table.

    Raises:
        ModelFormatError: unreadable/corrupt files, syntax errors, bad blobs or parameters.
        UnsupportedOpError: a layer type or parameter value this importer does not handle.

    Example:
        >>> top = load_caffe("deploy.prototxt", "net.caffemodel")          # doctest: +SKIP
        >>> top(torch.zeros(top.input_specs[0][0]))                        # doctest: +SKIP
    """
    net = read_net(prototxt, caffemodel)
    plan = plan_network(net, registry or REGISTRY, input_shapes)
    module = CaffeModule(plan)
    examples = tuple(torch.zeros(shape) for _, shape in plan.inputs)
    meta = {
        "caffe": {
            "prototxt": os.fspath(prototxt), "caffemodel": os.fspath(caffemodel) if caffemodel else None,
            "name": net.name, "aliases": dict(plan.aliases),
            "layers": [{"name": s.layer.name, "type": s.layer.type, "bottoms": list(s.layer.bottoms),
                        "tops": list(s.layer.tops), "values": list(s.value_names)} for s in plan.steps],
        },
    }
    pre = _preprocess_meta(preprocess)
    if pre is not None:
        meta["preprocess"] = pre
    with fx_traceback.preserve_node_meta():
        top = capture_module(module, examples, meta=meta)
    name_graph(top.gm, plan)
    top.source = "caffe"
    top.out_spec = None  # a Caffe net returns its output blob, or a tuple of them
    return top

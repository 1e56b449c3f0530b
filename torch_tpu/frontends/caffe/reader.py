"""Read ``.prototxt`` / ``.caffemodel`` files into a plain list of layers.

* :func:`read_prototxt` parses text with ``google.protobuf.text_format`` (a syntax error becomes a
  :class:`~torch_tpu.errors.ModelFormatError` with the file, line and column);
* :func:`read_caffemodel` parses the binary ``NetParameter`` (a truncated or corrupt file becomes a
  ``ModelFormatError``);
* :func:`read_net` puts both together the way Caffe's ``Net(prototxt, TEST, weights=...)`` does: legacy
  ``layers`` (V1) are upgraded to ``layer``, layers are filtered by their include/exclude rules for the
  TEST phase, the legacy ``input``/``input_shape``/``input_dim`` fields become inputs, and the weights
  (``blobs``) of each layer are taken from the ``.caffemodel`` layer of the same name.

Nothing here executes or unpickles anything from the files: they are protobuf messages only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from google.protobuf import message as pb_message
from google.protobuf import text_format

from torch_tpu.errors import ModelFormatError
from torch_tpu.frontends.caffe.schema import message_class, new_net, v1_type_names

# V1LayerParameter.LayerType enum name -> the V2 ``type`` string (Caffe's UpgradeV1LayerType).
_V1_TO_V2 = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution",
    "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}


@dataclasses.dataclass(frozen=True)
class CaffeLayer:
    """One layer of the network, ready for a converter.

    Attributes:
        index: position among the kept layers.
        name, type: the layer's ``name`` and ``type``.
        bottoms, tops: blob names read and written.
        param: the ``caffe.LayerParameter`` message (for ``<x>_param`` fields).
        blobs: the trained blobs, as float32 tensors (from the ``.caffemodel``; empty without one).
    """

    index: int
    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    param: Any
    blobs: tuple[torch.Tensor, ...]


@dataclasses.dataclass
class CaffeNet:
    """A parsed network: inputs (name, shape or None) in order, then the layers in order."""

    name: str
    prototxt: str
    caffemodel: str | None
    inputs: list[tuple[str, tuple[int, ...] | None]]
    layers: list[CaffeLayer]


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ModelFormatError(path, f"cannot read the {what} ({e.strerror or e})") from None


def read_prototxt(path: str | os.PathLike) -> Any:
    """Parse a text ``.prototxt`` into a ``caffe.NetParameter``.

    Raises:
        ModelFormatError: the file is missing or has a syntax error (the message gives line and column).
    """
    path = os.fspath(path)
    data = _read_bytes(path, ".prototxt")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelFormatError(path, f"not a text .prototxt (byte {e.start} is not UTF-8)") from None
    net = new_net()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        msg = str(e)
        prefix = f"{line}:{col} : "
        msg = msg[len(prefix):] if msg.startswith(prefix) else msg
        where = f"line {line}, column {col}" if line is not None else "unknown position"
        raise ModelFormatError(path, f"prototxt syntax error at {where}: {msg}") from None
    return net


def read_caffemodel(path: str | os.PathLike) -> Any:
    """Parse a binary ``.caffemodel`` into a ``caffe.NetParameter``.

    Raises:
        ModelFormatError: the file is missing, truncated or not a serialized NetParameter.
    """
    path = os.fspath(path)
    data = _read_bytes(path, ".caffemodel")
    net = new_net()
    try:
        net.ParseFromString(data)
    except (pb_message.DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(path, f"truncated or corrupt .caffemodel ({type(e).__name__}: {e})") from None
    return net


def _upgrade_v1(v1: Any) -> Any:
    """A V1LayerParameter as a LayerParameter (same sub-messages, type enum -> type string)."""
    layer = message_class("LayerParameter")()
    layer.name = v1.name
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    enum_name = v1_type_names().get(v1.type, str(v1.type))
    layer.type = _V1_TO_V2.get(enum_name, enum_name)
    for rule in v1.include:
        layer.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        layer.exclude.add().CopyFrom(rule)
    for blob in v1.blobs:
        layer.blobs.add().CopyFrom(blob)
    for field, value in v1.ListFields():
        if field.name.endswith("_param") and field.message_type is not None:
            getattr(layer, field.name).CopyFrom(value)
    return layer


def _layers(net: Any, path: str) -> list[Any]:
    if len(net.layer) and len(net.layers):
        raise ModelFormatError(path, "the net mixes 'layer' and legacy 'layers' fields")
    return list(net.layer) if len(net.layer) else [_upgrade_v1(v1) for v1 in net.layers]


def _rule_matches(rule: Any, phase: int, level: int, stages: Sequence[str]) -> bool:
    """Caffe's Net::StateMeetsRule for one NetStateRule."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def _included(layer: Any, path: str) -> bool:
    test, level, stages = 1, 0, ()
    if layer.include and layer.exclude:
        raise ModelFormatError(path, "a layer may give include or exclude rules, not both", node=layer.name,
                               op=layer.type)
    if layer.include:
        return any(_rule_matches(r, test, level, stages) for r in layer.include)
    if layer.HasField("phase") and layer.phase != test:
        return False
    return not any(_rule_matches(r, test, level, stages) for r in layer.exclude)


def blob_to_tensor(blob: Any, *, path: str, layer: str, op: str, index: int) -> torch.Tensor:
    """A ``caffe.BlobProto`` as a float32 tensor of its declared shape.

    The shape is ``shape.dim`` or, in old files, ``(num, channels, height, width)``; the values are
    ``data`` (float) or ``double_data``. A count that does not match the shape is a ModelFormatError.
    """
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    elif any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = (len(blob.data) or len(blob.double_data),)
    if any(d < 0 for d in shape):
        raise ModelFormatError(path, f"blob {index} has a negative dimension in shape {list(shape)}", node=layer,
                               op=op)
    count = math.prod(shape)
    values = blob.data if len(blob.data) else blob.double_data
    if len(values) != count:
        raise ModelFormatError(path, f"blob {index} declares shape {list(shape)} ({count} values) but stores "
                               f"{len(values)} values", node=layer, op=op)
    arr = np.asarray(values, dtype=np.float32).reshape(shape)
    return torch.from_numpy(arr.copy())


def _legacy_inputs(net: Any, path: str) -> list[tuple[str, tuple[int, ...] | None]]:
    names = list(net.input)
    if len(net.input_shape):
        if len(net.input_shape) != len(names):
            raise ModelFormatError(path, f"{len(names)} inputs but {len(net.input_shape)} input_shape entries")
        return [(n, tuple(int(d) for d in s.dim)) for n, s in zip(names, net.input_shape)]
    if len(net.input_dim):
        if len(net.input_dim) != 4 * len(names):
            raise ModelFormatError(path, f"{len(names)} inputs need {4 * len(names)} input_dim values, "
                                   f"got {len(net.input_dim)}")
        dims = [int(d) for d in net.input_dim]
        return [(n, tuple(dims[4 * i:4 * i + 4])) for i, n in enumerate(names)]
    return [(n, None) for n in names]


def read_net(prototxt: str | os.PathLike, caffemodel: str | os.PathLike | None = None) -> CaffeNet:
    """Parse a network definition and (optionally) its trained weights.

    Returns:
        A :class:`CaffeNet` whose layers carry their blobs as tensors. ``Input`` layers stay in the layer
        list; legacy net-level inputs are in ``inputs``.

    Raises:
        ModelFormatError: unreadable files, bad blobs, a weighted layer with the wrong number of blobs.
    """
    proto_path = os.fspath(prototxt)
    model_path = os.fspath(caffemodel) if caffemodel is not None else None
    net = read_prototxt(proto_path)
    weights: Mapping[str, Any] = {}
    if model_path is not None:
        trained = read_caffemodel(model_path)
        weights = {layer.name: layer for layer in _layers(trained, model_path)}
    layers = []
    for layer in _layers(net, proto_path):
        if not _included(layer, proto_path):
            continue
        src = weights.get(layer.name)
        raw = list(src.blobs) if src is not None and len(src.blobs) else list(layer.blobs)
        blob_path = model_path if src is not None and len(src.blobs) else proto_path
        blobs = tuple(blob_to_tensor(b, path=blob_path, layer=layer.name, op=layer.type, index=i)
                      for i, b in enumerate(raw))
        layers.append(CaffeLayer(index=len(layers), name=layer.name, type=layer.type, bottoms=tuple(layer.bottom),
                                 tops=tuple(layer.top), param=layer, blobs=blobs))
    return CaffeNet(name=net.name, prototxt=proto_path, caffemodel=model_path,
                    inputs=_legacy_inputs(net, proto_path), layers=layers)

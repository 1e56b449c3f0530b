"""Helpers for the Caffe importer tests: write a net + random weights, run it in OpenCV, compare.

The .caffemodel is a NetParameter serialized with torch_tpu's run-time schema; OpenCV's importer,
which has its own compiled caffe.proto, is the independent reader and runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
from google.protobuf import text_format

from torch_tpu.frontends.caffe import new_net


def blob_proto(layer, array: np.ndarray) -> None:
    """Append ``array`` to ``layer.blobs`` with its shape."""
    b = layer.blobs.add()
    b.shape.dim.extend(int(d) for d in array.shape)
    b.data.extend(np.asarray(array, dtype=np.float32).ravel().tolist())


def write_net(tmp: Path, prototxt: str, weights: Mapping[str, Sequence[np.ndarray]] | None = None,
              name: str = "net") -> tuple[Path, Path]:
    """Write ``<name>.prototxt`` and ``<name>.caffemodel`` (layers of the prototxt, with ``weights`` by layer)."""
    proto = tmp / f"{name}.prototxt"
    proto.write_text(prototxt)
    parsed = new_net()
    text_format.Parse(prototxt, parsed)
    model = new_net()
    model.name = parsed.name
    for layer in parsed.layer:
        out = model.layer.add(name=layer.name, type=layer.type)
        for arr in (weights or {}).get(layer.name, ()):
            blob_proto(out, arr)
    path = tmp / f"{name}.caffemodel"
    path.write_bytes(model.SerializeToString())
    return proto, path


def opencv_net(proto: Path, model: Path | None):
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model)) if model else cv2.dnn.readNetFromCaffe(str(proto))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(False)
    return net


def run_opencv(proto: Path, model: Path | None, inputs: Mapping[str, np.ndarray],
               layers: Sequence[str]) -> list[np.ndarray]:
    """Outputs (output 0) of ``layers`` computed by OpenCV's dnn module."""
    net = opencv_net(proto, model)
    for name, x in inputs.items():
        net.setInput(np.ascontiguousarray(x, dtype=np.float32), name)
    return [np.asarray(o) for o in net.forward(list(layers))]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """Normwise relative error ``max|a - b| / max(max|b|, 1e-30)``."""
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))


def final_writers(top) -> dict[str, str]:
    """blob name -> the layer that writes its final value (from ``top.meta['caffe']['layers']``)."""
    last: dict[str, str] = {}
    for layer in top.meta["caffe"]["layers"]:
        for t in layer["tops"]:
            last[t] = layer["name"]
    return last


def compare_with_opencv(top, proto: Path, model: Path | None, inputs: Mapping[str, np.ndarray],
                        tol: float = 1e-5) -> dict[str, float]:
    """Run every graph output in torch_tpu and OpenCV; assert shape equality and ``rel_err <= tol``."""
    import torch

    ours = top.run_flat(*[torch.from_numpy(np.asarray(inputs[n], dtype=np.float32)) for n in top.input_names])
    writers = final_writers(top)
    blobs = [writers.get(n, n) for n in top.output_names]
    ref = run_opencv(proto, model, inputs, blobs)
    errs = {}
    for name, a, b in zip(top.output_names, ours, ref):
        a = a.numpy()
        assert a.shape == b.shape, f"{name}: torch_tpu {a.shape} vs OpenCV {b.shape}"
        errs[name] = rel_err(a, b)
        assert errs[name] <= tol, f"{name}: relative error {errs[name]:.3g} > {tol}"
    return errs

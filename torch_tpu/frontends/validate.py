"""Run a model file in its own runtime, the reference a TOP graph is checked against.

ONNX -> onnxruntime, Caffe -> OpenCV's dnn module, TFLite -> LiteRT (``ai_edge_litert``). Inputs and
outputs are in the source model's own layout, as the TOP graph takes and returns them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from torch_tpu.errors import ModelFormatError


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def run_onnxruntime(path: str | os.PathLike, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    outs = sess.run(None, {n: _np(x) for n, x in zip(names, inputs)})
    return tuple(torch.from_numpy(np.asarray(o)) for o in outs)


def run_opencv_caffe(prototxt: str | os.PathLike, caffemodel: str | os.PathLike,
                     inputs: Sequence[torch.Tensor], output_names: Sequence[str] | None = None
                     ) -> tuple[torch.Tensor, ...]:
    import cv2
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    if len(inputs) == 1:
        net.setInput(_np(inputs[0]).astype(np.float32))
    else:
        for i, x in enumerate(inputs):
            net.setInput(_np(x).astype(np.float32), f"data{i}" if i else "data")
    names = list(output_names) if output_names else list(net.getUnconnectedOutLayersNames())
    outs = net.forward(names)
    return tuple(torch.from_numpy(np.asarray(o)) for o in outs)


def run_litert(path: str | os.PathLike, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    for d, x in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], _np(x).astype(d["dtype"]))
    it.invoke()
    return tuple(torch.from_numpy(np.array(it.get_tensor(d["index"]))) for d in it.get_output_details())


def run_source(path: str | os.PathLike, inputs: Sequence[torch.Tensor], *, weights: str | os.PathLike | None = None
               ) -> tuple[tuple[torch.Tensor, ...], str]:
    """``(outputs, runtime name)`` of the model file in its own runtime."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return run_onnxruntime(path, inputs), "onnxruntime"
    if suffix == ".prototxt":
        if weights is None:
            raise ModelFormatError(str(path), "a Caffe model needs its .caffemodel weights")
        return run_opencv_caffe(path, weights, inputs), "OpenCV dnn"
    if suffix == ".tflite":
        return run_litert(path, inputs), "LiteRT"
    raise ModelFormatError(str(path), f"no source runtime for '{suffix}' files")

"""TFLite frontend: ``.tflite`` (float, or pre-quantized int8 imported in float) -> TOP graph.

    >>> from torch_tpu.frontends.tflite import load_tflite, supported_ops   # doctest: +SKIP
    >>> top = load_tflite("model.tflite")                                    # doctest: +SKIP
"""

from torch_tpu.frontends.tflite.importer import import_tflite_model, load_tflite
from torch_tpu.frontends.tflite.reader import read_tflite
from torch_tpu.frontends.tflite.registry import supported_ops

__all__ = ["import_tflite_model", "load_tflite", "read_tflite", "supported_ops"]

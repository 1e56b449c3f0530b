"""Op versions onnx2torch lacks whose inference semantics equal a version it has: reuse its converter.

Each entry ``(op, new_version, base_version, limits)`` registers onnx2torch's converter of
``base_version`` for ``new_version``. ``limits`` maps an attribute added by the newer version to a
predicate that is true for the values keeping the old semantics (the attribute's value, None when
absent); any other value is refused by name. What changed (ONNX changelog):

* Identity 19/21, Reshape 19/21, Shape 19/21, Flatten 21, Transpose 21, Unsqueeze 21, Squeeze 21 ...:
  float8 / int4 / uint4 types only.
* Cast 19/21: float8 types and the ``saturate`` attribute (only meaningful for float8 targets).
* Constant 19/21, ConstantOfShape 20/21: more value types.
* Equal 19: string inputs. GreaterOrEqual / LessOrEqual 16: bfloat16.
* AveragePool 19: ``dilations`` (only 1 keeps the old meaning).
* IsInf 20, IsNaN 20: float8 types.

Older versions that opset 7-9 models (the ONNX model zoo) use, where the newer converter computes the
same inference result:

* Dropout 7: ``is_test`` was removed (inference: identity, like Dropout 10).
* Gemm 7: ``broadcast`` was removed, unidirectional broadcast of C (the same as Gemm 9).
* BatchNormalization 7: ``spatial`` (1 = one statistic per channel, the only meaning later versions
  have), ``is_test`` removed.
"""

from __future__ import annotations

from typing import Any, Callable

from onnx2torch.node_converters.registry import get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from torch_tpu.frontends.onnx_converters._common import ConverterError


def _dilations_are_one(value: Any) -> bool:
    return value is None or all(int(v) == 1 for v in value)


Limits = dict[str, Callable[[Any], bool]]

VERSION_ALIASES: list[tuple[str, int, int, Limits]] = [
    ("Identity", 19, 16, {}),
    ("Identity", 21, 16, {}),
    ("Reshape", 19, 14, {}),
    ("Reshape", 21, 14, {}),
    ("Shape", 19, 15, {}),
    ("Shape", 21, 15, {}),
    ("Flatten", 21, 13, {}),
    ("Transpose", 21, 13, {}),
    ("Unsqueeze", 21, 13, {}),
    ("Cast", 19, 13, {}),
    ("Cast", 21, 13, {}),
    ("Constant", 19, 13, {}),
    ("Constant", 21, 13, {}),
    ("ConstantOfShape", 20, 9, {}),
    ("ConstantOfShape", 21, 9, {}),
    ("Equal", 19, 13, {}),
    ("GreaterOrEqual", 16, 12, {}),
    ("LessOrEqual", 16, 12, {}),
    ("AveragePool", 19, 11, {"dilations": _dilations_are_one}),
    ("IsInf", 20, 10, {}),
    ("IsNaN", 20, 13, {}),
    ("Dropout", 7, 10, {}),
    ("Gemm", 7, 9, {}),
    ("BatchNormalization", 7, 9, {"spatial": lambda v: v is None or v == 1}),
]


def make_version_converter(op: str, base_version: int, limits: Limits
                           ) -> Callable[[OnnxNode, OnnxGraph], OperationConverterResult]:
    """A converter for a newer version of ``op`` that checks ``limits`` and calls the base converter."""
    base = get_converter(op, base_version)

    def convert_newer_version(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        for attr, accepts in limits.items():
            value = node.attributes.get(attr)
            if not accepts(value):
                raise ConverterError(f"{op}: attribute {attr}={value!r} is not supported")
        return base(node, graph)

    convert_newer_version.__name__ = f"convert_{op.lower()}_as_v{base_version}"
    convert_newer_version.__qualname__ = convert_newer_version.__name__
    return convert_newer_version


def converters() -> list[tuple[str, int, Callable[[OnnxNode, OnnxGraph], OperationConverterResult]]]:
    """The ``(op, version, converter)`` rows for :data:`VERSION_ALIASES`."""
    return [(op, version, make_version_converter(op, base, limits))
            for op, version, base, limits in VERSION_ALIASES]

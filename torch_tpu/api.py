"""The Python faces of torch_tpu (the names of DESIGN.md's public surface).

Example:
    >>> import torch, torchvision, torch_tpu
    >>> model = torchvision.models.resnet18().eval()
    >>> x = torch.randn(1, 3, 224, 224)
    >>> top = torch_tpu.transform(model, example_inputs=(x,))            # TOP graph
    >>> fast = torch.compile(model, backend="tpu", options={"precision": "bf16"})
    >>> rep = torch_tpu.compare(model(x), fast(x), tolerance=(0.99, 0.9))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.utils._pytree as pytree

from torch_tpu.config import CompileOptions
from torch_tpu.errors import ConfigError, ModelFormatError
from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.fx_passes import run_pipeline
from torch_tpu.graph.top import TopGraph, load_top
from torch_tpu.verify.compare import CompareReport
from torch_tpu.verify.compare import compare as _compare


def transform(model_or_path: torch.nn.Module | str | os.PathLike, example_inputs: Sequence[Any] | None = None, *,
              preprocess: Any = None, weights: str | os.PathLike | None = None,
              input_shapes: dict[str, list[int]] | None = None, optimize: bool = True,
              dump_dir: str | os.PathLike | None = None, check: bool = False) -> TopGraph:
    """A model -> its TOP graph (core ATen, stable names, after the fx_passes pipeline).

    Args:
        model_or_path: an ``nn.Module``, or a file: ``.onnx``, ``.prototxt`` (with ``weights=`` the
            ``.caffemodel``), ``.tflite``, or a saved TOP graph ``.pt2``.
        example_inputs: inputs for an ``nn.Module`` (shapes and dtypes are taken from them).
        preprocess: a preprocessing config stored with the graph (``frontends.preprocess``).
        input_shapes: for files with dynamic input dimensions.
        optimize: run the fx_passes pipeline (BN folding, constant folding, ...).
        dump_dir: write the graph after capture and after every pass.
        check: run the TOP checker after every pass.

    Example:
        >>> top = torch_tpu.transform(torchvision.models.resnet18(), (torch.randn(1, 3, 224, 224),))
        >>> top.save("resnet18")   # resnet18.pt2 + resnet18.txt                       # doctest: +SKIP
    """
    if isinstance(model_or_path, torch.nn.Module):
        if example_inputs is None:
            raise ConfigError("transform(nn.Module) needs example_inputs")
        meta = {}
        if preprocess is not None:
            meta["preprocess"] = preprocess.to_dict() if hasattr(preprocess, "to_dict") else dict(preprocess)
        top = capture_module(model_or_path, tuple(example_inputs), meta=meta)
    else:
        top = _load_file(Path(model_or_path), weights=weights, input_shapes=input_shapes, preprocess=preprocess)
    if dump_dir is not None:
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        (Path(dump_dir) / "00_captured.txt").write_text(top.text())
    if optimize:
        run_pipeline(top.gm, dump_dir=Path(dump_dir) if dump_dir else None, check=check)
    return top


def _load_file(path: Path, *, weights, input_shapes, preprocess) -> TopGraph:
    if not path.exists():
        raise ModelFormatError(str(path), "no such file")
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        return load_top(path)
    if suffix == ".onnx":
        from torch_tpu.frontends.onnx_frontend import load_onnx
        return load_onnx(path, input_shapes=input_shapes, preprocess=preprocess)
    if suffix == ".prototxt":
        from torch_tpu.frontends.caffe import load_caffe
        if weights is None:
            raise ConfigError(f"{path}: a Caffe model needs weights= the .caffemodel file")
        return load_caffe(path, weights, input_shapes=input_shapes, preprocess=preprocess)
    if suffix == ".tflite":
        from torch_tpu.frontends.tflite import load_tflite
        return load_tflite(path, preprocess=preprocess)
    raise ModelFormatError(str(path), f"unknown model format '{suffix}' (known: .onnx, .prototxt, .tflite, .pt2)")


def compare(a: Any, b: Any, tolerance: tuple[float, float] = (0.99, 0.99), **kwargs: Any) -> CompareReport:
    """Per named tensor: cosine, Euclidean similarity, SQNR, max abs diff (see :mod:`torch_tpu.verify`).

    Example:
        >>> rep = torch_tpu.compare({"y": ref}, {"y": out}, tolerance=(0.99, 0.9))   # doctest: +SKIP
        >>> print(rep); rep.raise_if_failed()                                       # doctest: +SKIP
    """
    return _compare(a, b, tolerance, **kwargs)


def compile(model: torch.nn.Module, example_inputs: Sequence[Any] | None = None, *, target: str = "bm1684x",
            precision: str = "f32", calibration_data: Any = None, calibration_method: str = "kl",
            num_samples: int = 100, tune_num: int = 5, weight_rounding: str | None = None,
            **options: Any) -> torch.nn.Module:
    """One call: (calibrate, then) ``torch.compile(model, backend="tpu", options=...)``, compiled right
    away on ``example_inputs`` when given (so errors and fallbacks show here, not at the first real call).

    For ``precision="int8"`` without a ``calibration_table`` option, ``calibration_data`` (an iterable of
    inputs or a folder of .npy/.npz) is calibrated first with ``calibration_method``/``num_samples``/
    ``tune_num``; the table is kept as ``compiled.calibration_table``.

    ``weight_rounding="gptq"`` (int8 with ``calibration_data``): the model's TOP graph gets data-aware
    weight rounding first (:func:`round_weights`), is calibrated, and that graph is what is compiled.

    Example:
        >>> fast = torch_tpu.compile(model, (x,), precision="bf16")                            # doctest: +SKIP
        >>> q = torch_tpu.compile(model, (x,), precision="int8", calibration_data=images)       # doctest: +SKIP
    """
    from torch_tpu.backend import tpu_backend

    table = options.pop("calibration_table", None)
    module: torch.nn.Module = model.eval()
    if weight_rounding is not None:
        if weight_rounding != "gptq":
            raise ConfigError(f"compile: unknown weight_rounding {weight_rounding!r} (choose gptq)")
        if precision != "int8" or calibration_data is None:
            raise ConfigError("compile: weight_rounding needs precision int8 and calibration_data")
        if not isinstance(calibration_data, (str, os.PathLike)):
            calibration_data = list(itertools.islice(calibration_data, num_samples))
        top = round_weights(module, calibration_data, num_samples=num_samples, example_inputs=example_inputs)
        module = top.gm           # compiled as is: its placeholders and values keep the table's stable names
        if table is None:
            table = calibrate(top, calibration_data, method=calibration_method, num_samples=num_samples,
                              tune_num=tune_num)
    if precision == "int8" and table is None:
        if calibration_data is None:
            raise ConfigError("precision int8 needs calibration_data or a calibration_table option")
        table = calibrate(module, calibration_data, method=calibration_method, num_samples=num_samples,
                          tune_num=tune_num, example_inputs=example_inputs)
    opts = CompileOptions.from_dict({"target": target, "precision": precision, "calibration_table": table,
                                     **options})
    compiled = torch.compile(module, backend=tpu_backend, options=_as_options_dict(opts))
    if weight_rounding is not None:
        compiled = _Unflatten(compiled, top.out_spec)
    if example_inputs is not None:
        with torch.no_grad():
            compiled(*example_inputs)
    compiled.calibration_table = table
    return compiled


class _Unflatten(torch.nn.Module):
    """A compiled TOP graph (flat outputs) with the source model's output structure."""

    def __init__(self, compiled: Any, out_spec: pytree.TreeSpec | None):
        super().__init__()
        self.compiled = compiled
        self.out_spec = out_spec

    def forward(self, *inputs: Any) -> Any:
        out = self.compiled(*inputs)
        flat = list(out) if isinstance(out, (tuple, list)) else [out]
        if self.out_spec is not None:
            return pytree.tree_unflatten(flat, self.out_spec)
        return flat[0] if len(flat) == 1 else tuple(flat)


def _as_options_dict(opts: CompileOptions) -> dict[str, Any]:
    import dataclasses
    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}


def calibrate(top_or_model: TopGraph | torch.nn.Module, data: Any, method: str = "kl", num_samples: int = 100,
              tune_num: int = 5, *, example_inputs: Sequence[Any] | None = None, progress: bool = True,
              **kwargs: Any):
    """Calibrate a TOP graph (or an ``nn.Module``, transformed first) -> :class:`CalibrationTable`.

    Args:
        top_or_model: a TopGraph, or a module (then ``example_inputs`` are needed, or the first data item
            is used as the example).
        data: an iterable of tensors / tuples of tensors, or a folder of ``.npy``/``.npz`` files or images
            (read with the graph's preprocessing config, ``top.meta["preprocess"]``).
        method: ``kl`` (default), ``max``, ``percentile``, ``mse`` or ``search``.
        num_samples, tune_num: as TPU-MLIR's run_calibration (``--input_num``, ``--tune_num``).

    Example:
        >>> table = torch_tpu.calibrate(model, [torch.randn(1, 3, 224, 224) for _ in range(100)],
        ...                             example_inputs=(torch.randn(1, 3, 224, 224),))   # doctest: +SKIP
        >>> table.save("resnet18_cali_table")                                          # doctest: +SKIP
    """
    from torch_tpu.quant import calibrate as _calibrate

    top_or_model, data = _top_and_data(top_or_model, data, example_inputs, "calibrate")
    return _calibrate(top_or_model, data, method=method, num_samples=num_samples, tune_num=tune_num,
                      progress=progress, **kwargs)


def round_weights(top_or_model: TopGraph | torch.nn.Module, data: Any, num_samples: int = 64, *,
                  example_inputs: Sequence[Any] | None = None, progress: bool = True, **kwargs: Any) -> TopGraph:
    """Data-aware int8 weight rounding (GPTQ-style error feedback) -> a new :class:`TopGraph` whose weights lie
    on the INT8 lowering's grid (:mod:`torch_tpu.quant.rounding`). Calibrate and deploy the returned graph.

    ``top_or_model`` and ``data`` as for :func:`calibrate`; ``kwargs``: ``damp``, ``block``, ``max_inputs``.

    Example:
        >>> top = torch_tpu.round_weights(model, images[:64], example_inputs=(x,))          # doctest: +SKIP
        >>> program = torch_tpu.deploy(top, precision="int8",
        ...                            calibration_table=torch_tpu.calibrate(top, images))  # doctest: +SKIP
    """
    from torch_tpu.quant.rounding import round_weights as _round_weights

    top, data = _top_and_data(top_or_model, data, example_inputs, "round_weights")
    return _round_weights(top, data, num_samples=num_samples, progress=progress, **kwargs)


def _top_and_data(top_or_model: TopGraph | torch.nn.Module, data: Any, example_inputs: Sequence[Any] | None,
                  what: str) -> tuple[TopGraph, Any]:
    """The TOP graph (a module is transformed with ``example_inputs`` or the first data item) and the data (an
    image folder read with the graph's preprocessing config)."""
    if isinstance(top_or_model, torch.nn.Module):
        if example_inputs is None:
            data = list(data) if not isinstance(data, (str, os.PathLike)) else data
            if isinstance(data, list) and data:
                first = data[0]
                example_inputs = tuple(first) if isinstance(first, (tuple, list)) else (first,)
            else:
                raise ConfigError(f"{what}(nn.Module) needs example_inputs")
        top_or_model = transform(top_or_model, example_inputs)
    if isinstance(data, (str, os.PathLike)) and _has_images(Path(data)):
        data = _image_folder(top_or_model, Path(data))
    return top_or_model, data


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.iterdir())


def _image_folder(top: TopGraph, folder: Path):
    """Images read with the graph's own preprocessing config (and .npy/.npz files as they are)."""
    from torch_tpu.frontends.preprocess import PreprocessConfig

    cfg = top.meta.get("preprocess")
    if not cfg:
        raise ConfigError(f"{folder}: calibrating on images needs the graph's preprocessing config "
                          "(transform(..., preprocess=PreprocessConfig(...)))")
    return PreprocessConfig.from_dict(cfg).load_folder(folder)


def deploy(top_or_model: TopGraph | torch.nn.Module, example_inputs: Sequence[Any] | None = None, *,
           target: str = "bm1684x", precision: str = "f32", calibration_table: Any = None, qtable: Any = None,
           asymmetric: bool = False, name: str = "model", return_plan: bool = False):
    """TOP graph (or module) -> TPU graph -> :class:`~torch_tpu.cmodel.Program` for the cmodel.

    The whole graph must lower and generate code (no eager fallback in a Program). Programs take the
    graph's inputs by stable name and return ``output0``, ``output1``, ... A pre-quantized TFLite graph
    deployed in int8 without a table uses its own scales (``frontends.tflite.calibration``). With
    ``return_plan=True`` the result is ``(program, ddr_plan)``; ``ddr_plan.report()`` is the activation DDR
    footprint with liveness reuse and aliases against the naive sum of all activation sizes.

    Example:
        >>> prog = torch_tpu.deploy(model, (x,), target="bm1684x", precision="f32")    # doctest: +SKIP
        >>> prog.save("resnet18.tpu"); outs = torch_tpu.run("resnet18.tpu", {"x": x})    # doctest: +SKIP
    """
    from torch_tpu.lowering import lower
    from torch_tpu.lowering.codegen import codegen

    top = top_or_model if isinstance(top_or_model, TopGraph) else transform(top_or_model, example_inputs)
    if precision == "int8" and calibration_table is None and top.meta.get("tflite_quant"):
        # a pre-quantized TFLite model carries its own calibration: its scales and zero points
        from torch_tpu.frontends.tflite.calibration import calibration_table_from_tflite, needs_asymmetric
        calibration_table = calibration_table_from_tflite(top)
        asymmetric = asymmetric or needs_asymmetric(top)
    tpu = lower(top.gm, target, precision, calibration_table=calibration_table, qtable=qtable, asymmetric=asymmetric)
    return codegen(tpu, target, name=name, return_plan=return_plan)


def run(program_or_path: Any, inputs: Any, *, cmodel: str = "auto", profile: bool = False, debug: bool = False):
    """Run a Program (or a ``.tpu`` path) on the cmodel.

    Args:
        inputs: ``{input name: tensor}``, or a sequence in the Program's input order.
        cmodel: ``auto`` | ``c`` | ``triton`` | ``reference`` kernels.
        profile: also return the timing profile (cycles, DDR traffic, per-layer breakdown, trace).

    Returns:
        ``{output name: tensor}``, or a ``RunResult`` (outputs, profile, intermediates) with profile/debug.
    """
    from torch_tpu.cmodel import Program, run_program

    program = program_or_path if isinstance(program_or_path, Program) else Program.load(program_or_path)
    if not isinstance(inputs, dict):
        seq = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(seq) != len(program.inputs):
            raise ConfigError(f"run: {len(seq)} input(s) for a program with {len(program.inputs)} "
                              f"({', '.join(t.name for t in program.inputs)})")
        inputs = {t.name: v for t, v in zip(program.inputs, seq)}
    return run_program(program, inputs, kernels=cmodel, profile=profile, debug=debug)

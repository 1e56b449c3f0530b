"""The ``torch.compile`` backend ``"tpu"``.

``torch.compile(model, backend="tpu", options={...})`` works in any process once torch_tpu is installed:
the package declares ``tpu = torch_tpu.backend:tpu_backend`` in the ``torch_dynamo_backends`` entry point
group, which dynamo looks up by name.

What happens to the graph dynamo hands over (each step can be dumped with ``dump_dir``):

1. parameters and buffers are frozen into constants (inference compiler);
2. capture: torch.export + core ATen decompositions -> TOP graph with stable names (the same as
   ``torch_tpu.transform`` gives for the module);
3. fx_passes pipeline (TOP -> TOP);
4. lowering for (target, precision): supported regions become TPU graphs of ``torch.ops.tpu.*`` ops,
   unsupported ops stay in eager with one report line each (op, stable name, source line);
5. the result runs the TPU graph with the ops' reference semantics.

Compiles are cached on disk (key: the dynamo graph, input shapes/dtypes, the weights, the options, the
torch_tpu and torch versions), so compiling the same graph again in a new process skips 2-4.
Graphs with dynamic shapes are specialized per concrete input shape (at most
``torch._dynamo.config.recompile_limit`` shapes kept).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx

import torch_tpu
from torch_tpu import tpu_ops  # noqa: F401  (registers torch.ops.tpu.*)
from torch_tpu.config import STAGE_TOLERANCE, CompileOptions
from torch_tpu.errors import ConfigError, VerificationError
from torch_tpu.frontends.torch_frontend import capture_frozen, freeze_dynamo_params
from torch_tpu.fx_passes import run_pipeline
from torch_tpu.graph.meta import run_named
from torch_tpu.graph.printer import format_graph
from torch_tpu.graph.serialize import load_graph, save_graph
from torch_tpu.graph.top import TopGraph
from torch_tpu.lowering.partition import Fallback, lower_partitioned
from torch_tpu.targets import get_target
from torch_tpu.verify.compare import CompareReport, compare

log = logging.getLogger("torch_tpu")

_RECENT: collections.deque = collections.deque(maxlen=16)
_TOP_MEMO: "collections.OrderedDict[str, TopGraph]" = collections.OrderedDict()


@dataclasses.dataclass
class CompiledGraph:
    """One compiled graph: what runs, and (when compiled in this process) the stages that produced it.

    Attributes:
        module: the lowered module (TPU partitions + eager fallback ops), flat tensors in, tuple out.
        fallbacks: ops that run in eager instead of on the TPU graph.
        options: the compile options.
        top: the TOP graph after fx_passes (None when loaded from the on-disk cache).
        eager: the dynamo graph with frozen weights (the reference), when compiled in this process.
        seconds: wall time of capture, passes and lowering (or of the cache load).
        from_cache: whether the on-disk cache answered.
    """

    module: fx.GraphModule
    fallbacks: list[Fallback]
    options: CompileOptions
    top: TopGraph | None = None
    eager: fx.GraphModule | None = None
    seconds: float = 0.0
    from_cache: bool = False

    def __call__(self, *args: Any) -> tuple:
        with torch.no_grad():
            out = self.module(*args)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def text(self) -> str:
        return format_graph(self.module, f"TPU graph ({self.options.target}/{self.options.precision})")

    def check(self, *inputs: torch.Tensor, tolerance: tuple[float, float] | None = None) -> list[CompareReport]:
        """Stage-by-stage comparison on ``inputs``: TOP vs eager (outputs), TPU vs TOP (every named tensor).

        Needs the stages of an in-process compile (not a cache hit). Returns the reports; raise with
        ``report.raise_if_failed()``.
        """
        if self.top is None or self.eager is None:
            raise VerificationError("this graph came from the on-disk cache; compile with cache=False to check stages")
        tol = tolerance or STAGE_TOLERANCE[self.options.precision]
        with torch.no_grad():
            eager_out = self.eager(*inputs)
        eager_out = eager_out if isinstance(eager_out, (tuple, list)) else (eager_out,)
        top_out, top_vals = run_named(self.top.gm, *inputs)
        names = self.top.output_names
        reports = [compare(dict(zip(names, eager_out)), dict(zip(names, top_out)), STAGE_TOLERANCE["f32"],
                           title="TOP vs eager (outputs)")]
        tpu_out, tpu_vals = run_named(self.module, *inputs)
        common = [n for n in top_vals if n in tpu_vals]
        reports.append(compare(top_vals, tpu_vals, tol, names=common,
                               title=f"TPU[{self.options.target}/{self.options.precision}] vs TOP (named tensors)"))
        reports.append(compare(dict(zip(names, top_out)), dict(zip(names, tpu_out)), tol,
                               title=f"TPU[{self.options.target}/{self.options.precision}] vs TOP (outputs)"))
        return reports


def recent_compiles() -> list[CompiledGraph]:
    """The graphs this process compiled most recently (newest last), for inspection and tests."""
    return list(_RECENT)


# -- cache keys ---------------------------------------------------------------------------------------
def _tensor_digest(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach().contiguous().cpu()
    h.update(f"{tuple(t.shape)}{t.dtype}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def graph_digest(gm: fx.GraphModule, user_args: Sequence[Any]) -> str:
    """Digest of a frozen dynamo graph: its code, input shapes/dtypes and every constant's bytes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(gm.code.encode())
    for a in user_args:
        h.update(f"{tuple(a.shape)}{a.dtype}".encode() if isinstance(a, torch.Tensor) else repr(a).encode())
    for name, buf in sorted(gm.named_buffers()):
        h.update(name.encode())
        _tensor_digest(h, buf)
    for name, p in sorted(gm.named_parameters()):
        h.update(name.encode())
        _tensor_digest(h, p)
    return h.hexdigest()


def _options_digest(opts: CompileOptions) -> str:
    def file_or_value(x: Any) -> str:
        if x is None:
            return "-"
        if isinstance(x, (str, Path)) and Path(x).is_file():
            return hashlib.blake2b(Path(x).read_bytes(), digest_size=16).hexdigest()
        return repr(sorted(x.items())) if hasattr(x, "items") else repr(x)
    parts = [opts.target, opts.precision, file_or_value(opts.calibration_table), file_or_value(opts.qtable),
             str(opts.asymmetric), str(opts.fallback), torch_tpu.__version__, torch.__version__]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


# -- compiling ----------------------------------------------------------------------------------------
def _dump(opts: CompileOptions, name: str, text: str) -> None:
    if opts.dump_dir:
        d = Path(opts.dump_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)


def _report_fallbacks(fallbacks: Sequence[Fallback], opts: CompileOptions) -> None:
    lines = [f"torch_tpu[{opts.target}/{opts.precision}]: fallback to eager: {f.op} at '{f.stable_name}'"
             + (f" ({f.location})" if f.location else "") for f in fallbacks]
    _dump(opts, "fallbacks.txt", "\n".join(lines) + "\n" if lines else "no fallback op\n")
    if opts.verbose:
        for line in lines:
            log.warning(line)


def compile_frozen(gm: fx.GraphModule, user_args: Sequence[Any], user_names: Sequence[str],
                   opts: CompileOptions) -> CompiledGraph:
    """Compile a dynamo graph whose weights are frozen, for concrete ``user_args``."""
    start = time.perf_counter()
    target = get_target(opts.target)
    target.check_precision(opts.precision)
    digest = graph_digest(gm, user_args)
    key = digest + "-" + _options_digest(opts)
    cache_file = Path(opts.cache_dir) / key[:2] / f"{key}.tgraph"
    if opts.cache and not opts.dump_dir and cache_file.is_file():
        try:
            module, meta = load_graph(cache_file)
        except torch_tpu.errors.ModelFormatError as e:
            log.warning("torch_tpu: ignoring a bad cache entry %s (%s)", cache_file, e)
        else:
            fallbacks = [Fallback(*f) for f in meta.get("fallbacks", [])]
            _report_fallbacks(fallbacks, opts)
            return CompiledGraph(module, fallbacks, opts, seconds=time.perf_counter() - start, from_cache=True)

    _dump(opts, "00_dynamo_graph.txt", gm.code)
    top = _TOP_MEMO.get(digest)
    if top is None or opts.dump_dir:
        top = capture_frozen(gm, user_args, user_names)
        _dump(opts, "01_top_captured.txt", top.text())
        run_pipeline(top.gm, dump_dir=Path(opts.dump_dir) / "passes" if opts.dump_dir else None, check=opts.check)
        _dump(opts, "02_top.txt", top.text())
        _TOP_MEMO[digest] = top
        while len(_TOP_MEMO) > 4:
            _TOP_MEMO.popitem(last=False)
    module = lower_partitioned(top.gm, target, opts.precision, fallback=opts.fallback,
                               calibration_table=opts.calibration_table, qtable=opts.qtable,
                               asymmetric=opts.asymmetric)
    fallbacks = list(module.meta.get("fallbacks", []))
    _dump(opts, f"03_tpu_{target.name}_{opts.precision}.txt",
          format_graph(module, f"TPU graph ({target.name}/{opts.precision})"))
    _report_fallbacks(fallbacks, opts)
    if opts.cache:
        try:
            save_graph(module, cache_file, meta={"fallbacks": [dataclasses.astuple(f) for f in fallbacks],
                                                 "target": target.name, "precision": opts.precision})
        except (OSError, torch_tpu.errors.TorchTpuError) as e:
            log.warning("torch_tpu: could not write the compile cache (%s)", e)
    return CompiledGraph(module, fallbacks, opts, top=top, eager=gm, seconds=time.perf_counter() - start)


def _is_dynamic(args: Sequence[Any]) -> bool:
    for a in args:
        if isinstance(a, torch.SymInt) or (isinstance(a, torch.Tensor) and any(
                isinstance(s, torch.SymInt) for s in a.shape)):
            return True
    return False


class _ShapeSpecialized:
    """Compiles a dynamic-shape dynamo graph once per concrete input signature (LRU-bounded)."""

    def __init__(self, gm: fx.GraphModule, user_pos: list[int], user_names: list[str], opts: CompileOptions):
        self.gm, self.user_pos, self.user_names, self.opts = gm, user_pos, user_names, opts
        self.compiled: "collections.OrderedDict[tuple, CompiledGraph]" = collections.OrderedDict()
        self.limit = max(1, int(getattr(torch._dynamo.config, "recompile_limit", 8)))

    def __call__(self, *args: Any) -> tuple:
        user = list(args) if len(args) == len(self.user_pos) else [args[i] for i in self.user_pos]
        sig = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else a for a in user)
        c = self.compiled.get(sig)
        if c is None:
            c = compile_frozen(self.gm, user, self.user_names, self.opts)
            _RECENT.append(c)
            self.compiled[sig] = c
            while len(self.compiled) > self.limit:
                self.compiled.popitem(last=False)
        else:
            self.compiled.move_to_end(sig)
        return c(*user)


def tpu_backend(gm: fx.GraphModule, example_inputs: Sequence[Any], options: dict | None = None,
                mode: str | None = None) -> Callable:
    """The dynamo backend. ``options`` are :class:`torch_tpu.config.CompileOptions` fields."""
    if mode not in (None, "default"):
        raise ConfigError(f"backend 'tpu' has no mode {mode!r}; use options={{...}}")
    opts = CompileOptions.from_dict(options)
    get_target(opts.target).check_precision(opts.precision)
    user_pos, user_names = freeze_dynamo_params(gm, example_inputs)
    user_args = [example_inputs[i] for i in user_pos]
    if _is_dynamic(user_args):
        return _ShapeSpecialized(gm, user_pos, user_names, opts)
    compiled = compile_frozen(gm, user_args, user_names, opts)
    _RECENT.append(compiled)

    n_all = len(example_inputs)

    def run(*args: Any) -> tuple:
        # Dynamo passes the inputs of the graph as it is after this backend returned (the frozen
        # parameter placeholders are gone); select the user inputs if it still passes them all.
        return compiled(*(args if len(args) != n_all or n_all == len(user_pos) else [args[i] for i in user_pos]))

    run.compiled = compiled  # type: ignore[attr-defined]
    return run

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
5. codegen: every TPU graph becomes a cmodel :class:`~torch_tpu.cmodel.Program`, and calling the compiled
   function runs the Programs on the cmodel (kernels from the ``cmodel`` option). A TPU graph that codegen
   cannot take (an op without a handler, a tile that fits no lane) runs with the ``torch.ops.tpu`` reference
   ops instead, with one report line naming the op and stable name; ``cmodel="none"`` does that for all.

Compiles are cached on disk (key: the dynamo graph, input shapes/dtypes, the weights, the options, the
torch_tpu and torch versions): the lowered graph and its Programs, so compiling the same graph again in a
new process skips 2-5.
Graphs with dynamic shapes are specialized per concrete input shape (at most
``torch._dynamo.config.recompile_limit`` shapes kept).
"""

from __future__ import annotations

import collections
import copy
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
from torch_tpu.cmodel import Program, Simulator
from torch_tpu.config import CMODEL_CHAIN_TOLERANCE, CMODEL_TOLERANCE, STAGE_TOLERANCE, CompileOptions
from torch_tpu.errors import ConfigError, TorchTpuError, VerificationError
from torch_tpu.frontends.torch_frontend import capture_frozen, freeze_dynamo_params
from torch_tpu.fx_passes import run_pipeline
from torch_tpu.graph.meta import run_named
from torch_tpu.graph.names import stable_name
from torch_tpu.graph.printer import format_graph
from torch_tpu.graph.serialize import load_graph, save_graph
from torch_tpu.graph.top import TopGraph
from torch_tpu.lowering.builder import fetch_attr
from torch_tpu.lowering.codegen import codegen
from torch_tpu.lowering.int8_driver import QPARAMS
from torch_tpu.lowering.partition import Fallback, lower_partitioned
from torch_tpu.targets import get_target
from torch_tpu.verify.compare import CompareReport, compare

log = logging.getLogger("torch_tpu")

_RECENT: collections.deque = collections.deque(maxlen=16)
_TOP_MEMO: "collections.OrderedDict[str, TopGraph]" = collections.OrderedDict()


@dataclasses.dataclass(frozen=True)
class CmodelFallback:
    """A TPU graph that runs with the reference ops because codegen could not make a Program of it.

    Attributes:
        partition: the submodule (``tpu_0``, ...).
        reason: codegen's error (names the op and the stable name).
    """

    partition: str
    reason: str


class ProgramModule(torch.nn.Module):
    """A TPU partition compiled to a cmodel Program: calling it runs the Program on the cmodel.

    Takes the partition's inputs in order (the Program's inputs) and returns what the TPU graph returns
    (one tensor or a tuple). With ``debug`` set, :attr:`tensors` holds every probed value of the last run
    by stable name.
    """

    def __init__(self, program: Program, kernels: str, tuple_out: bool, out_dtypes: Sequence[torch.dtype]):
        super().__init__()
        self.program, self.kernels, self.tuple_out = program, kernels, tuple_out
        self.out_dtypes = list(out_dtypes)   # the TPU graph's (a Program holds bool as uint8, int64 as int32)
        self.debug = False
        self.tensors: dict[str, torch.Tensor] = {}
        self.last_inputs: tuple = ()
        self._sim: Simulator | None = None

    def forward(self, *args: torch.Tensor) -> Any:
        if self._sim is None:
            self._sim = Simulator(self.program, self.kernels)
        # int64 indices are int32 in a Program (codegen ddr_plan.cm_dtype)
        outs, _ = self._sim.run({io.name: a.to(io.dtype.torch) for io, a in zip(self.program.inputs, args)},
                                debug=self.debug)
        if self.debug:
            self.tensors, self.last_inputs = dict(self._sim.tensors), args
        res = [t if t.dtype == d else t.to(d) for t, d in
               zip((outs[io.name] for io in self.program.outputs), self.out_dtypes)]
        return tuple(res) if self.tuple_out else res[0]


def _tpu_partitions(module: fx.GraphModule) -> list[str]:
    return [n.target for n in module.graph.nodes if n.op == "call_module" and str(n.target).startswith("tpu_")]


def _generate_programs(module: fx.GraphModule, opts: CompileOptions
                       ) -> tuple[dict[str, Program], list[CmodelFallback]]:
    programs, failed = {}, []
    for name in _tpu_partitions(module):
        try:
            programs[name] = codegen(getattr(module, name), opts.target, name=name)
        except TorchTpuError as e:
            failed.append(CmodelFallback(name, str(e)))
    return programs, failed


def _program_runner(module: fx.GraphModule, programs: dict[str, Program], kernels: str) -> fx.GraphModule:
    """A copy of the lowered graph whose TPU partitions with a Program run on the cmodel."""
    runner = fx.GraphModule(module, copy.deepcopy(module.graph), module.__class__.__name__)
    for name, prog in programs.items():
        sub = getattr(module, name)
        outs = next(n for n in sub.graph.nodes if n.op == "output").args[0]
        dtypes: list[torch.dtype] = []
        fx.node.map_arg(outs, lambda n: dtypes.append(n.meta["val"].dtype))
        runner.add_submodule(name, ProgramModule(prog, kernels, isinstance(outs, (tuple, list)), dtypes))
    runner.meta.update(module.meta)
    return runner


@dataclasses.dataclass
class CompiledGraph:
    """One compiled graph: what runs, and (when compiled in this process) the stages that produced it.

    Attributes:
        module: the lowered module (TPU partitions + eager fallback ops), flat tensors in, tuple out.
        fallbacks: ops that run in eager instead of on the TPU graph.
        options: the compile options.
        top: the TOP graph after fx_passes (None when loaded from the on-disk cache).
        eager: the dynamo graph with frozen weights (the reference), when compiled in this process.
        seconds: wall time of capture, passes, lowering and codegen (or of the cache load).
        from_cache: whether the on-disk cache answered.
        programs: ``{partition: Program}`` for the TPU graphs that run on the cmodel.
        cmodel_fallbacks: TPU graphs that run with the reference ops (codegen could not take them).
        runner: what a call runs: ``module`` with the partitions that have a Program replaced by
            :class:`ProgramModule` (``module`` itself when ``cmodel="none"``).
    """

    module: fx.GraphModule
    fallbacks: list[Fallback]
    options: CompileOptions
    top: TopGraph | None = None
    eager: fx.GraphModule | None = None
    seconds: float = 0.0
    from_cache: bool = False
    programs: dict[str, Program] = dataclasses.field(default_factory=dict)
    cmodel_fallbacks: list[CmodelFallback] = dataclasses.field(default_factory=list)
    runner: fx.GraphModule | None = None

    def __post_init__(self) -> None:
        if self.runner is None:
            self.runner = (self.module if self.options.cmodel == "none" or not self.programs
                           else _program_runner(self.module, self.programs, self.options.cmodel))

    @property
    def on_cmodel(self) -> bool:
        """Whether every TPU graph runs as a Program on the cmodel."""
        return self.runner is not self.module and not self.cmodel_fallbacks

    def __call__(self, *args: Any) -> tuple:
        with torch.no_grad():
            out = self.runner(*args)
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
        tag = f"{self.options.target}/{self.options.precision}"
        real = _dequantized(self.module, tpu_vals)
        common = [n for n in top_vals if n in real]
        reports.append(compare(top_vals, real, tol, names=common,
                               title=f"TPU[{tag}] vs TOP (named tensors)"))
        tpu_out = tpu_out if isinstance(tpu_out, (tuple, list)) else (tpu_out,)
        reports.append(compare(dict(zip(names, top_out)), dict(zip(names, tpu_out)), tol,
                               title=f"TPU[{tag}] vs TOP (outputs)"))
        if self.runner is not self.module:
            reports += self._check_cmodel(inputs, tpu_vals, dict(zip(names, tpu_out)))
        return reports

    def _check_cmodel(self, inputs: Sequence[torch.Tensor], tpu_vals: dict[str, torch.Tensor],
                      tpu_out: dict[str, torch.Tensor]) -> list[CompareReport]:
        """cmodel vs TPU graph: every op re-run on the Program's own probed inputs against its probed output
        (``CMODEL_TOLERANCE``), then the outputs end to end (``CMODEL_CHAIN_TOLERANCE``: float rounding
        differences of successive ops compound through the depth of the model)."""
        mods = {name: m for name, m in self.runner.named_children() if isinstance(m, ProgramModule)}
        for m in mods.values():
            m.debug = True
        try:
            out = self(*inputs)
        finally:
            for m in mods.values():
                m.debug = False
        local: dict[str, torch.Tensor] = {}
        probed: dict[str, torch.Tensor] = {}
        for name, m in mods.items():
            ref, got = _rerun_ops(getattr(self.module, name), m.last_inputs, m.tensors)
            local.update(ref)
            probed.update(got)
            m.tensors, m.last_inputs = {}, ()
        prec = self.options.precision
        tag = f"{self.options.target}/{prec}, kernels {self.options.cmodel}"
        return [compare(local, probed, CMODEL_TOLERANCE[prec],
                        title=f"cmodel[{tag}] vs TPU graph (every op on the Program's own inputs)"),
                compare(tpu_out, dict(zip(tpu_out, out)), CMODEL_CHAIN_TOLERANCE[prec],
                        title=f"cmodel[{tag}] vs TPU graph (outputs)")]


def _dequantized(module: fx.GraphModule, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``values`` with every int8 TPU value turned back into real numbers by its qparams (meta ``QPARAMS``);
    an int8 value without qparams is left out (its codes mean nothing next to a float TOP value)."""
    qparams = {stable_name(n): n.meta[QPARAMS] for m in module.modules() if isinstance(m, fx.GraphModule)
               for n in m.graph.nodes if QPARAMS in n.meta}
    out = {}
    for name, v in values.items():
        if v.dtype != torch.int8:
            out[name] = v
        elif name in qparams:
            scale, zero_point = qparams[name]
            out[name] = (v.to(torch.float32) - zero_point) * scale
    return out


def _rerun_ops(tpu_gm: fx.GraphModule, inputs: Sequence[torch.Tensor], probed: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each op of a TPU graph run with its reference semantics on the values the Program produced for its
    operands: ``({stable name: reference}, {stable name: Program value})`` in graph order, in the graph's dtypes
    (a Program holds bool as uint8 and int64 as int32)."""
    values: dict[fx.Node, torch.Tensor] = {}
    refs, got = {}, {}
    placeholders = [n for n in tpu_gm.graph.nodes if n.op == "placeholder"]
    for n, x in zip(placeholders, inputs):
        values[n] = x
    for n in tpu_gm.graph.nodes:
        if n.op == "get_attr":
            values[n] = fetch_attr(tpu_gm, n.target)
        elif n.op == "call_function":
            name = stable_name(n)
            val = n.meta.get("val")
            if name not in probed or not isinstance(val, torch.Tensor):
                return refs, got        # a value the Program does not hold: later ops have no inputs to use
            args = fx.node.map_arg(n.args, values.__getitem__)
            kwargs = fx.node.map_arg(n.kwargs, values.__getitem__)
            with torch.no_grad():
                refs[name] = n.target(*args, **kwargs)
            got[name] = values[n] = probed[name].to(val.dtype)
    return refs, got


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
            programs, failed = _cached_programs(module, cache_file, meta, opts)
            _report_cmodel_fallbacks(failed, opts)
            return CompiledGraph(module, fallbacks, opts, seconds=time.perf_counter() - start, from_cache=True,
                                 programs=programs, cmodel_fallbacks=failed)

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
    programs, failed = _generate_programs(module, opts) if opts.cmodel != "none" else ({}, [])
    for name, prog in programs.items():
        _dump(opts, f"04_program_{name}.txt", prog.to_text())
    _report_cmodel_fallbacks(failed, opts)
    if opts.cache:
        try:
            meta = {"fallbacks": [dataclasses.astuple(f) for f in fallbacks], "target": target.name,
                    "precision": opts.precision}
            if opts.cmodel != "none":
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                for name, prog in programs.items():
                    prog.save(_program_file(cache_file, name))
                meta["programs"] = sorted(programs)
                meta["cmodel_fallbacks"] = [dataclasses.astuple(f) for f in failed]
            save_graph(module, cache_file, meta=meta)
        except (OSError, torch_tpu.errors.TorchTpuError) as e:
            log.warning("torch_tpu: could not write the compile cache (%s)", e)
    return CompiledGraph(module, fallbacks, opts, top=top, eager=gm, seconds=time.perf_counter() - start,
                         programs=programs, cmodel_fallbacks=failed)


def _program_file(cache_file: Path, partition: str) -> Path:
    return cache_file.with_name(f"{cache_file.stem}.{partition}.tpu")


def _cached_programs(module: fx.GraphModule, cache_file: Path, meta: dict, opts: CompileOptions
                     ) -> tuple[dict[str, Program], list[CmodelFallback]]:
    """The Programs saved with a cached graph; generated again when the entry has none (or a bad one)."""
    if opts.cmodel == "none":
        return {}, []
    if "programs" in meta:
        try:
            programs = {name: Program.load(_program_file(cache_file, name)) for name in meta["programs"]}
            return programs, [CmodelFallback(*f) for f in meta.get("cmodel_fallbacks", [])]
        except torch_tpu.errors.ProgramError as e:
            log.warning("torch_tpu: regenerating the Programs of a bad cache entry (%s)", e)
    return _generate_programs(module, opts)


def _report_cmodel_fallbacks(failed: Sequence[CmodelFallback], opts: CompileOptions) -> None:
    lines = [f"torch_tpu[{opts.target}/{opts.precision}]: {f.partition} runs with the reference ops, not on the "
             f"cmodel: {f.reason}" for f in failed]
    if opts.cmodel != "none":
        _dump(opts, "cmodel_fallbacks.txt", "\n".join(lines) + "\n" if lines else "every TPU graph runs on the cmodel\n")
    if opts.verbose:
        for line in lines:
            log.warning(line)


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

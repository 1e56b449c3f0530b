"""Mixed precision: rank layers by int8 sensitivity, then keep the fewest layers in float.

A **layer** is a ``call_function`` node of the TOP graph whose inputs an int8 graph would quantize: it
produces one float tensor, reads at least one activation or weight, and is not a range-preserving op
(relu, max pool, view, permute ... — they run in whatever precision their input has, see
:mod:`torch_tpu.quant.propagate`) nor a ``getitem``. So convolution, addmm/mm/bmm/matmul, add/mul,
cat, mean, avg pool, softmax ... are layers; each is named by its stable name, which is what a
:class:`~torch_tpu.quant.tables.QTable` keys on.

**Evaluator.** Everything here measures the network through a pluggable *evaluator*: a callable
``evaluator(float_layers) -> outputs`` that, given the set of layer names kept in float (all others
int8), returns the network outputs, one tuple of tensors per sample. The default is
:class:`SimulationEvaluator` — **a float simulation of int8** (fake quantization; every number computed
with it is a simulation number). The real INT8 path is
:class:`torch_tpu.lowering.int8_driver.Int8Evaluator`: it lowers the graph with the candidate qtable and
runs the integer TPU ops (``lowering`` sits above ``quant``, so it is passed in as ``evaluator=``; it
re-lowers per candidate: sensitivity + search of a 6-layer CNN, 8 lowerings, take 2.1-2.6 s against
0.1 s simulated; so use it for the search over a ranking, or for both on small graphs).

Simulation semantics of one layer ``L`` (``fq(x, s, zp) = (clamp(round(x / s) + zp, -128, 127) - zp) · s``
from :mod:`torch_tpu.fixed_point`, with each tensor's ``(s, zp)`` from its calibration entry by
:func:`torch_tpu.quant.qscheme.activation_qparams`, the INT8 lowering's grid; ``s = T / 127``, ``zp = 0``
for a bare threshold ``T``):

* ``L`` in INT8: every activation input ``x`` with an entry is read as ``fq(x, s_x, zp_x)``; every
  weight (a constant of ≥ 2 dims reached from a ``get_attr`` through range-preserving ops) is read
  per output channel ``c`` as ``fq(w_c, max|w_c| / 127)`` (the output-channel axis per op is the table
  :data:`~torch_tpu.quant.simulate.WEIGHT_AXIS`; other ≥ 2-D constants per tensor); 1-D constants (biases) stay float (an int32
  bias is exact to ``s_in · s_w / 2``); the output is ``fq(y, s_y, zp_y)``, except where the INT8
  lowering never rounds it to int8: a producer fused with its activation
  (:func:`~torch_tpu.quant.simulate.fusible_pair`: relu / relu6 / clip, whose output is then
  ``fq``'d on its own entry, or a curved activation, which reads the producer's value unrounded) and a
  conv / linear / matmul read only by the graph output
  (:func:`~torch_tpu.quant.simulate.float_outputs`, dequantized straight to f32);
* ``L`` in float (F32): inputs and weights as they come (an int8 producer's output arrives already on
  its grid, i.e. dequantized), output unquantized; in BF16, inputs, weights and the output are
  rounded to bfloat16.

With no layer in float this is :func:`~torch_tpu.quant.simulate.run_fake_quant` with per-output-channel
weights and without the entries of those unrounded values; with every layer in float it is the float graph.

**Sensitivity** (TPU-MLIR's ``run_sensitive_layer`` idea): for each layer ``L``, only ``L`` in int8
(all others float), score ``cos(L) = mean over samples of mean over float outputs of
cos(out_float, out_L)``; ascending ``cos`` is the ranking, most sensitive first.

**Search**: start from all-int8; while the output cosine is below ``expected_cos``, put the next layer
of the ranking in float and re-measure the whole network; stop at the first set that reaches it
(or at ``max_float`` layers). The layers put in float are written to a QTable as F32 (or BF16).

Example:
    >>> table = torch_tpu.calibrate(top, data)                                   # doctest: +SKIP
    >>> qtable, report = search_qtable(top, table, samples[:4], expected_cos=0.99)   # doctest: +SKIP
    >>> print(report); qtable.save("model_qtable")                              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import operator
import os
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

import torch
import torch.fx as fx
from tqdm.auto import tqdm

from torch_tpu.errors import MixedPrecisionError
from torch_tpu.graph.names import stable_name
from torch_tpu.quant.calibrate import as_inputs, graph_module
from torch_tpu.quant.propagate import is_activation, preserving_input
from torch_tpu.quant.qscheme import ActivationSpec
from torch_tpu.quant.simulate import (fake_quant_activation, fake_quant_weight, float_outputs, fused_producers,
                                     fusible_pair, output_similarity, run_env, weight_axis)
from torch_tpu.quant.tables import CalibrationTable, QTable

Outputs = list[tuple[torch.Tensor, ...]]
"""Network outputs, one tuple of flat output tensors per sample."""

Evaluator = Callable[[frozenset[str]], Outputs]
"""``evaluator(float_layers) -> outputs``: the network with ``float_layers`` in float, all other layers int8."""

FLOAT_MODES = ("F32", "BF16")


# MixedPrecisionError is defined with every other error in torch_tpu.errors.


def _is_weight(node: fx.Node) -> bool:
    val = node.meta.get("val")
    return node.op == "get_attr" and (val is None or (isinstance(val, torch.Tensor) and val.is_floating_point()))


def is_layer(node: fx.Node) -> bool:
    """Whether ``node`` is a layer in the module-doc sense (its inputs are quantized in an int8 graph)."""
    if node.op != "call_function" or node.target is operator.getitem or not is_activation(node):
        return False
    if preserving_input(node) is not None:
        return False
    return any(is_activation(i) or _is_weight(i) or _feeds_from_weight(i) for i in node.all_input_nodes)


def _feeds_from_weight(node: fx.Node) -> bool:
    """``node`` is a weight seen through range-preserving ops (``permute(w)``, ``view(w)``)."""
    while node.op == "call_function":
        src = preserving_input(node)
        if src is None:
            return False
        node = src
    return _is_weight(node)


def quantizable_layers(top: Any) -> list[str]:
    """Stable names of the layers of a TopGraph / GraphModule, in graph order.

    Example:
        >>> quantizable_layers(top)[:3]                     # doctest: +SKIP
        ['conv1', 'layer1.0.conv1', 'layer1.0.conv2']
    """
    return [stable_name(n) for n in graph_module(top).graph.nodes if is_layer(n)]


@dataclasses.dataclass
class _LayerPlan:
    node: fx.Node
    name: str
    quant_inputs: dict[fx.Node, ActivationSpec]   # activation input -> its table entry (or threshold)
    weights: dict[fx.Node, int | None]            # weight-carrying input (get_attr or its view) -> axis
    out_threshold: ActivationSpec | None
    fused_input: fx.Node | None = None            # the producer this layer (a curved activation) fuses into


class SimulationEvaluator:
    """The default evaluator: int8 by fake quantization of the TOP graph (module doc, **a simulation**).

    The float run of every sample is kept (memory: one set of activations per sample), so an evaluation
    only re-runs the graph from the first layer that is not in F32.

    Args:
        top: TopGraph or GraphModule.
        table: the calibration table (thresholds by stable name); tensors missing from it stay float.
        samples: the evaluation samples, each a tensor or a tuple of input tensors (keep them few).
        float_mode: ``"F32"`` or ``"BF16"``: the arithmetic of the layers kept in float.

    Example:
        >>> ev = SimulationEvaluator(top, table, samples)          # doctest: +SKIP
        >>> outs_int8 = ev(frozenset())                             # every layer int8
        >>> outs_fc_float = ev(frozenset({"fc"}))                   # fc in float
    """

    def __init__(self, top: Any, table: CalibrationTable | Mapping[str, float], samples: Sequence[Any], *,
                 float_mode: str = "F32"):
        self.gm = graph_module(top)
        if float_mode.upper() not in FLOAT_MODES:
            raise MixedPrecisionError(f"mixed_precision: float_mode {float_mode!r} is not one of {FLOAT_MODES}")
        self.float_mode = float_mode.upper()
        self.samples = [as_inputs(s, i) for i, s in enumerate(samples)]
        if not self.samples:
            raise MixedPrecisionError("mixed_precision: no evaluation samples")
        thresholds = dict(table.items()) if isinstance(table, CalibrationTable) else dict(table)
        self.nodes = list(self.gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.placeholders = [n for n in self.nodes if n.op == "placeholder"]
        self.plans: dict[str, _LayerPlan] = {}
        # never int8 in the lowering when their layer is int8: a fused producer's own output and a float-output
        # MAC's (quant/simulate.py: fusible_pair, float_outputs)
        unquantized = fused_producers(self.gm) | float_outputs(self.gm)
        #: a bounds activation (relu / clip, not a layer) fused into an int8 producer: its output is int8
        self._fused_acts: dict[fx.Node, tuple[str, ActivationSpec]] = {}
        for n in self.nodes:
            if not is_layer(n):
                continue
            quant_inputs, weights = {}, {}
            for pos, arg in _indexed_inputs(n):
                if _is_weight(arg) or _feeds_from_weight(arg):
                    val = arg.meta.get("val")
                    ndim = val.ndim if isinstance(val, torch.Tensor) else 2
                    if ndim >= 2:
                        weights[arg] = weight_axis(n, pos)
                elif is_activation(arg) and stable_name(arg) in thresholds:
                    quant_inputs[arg] = thresholds[stable_name(arg)]
            name = stable_name(n)
            out_t = None if n in unquantized else thresholds.get(name)
            self.plans[name] = _LayerPlan(n, name, quant_inputs, weights, out_t)
        self.layers = list(self.plans)
        self._by_node = {p.node: p for p in self.plans.values()}
        for name, plan in self.plans.items():
            act = fusible_pair(plan.node)
            if act is None:
                continue
            if act in self._by_node:
                self._by_node[act].fused_input = plan.node
            elif act not in unquantized and stable_name(act) in thresholds:
                self._fused_acts[act] = (name, thresholds[stable_name(act)])
        self._float_envs = [run_env(self.gm, s) for s in self.samples]
        out_node = next(n for n in reversed(self.nodes) if n.op == "output")
        self.reference: Outputs = [_flat(fx.node.map_arg(out_node.args[0], env.__getitem__))
                                   for env in self._float_envs]
        self._qweights: dict[tuple[fx.Node, int | None], torch.Tensor] = {}

    def check_names(self, names: Iterable[str], what: str = "float layer") -> None:
        """Raise :class:`MixedPrecisionError` naming every entry that is not a layer of the graph."""
        bad = [n for n in names if n not in self.plans]
        if bad:
            raise MixedPrecisionError(f"mixed_precision: {what}(s) {bad} are not layers of the graph "
                                      f"(layers: {self.layers[:8]}{' ...' if len(self.layers) > 8 else ''})")

    def _qweight(self, node: fx.Node, value: torch.Tensor, axis: int | None) -> torch.Tensor:
        key = (node, axis)
        if key not in self._qweights:
            self._qweights[key] = fake_quant_weight(value, axis)
        return self._qweights[key]

    def __call__(self, float_layers: Collection[str]) -> Outputs:
        """Network outputs per sample with ``float_layers`` in float and every other layer in int8."""
        float_layers = frozenset(float_layers)
        self.check_names(float_layers)
        changed = [p for name, p in self.plans.items() if name not in float_layers or self.float_mode != "F32"]
        if not changed:
            return [tuple(r) for r in self.reference]
        start = min(self.index[p.node] for p in changed)
        return [self._run_from(env, start, float_layers) for env in self._float_envs]

    def _run_from(self, prefix: Mapping[fx.Node, Any], start: int, float_layers: frozenset[str]
                  ) -> tuple[torch.Tensor, ...]:
        env: dict[fx.Node, Any] = {}
        bf16 = self.float_mode == "BF16"

        def value(n: fx.Node) -> Any:
            return env[n] if n in env else prefix[n]

        with torch.no_grad():
            for n in self.nodes[start:]:
                if n.op == "output":
                    return _flat(fx.node.map_arg(n.args[0], value))
                if n.op in ("placeholder", "get_attr"):
                    env[n] = prefix[n]
                    continue
                if n.op != "call_function":
                    raise MixedPrecisionError(f"mixed_precision: node '{stable_name(n)}' ({n.op} {n.target}) "
                                              f"is not a call_function; the TOP graph should be flat")
                plan = self._by_node.get(n)
                if plan is None:
                    out = n.target(*fx.node.map_arg(n.args, value), **fx.node.map_arg(n.kwargs, value))
                    fused = self._fused_acts.get(n)
                    if fused is not None and fused[0] not in float_layers:
                        out = fake_quant_activation(out, fused[1])
                    env[n] = out
                    continue
                int8 = plan.name not in float_layers
                subst: dict[fx.Node, Any] = {}
                if int8:
                    for x, t in plan.quant_inputs.items():
                        if x is plan.fused_input and stable_name(x) not in float_layers:
                            continue            # fused: the producer's accumulator feeds the table directly
                        subst[x] = fake_quant_activation(value(x), t)
                    for w, axis in plan.weights.items():
                        subst[w] = self._qweight(w, value(w), axis)
                elif bf16:
                    for x in n.all_input_nodes:
                        v = value(x)
                        if isinstance(v, torch.Tensor) and v.is_floating_point():
                            subst[x] = v.to(torch.bfloat16).to(v.dtype)

                def read(a: fx.Node) -> Any:
                    return subst[a] if a in subst else value(a)

                out = n.target(*fx.node.map_arg(n.args, read), **fx.node.map_arg(n.kwargs, read))
                if int8 and plan.out_threshold is not None:
                    out = fake_quant_activation(out, plan.out_threshold)
                elif not int8 and bf16:
                    out = out.to(torch.bfloat16).to(out.dtype)
                env[n] = out
        raise MixedPrecisionError("mixed_precision: the graph has no output node")


def _indexed_inputs(node: fx.Node) -> list[tuple[int, fx.Node]]:
    """``(positional index or -1 for kwargs/nested, input node)`` for each direct node input."""
    out = [(i, a) for i, a in enumerate(node.args) if isinstance(a, fx.Node)]
    seen = {a for _, a in out}
    out += [(-1, a) for a in node.all_input_nodes if a not in seen]
    return out


def _flat(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def network_cosine(reference: Outputs, outputs: Outputs) -> float:
    """``mean over samples of mean over float outputs of cos(ref, out)`` (the score used throughout)."""
    if len(reference) != len(outputs) or not reference:
        raise MixedPrecisionError(f"mixed_precision: evaluator returned {len(outputs)} sample(s) for "
                                  f"{len(reference)} reference sample(s)")
    return sum(output_similarity(r, o) for r, o in zip(reference, outputs)) / len(reference)


def _setup(top: Any, table: Any, samples: Sequence[Any], evaluator: Evaluator | None, float_mode: str
           ) -> tuple[list[str], Evaluator, Outputs]:
    sim = SimulationEvaluator(top, table, samples, float_mode=float_mode)
    return sim.layers, (evaluator if evaluator is not None else sim), sim.reference


def _rank(all_layers: Sequence[str], ev: Evaluator, ref: Outputs, chosen: Sequence[str], desc: str,
          progress: bool) -> list[tuple[str, float]]:
    everything = frozenset(all_layers)
    scores = []
    for name in tqdm(chosen, desc=desc, disable=not progress, leave=False):
        scores.append((name, network_cosine(ref, ev(everything - {name}))))
    order = {n: i for i, n in enumerate(chosen)}
    return sorted(scores, key=lambda s: (s[1], order[s[0]]))


def sensitivity(top: Any, table: CalibrationTable | Mapping[str, float], samples: Sequence[Any],
                evaluator: Evaluator | None = None, *, layers: Sequence[str] | None = None,
                progress: bool = True) -> list[tuple[str, float]]:
    """Rank layers by how much quantizing each one **alone** (all others float) hurts the output.

    ``cos(L) = mean_s mean_o cos(float_out[s][o], out_with_only_L_int8[s][o])``.

    Args:
        top: TopGraph or GraphModule (float).
        table: calibration table (or ``{name: threshold}``).
        samples: evaluation samples (a few: each layer costs one partial forward pass per sample).
        evaluator: ``evaluator(float_layers) -> outputs per sample``; default :class:`SimulationEvaluator`
            (a simulation of int8, see the module doc).
        layers: restrict to these layer names (default: every layer, :func:`quantizable_layers`).
        progress: show a tqdm bar.

    Returns:
        ``[(layer name, cosine)]``, most sensitive (lowest cosine) first; ties keep graph order.

    Example:
        >>> sensitivity(top, table, samples[:4])[:2]        # doctest: +SKIP
        [('conv2', 0.71), ('fc', 0.998)]
    """
    all_layers, ev, ref = _setup(top, table, samples, evaluator, "F32")
    chosen = list(layers) if layers is not None else all_layers
    bad = [n for n in chosen if n not in all_layers]
    if bad:
        raise MixedPrecisionError(f"sensitivity: {bad} are not layers of the graph")
    return _rank(all_layers, ev, ref, chosen, _desc("sensitivity", evaluator), progress)


def _desc(what: str, evaluator: Evaluator | None) -> str:
    return f"{what} (simulated int8)" if evaluator is None else what


@dataclasses.dataclass
class SearchReport:
    """What :func:`search_qtable` measured.

    Attributes:
        expected_cos: the target output cosine.
        int8_cosine: output cosine with every layer int8 (before the search).
        final_cosine: output cosine with the chosen layers in float (after the search).
        float_layers: the layers put in float, in the order they were added.
        steps: ``(layer added, output cosine after adding it)`` per greedy step.
        ranking: the sensitivity ranking used (:func:`sensitivity`).
        num_layers: layers in the graph.
        mode: QTable mode of the float layers (F32 or BF16).
        evaluator: ``"simulation"`` for the default evaluator, else the evaluator's name.
    """

    expected_cos: float
    int8_cosine: float
    final_cosine: float
    float_layers: list[str]
    steps: list[tuple[str, float]]
    ranking: list[tuple[str, float]]
    num_layers: int
    mode: str
    evaluator: str

    @property
    def reached(self) -> bool:
        """Whether the final output cosine reaches ``expected_cos``."""
        return self.final_cosine >= self.expected_cos

    def __str__(self) -> str:
        lines = [f"mixed-precision search ({self.evaluator}; int8 numbers from the fake-quant simulation)"
                 if self.evaluator == "simulation" else f"mixed-precision search ({self.evaluator})",
                 f"  expected output cosine {self.expected_cos:.4f}; layers {self.num_layers}",
                 f"  all int8:  cosine {self.int8_cosine:.6f}"]
        for name, cos in self.steps:
            lines.append(f"  + {name:<40s} {self.mode}: cosine {cos:.6f}")
        lines.append(f"  result: {len(self.float_layers)} layer(s) in {self.mode}, cosine {self.final_cosine:.6f} "
                     f"({'reached' if self.reached else 'NOT reached'})")
        return "\n".join(lines)


def search_qtable(top: Any, table: CalibrationTable | Mapping[str, float], samples: Sequence[Any],
                  expected_cos: float = 0.99, evaluator: Evaluator | None = None, max_float: int | None = None,
                  *, mode: str = "F32", ranking: Sequence[tuple[str, float]] | None = None,
                  progress: bool = True) -> tuple[QTable, SearchReport]:
    """The fewest float layers (greedy by sensitivity) that bring the output cosine to ``expected_cos``.

    Starting from all-int8 (cosine ``c0``): if ``c0 >= expected_cos`` the qtable is empty; otherwise
    layers are put in float one at a time in ranking order (most sensitive first), re-measuring the whole
    network after each, and the search stops at the first set reaching ``expected_cos`` or at
    ``max_float`` layers.

    Args:
        top: TopGraph or GraphModule (float).
        table: calibration table (or ``{name: threshold}``).
        samples: evaluation samples (a few).
        expected_cos: target network-output cosine vs float.
        evaluator: ``evaluator(float_layers) -> outputs per sample``; default: the int8 simulation
            (:class:`SimulationEvaluator`) with float layers in ``mode``.
        max_float: at most this many float layers (default: no limit).
        mode: ``"F32"`` or ``"BF16"``: the QTable mode written for the float layers.
        ranking: a precomputed :func:`sensitivity` ranking (else it is computed here).
        progress: tqdm bars.

    Returns:
        ``(qtable, report)``: the QTable names the float layers (stable names) with ``mode``.

    Example:
        >>> qtable, rep = search_qtable(top, table, samples[:4], expected_cos=0.99)   # doctest: +SKIP
        >>> rep.float_layers, rep.int8_cosine, rep.final_cosine                      # doctest: +SKIP
        (['conv2'], 0.93, 0.995)
    """
    mode = mode.upper()
    if mode not in FLOAT_MODES:
        raise MixedPrecisionError(f"search_qtable: mode {mode!r} is not one of {FLOAT_MODES}")
    if not 0.0 < expected_cos <= 1.0:
        raise MixedPrecisionError(f"search_qtable: expected_cos must be in (0, 1], got {expected_cos}")
    if max_float is not None and max_float < 0:
        raise MixedPrecisionError(f"search_qtable: max_float must be >= 0, got {max_float}")
    all_layers, ev, ref = _setup(top, table, samples, evaluator, mode)
    if ranking is None:
        ranking = _rank(all_layers, ev, ref, all_layers, _desc("sensitivity", evaluator), progress)
    bad = [n for n, _ in ranking if n not in all_layers]
    if bad:
        raise MixedPrecisionError(f"search_qtable: ranking names {bad}, which are not layers of the graph")
    c0 = network_cosine(ref, ev(frozenset()))
    chosen: list[str] = []
    steps: list[tuple[str, float]] = []
    current = c0
    limit = len(ranking) if max_float is None else min(max_float, len(ranking))
    bar = tqdm(total=limit, desc=_desc("qtable search", evaluator), disable=not progress or c0 >= expected_cos, leave=False)
    try:
        for name, _ in ranking:
            if current >= expected_cos or len(chosen) >= limit:
                break
            chosen.append(name)
            current = network_cosine(ref, ev(frozenset(chosen)))
            steps.append((name, current))
            bar.update(1)
            bar.set_postfix(cos=f"{current:.4f}")
    finally:
        bar.close()
    name = "simulation" if evaluator is None else getattr(evaluator, "__name__", type(evaluator).__name__)
    report = SearchReport(expected_cos, c0, current, chosen, steps, list(ranking), len(all_layers), mode, name)
    return QTable({n: mode for n in chosen}), report


def qtable_cosine(top: Any, table: CalibrationTable | Mapping[str, float], qtable: QTable | Mapping[str, str],
                  samples: Sequence[Any], evaluator: Evaluator | None = None) -> float:
    """Network-output cosine vs float with the qtable's non-INT8 layers in float (simulation by default).

    Every entry of ``qtable`` must name a layer of the graph; entries in ``INT8`` mode stay int8. The
    float arithmetic is BF16 if every float entry says BF16, else F32.
    """
    modes = dict(qtable.items())
    floats = {n for n, m in modes.items() if m != "INT8"}
    float_mode = "BF16" if floats and all(modes[n] == "BF16" for n in floats) else "F32"
    sim = SimulationEvaluator(top, table, samples, float_mode=float_mode)
    sim.check_names(modes, "qtable entry")
    ev = evaluator if evaluator is not None else sim
    return network_cosine(sim.reference, ev(frozenset(floats)))


def qtable_main(model: Any, calibration_table: str | os.PathLike, data: str | os.PathLike,
                output: str | os.PathLike, *, expected_cos: float = 0.99, max_float: int | None = None,
                mode: str = "F32", num_samples: int = 5, progress: bool = True) -> SearchReport:
    """What ``torch-tpu qtable`` runs: load a TOP graph and its calibration table, search, write the qtable.

    Args:
        model: a TopGraph, or a saved TOP graph file (``.pt2``; the CLI transforms other formats first
            with :func:`torch_tpu.transform`, as quant does not import the faces).
        calibration_table: the calibration table file.
        data: a folder of ``.npy``/``.npz`` samples (the first ``num_samples`` are used).
        output: where to write the qtable.

    Returns:
        The search report (also printed by the CLI).
    """
    from torch_tpu.quant.calibrate import load_samples
    from torch_tpu.graph.top import load_top

    if isinstance(model, (str, os.PathLike)):
        if Path(model).suffix != ".pt2":
            raise MixedPrecisionError(f"qtable: {model}: expected a saved TOP graph (.pt2); transform the model "
                                      f"first (torch-tpu transform)")
        top = load_top(model)
    else:
        top = model
    table = CalibrationTable.load(calibration_table)
    samples = []
    for s in load_samples(data, [stable_name(n) for n in graph_module(top).graph.nodes if n.op == "placeholder"]):
        samples.append(s)
        if len(samples) >= num_samples:
            break
    qtable, report = search_qtable(top, table, samples, expected_cos=expected_cos, max_float=max_float,
                                   mode=mode, progress=progress)
    qtable.save(output)
    return report

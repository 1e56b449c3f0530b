"""Calibration over a TOP graph: observe, choose thresholds, propagate, (search,) tune, write a table.

Steps of :func:`calibrate`:

1. **observe** — up to ``num_samples`` items of ``data`` run through the graph with
   :func:`torch_tpu.graph.meta.run_named`; a hook feeds every activation (float graph input or computed
   float value, see :func:`~torch_tpu.quant.propagate.is_activation`) to a streaming
   :class:`~torch_tpu.quant.observers.HistogramObserver` keyed by stable name. Nothing is recorded, so
   memory does not grow with the number of samples; only the first ``tune_num`` items are kept (for
   tune/search).
2. **thresholds** — the method (:mod:`torch_tpu.quant.thresholds`) per group source, on the values that
   matter (:func:`statistics_tensors`: the relu output's for a conv or add read only by a relu);
3. **propagation** — scale groups share the largest source threshold
   (:mod:`torch_tpu.quant.propagate`);
4. ``method="search"`` — per group, the best of kl/max/percentile/mse for the network output
   (:mod:`torch_tpu.quant.search`, on the tune samples, or on up to 5 samples when ``tune_num == 0``);
5. **tune** — ``tune_num > 0``: sweep toward the max per group (:mod:`torch_tpu.quant.tune`).

Example:
    >>> top = capture_module(model, (x,))                                     # doctest: +SKIP
    >>> table = calibrate(top, [torch.randn(1, 3, 32, 32) for _ in range(20)], tune_num=2)   # doctest: +SKIP
    >>> table.save("model_cali_table")                                       # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.fx as fx
from tqdm.auto import tqdm

from torch_tpu.graph.meta import run_named
from torch_tpu.graph.names import stable_name
from torch_tpu.quant.observers import DEFAULT_BINS, CalibrationError, HistogramObserver, ObserverSet
from torch_tpu.quant.propagate import ScaleGroup, is_activation, propagate_thresholds, scale_groups
from torch_tpu.quant.search import SEARCH_METHODS, search_thresholds
from torch_tpu.quant.simulate import fused_producers
from torch_tpu.quant.tables import CalibrationEntry, CalibrationTable
from torch_tpu.quant.thresholds import THRESHOLD_METHODS, compute_threshold
from torch_tpu.quant.tune import DEFAULT_TUNE_STEPS, tune_thresholds

SEARCH_SAMPLES_WITHOUT_TUNE = 5


def graph_module(top: Any) -> fx.GraphModule:
    """The GraphModule of a :class:`~torch_tpu.graph.top.TopGraph` (or a GraphModule itself)."""
    gm = getattr(top, "gm", top)
    if not isinstance(gm, fx.GraphModule):
        raise CalibrationError(f"calibrate: expects a TopGraph or torch.fx.GraphModule, got {type(top).__name__}")
    return gm


def as_inputs(item: Any, index: int) -> tuple[torch.Tensor, ...]:
    """One data item (tensor, ndarray, or tuple/list of them) as a tuple of tensors."""
    items = item if isinstance(item, (tuple, list)) else (item,)
    out = []
    for x in items:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise CalibrationError(f"calibration sample {index}: expected tensors or arrays, got {type(x).__name__}")
        out.append(x)
    return tuple(out)


def load_samples(folder: str | os.PathLike, input_names: Sequence[str] | None = None
                 ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Samples from a folder of ``.npy`` / ``.npz`` files, in sorted file-name order (lazily, one at a time).

    A ``.npy`` file is one single-input sample. An ``.npz`` file is one sample whose arrays are taken by
    graph input name when ``input_names`` are given and all present, else in the file's order.
    Nothing is unpickled (``allow_pickle=False``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"{root}: not a folder of .npy/.npz samples")
    files = sorted(p for p in root.iterdir() if p.suffix in (".npy", ".npz"))
    if not files:
        raise CalibrationError(f"{root}: no .npy or .npz files")
    for path in files:
        try:
            if path.suffix == ".npy":
                yield (torch.from_numpy(np.load(path, allow_pickle=False)),)
                continue
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                if input_names and all(n in keys for n in input_names):
                    keys = list(input_names)
                yield tuple(torch.from_numpy(z[k]) for k in keys)
        except (OSError, ValueError) as e:
            raise CalibrationError(f"{path}: cannot read sample ({e})") from None


def observe(top: Any, data: Iterable[Any], num_samples: int = 100, *, keep: int = 0, progress: bool = True,
            bins: int = DEFAULT_BINS, observers: ObserverSet | None = None
            ) -> tuple[ObserverSet, list[tuple[torch.Tensor, ...]], int]:
    """Stream ``data`` through the graph and collect statistics for every activation.

    Args:
        top: TopGraph or GraphModule.
        data: iterable of samples (tensor / array / tuple of them); only the first ``num_samples`` are used.
        keep: how many of the first samples to keep and return (for tune/search).
        observers: an existing set to add to (e.g. to continue, or to merge runs later).

    Only the tensors that decide a threshold (:func:`statistics_tensors`) get a histogram: every other
    activation takes its group's threshold and needs only its own min/max
    (:class:`~torch_tpu.quant.observers.HistogramObserver` with ``histogram=False``).

    Returns:
        ``(observers, kept samples, number of samples seen)``.
    """
    gm = graph_module(top)
    obs = observers if observers is not None else ObserverSet(bins)
    names = {n: stable_name(n) for n in gm.graph.nodes if is_activation(n)}
    sources = set(statistics_tensors(gm, scale_groups(gm)).values())

    def hook(node: fx.Node, value: Any) -> None:
        name = names.get(node)
        if name is not None and isinstance(value, torch.Tensor):
            obs.update(name, value, histogram=name in sources)

    kept, count = run_samples(gm, data, num_samples, hook, keep=keep, progress=progress)
    return obs, kept, count


def run_samples(gm: fx.GraphModule, data: Iterable[Any], num_samples: int, hook: Any, *, keep: int = 0,
                progress: bool = True, desc: str = "calibrate", who: str = "calibrate",
                sample: str = "calibration sample") -> tuple[list[tuple[torch.Tensor, ...]], int]:
    """Run up to ``num_samples`` items of ``data`` through ``gm`` with a :func:`run_named` ``hook`` (nothing is
    recorded); returns ``(the first keep samples, number run)``. Errors name the sample (``sample``) and the
    step (``who``); ``desc`` labels the progress bar."""
    kept: list[tuple[torch.Tensor, ...]] = []
    count = 0
    n_inputs = sum(1 for n in gm.graph.nodes if n.op == "placeholder")
    bar = tqdm(total=num_samples, desc=desc, disable=not progress)
    try:
        for i, item in enumerate(itertools.islice(data, num_samples)):
            inputs = as_inputs(item, i)
            if len(inputs) != n_inputs:
                raise CalibrationError(f"{sample} {i}: {len(inputs)} tensor(s) for a graph with "
                                       f"{n_inputs} input(s)")
            run_named(gm, *inputs, keep=lambda n: False, hook=hook)
            if len(kept) < keep:
                kept.append(tuple(t.clone() for t in inputs))
            count += 1
            bar.update(1)
    finally:
        bar.close()
    if count == 0:
        raise CalibrationError(f"{who}: the data gave no samples")
    return kept, count


def statistics_tensors(gm: fx.GraphModule, groups: Sequence[ScaleGroup]) -> dict[str, str]:
    """Per group source: the tensor whose histogram decides its threshold.

    A source's own, except when its only user is a relu of the same group (a conv or add feeding a relu):
    then the relu output's. The values the relu removes do not matter to the network, and an ``|x|``
    histogram of the source would count the negative ones with the positive ones. Two cases:

    * the INT8 lowering fuses the source (a conv / linear, :func:`~torch_tpu.quant.simulate.fused_producers`):
      its output never exists in int8; the relu output is what gets quantized, on its unsigned grid —
      as TPU-MLIR calibrates its fused conv+relu op;
    * otherwise (an add): the source is quantized on its own grid (signed), of which the relu keeps the
      positive half; :func:`method_thresholds` reads the relu's histogram with the source's own range, so
      the method models the source's grid (:func:`torch_tpu.quant.qscheme.positive_levels`).
    """
    by_name = {stable_name(n): n for n in gm.graph.nodes}
    out = {}
    for g in groups:
        members = set(g.members)
        for s in g.sources:
            node = by_name[s]
            user = next(iter(node.users)) if len(node.users) == 1 else None
            relu = (user is not None and user.op == "call_function" and user.target is torch.ops.aten.relu.default
                    and stable_name(user) in members)
            out[s] = stable_name(user) if relu else s
    return out


def method_thresholds(gm: fx.GraphModule, observers: ObserverSet, groups: Sequence[ScaleGroup], method: str,
                      **options: Any) -> dict[str, float]:
    """Per activation: the method's threshold for its group's sources (from the statistics of
    :func:`statistics_tensors`), then propagated to all members."""
    stats = statistics_tensors(gm, groups)
    fused = {stable_name(n) for n in fused_producers(gm)}
    raw = {}
    for g in groups:
        for s in g.sources:
            obs = observers[stats[s]]
            if stats[s] != s and s not in fused:      # the relu's histogram on the source's own grid
                relu_max = obs.max
                obs = HistogramObserver.from_state_dict(obs.state_dict())
                # the source's grid (signed or one-sided: its min); abs_max stays the relu's max
                obs.min = max(observers[s].min, -relu_max)
            raw[s] = compute_threshold(obs, method, **options)
    return propagate_thresholds(groups, raw)


def calibrate(top: Any, data: Iterable[Any], method: str = "kl", num_samples: int = 100, tune_num: int = 5,
              progress: bool = True, *, bins: int = DEFAULT_BINS, tune_steps: int = DEFAULT_TUNE_STEPS,
              percentile: float | None = None, observers: ObserverSet | None = None) -> CalibrationTable:
    """Calibrate a TOP graph: thresholds for every activation, in a :class:`CalibrationTable`.

    Args:
        top: a :class:`~torch_tpu.graph.top.TopGraph` (or its GraphModule).
        data: iterable of samples: tensors, numpy arrays, or tuples of them (one per graph input); or a
            folder of ``.npy``/``.npz`` files (:func:`load_samples`).
        method: ``kl``, ``max``, ``percentile``, ``mse`` or ``search``.
        num_samples: how many samples to observe (fewer if ``data`` ends first).
        tune_num: samples for the tune step (0: no tuning).
        progress: show tqdm progress bars.
        bins: histogram bins per tensor.
        tune_steps: candidates per group in the tune sweep (beyond the starting threshold).
        percentile: for ``method="percentile"`` (default 99.99).
        observers: pre-collected statistics (e.g. merged from several processes); ``data`` is then only
            used for the tune/search samples and its statistics are added.

    Returns:
        The table (entries in graph order, header: method, bins, sample and tune numbers).

    Raises:
        CalibrationError: unknown method, empty data, non-finite activations.
    """
    if method != "search" and method not in THRESHOLD_METHODS:
        raise CalibrationError(f"calibrate: unknown method '{method}' (choose one of "
                               f"{', '.join(sorted(THRESHOLD_METHODS))}, search)")
    if num_samples <= 0 or tune_num < 0:
        raise CalibrationError(f"calibrate: num_samples must be > 0 and tune_num >= 0 "
                               f"(got {num_samples}, {tune_num})")
    gm = graph_module(top)
    if isinstance(data, (str, os.PathLike)):
        data = load_samples(data, [stable_name(n) for n in gm.graph.nodes if n.op == "placeholder"])
    keep = tune_num if (tune_num > 0 or method != "search") else SEARCH_SAMPLES_WITHOUT_TUNE
    obs, samples, count = observe(gm, data, num_samples, keep=keep, progress=progress, bins=bins,
                                  observers=observers)
    groups = scale_groups(gm)
    opts = {"percentile": percentile} if percentile is not None else {}
    if method == "search":
        per_method = {m: method_thresholds(gm, obs, groups, m, **(opts if m == "percentile" else {}))
                      for m in SEARCH_METHODS}
        ranges = {name: (obs[name].min, obs[name].max) for name in obs}
        thresholds, _ = search_thresholds(gm, samples, groups, per_method, ranges=ranges, progress=progress)
    else:
        thresholds = method_thresholds(gm, obs, groups, method, **(opts if method == "percentile" else {}))
    if tune_num > 0:
        abs_max = {name: obs[name].abs_max for name in thresholds}
        ranges = {name: (obs[name].min, obs[name].max) for name in thresholds}
        thresholds, _ = tune_thresholds(gm, samples[:tune_num], groups, thresholds, abs_max, ranges=ranges,
                                        steps=tune_steps, progress=progress)
    entries = {}
    for n in gm.graph.nodes:
        if is_activation(n):
            name = stable_name(n)
            o = obs[name]
            entries[name] = CalibrationEntry(float(thresholds[name]), float(o.min), float(o.max))
    return CalibrationTable(entries, method=method, histogram_bins=bins, sample_number=count,
                            tune_number=min(tune_num, len(samples)))

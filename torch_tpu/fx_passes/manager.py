"""A small pass manager in the torch.fx / Inductor style.

Each pass is a named function ``GraphModule -> PassResult`` that edits the graph in place. The manager
runs them in order and after each one: lints the graph, runs :func:`check_top` when ``check=True``,
and writes the graph as text to ``dump_dir/NN_<pass>.txt`` (``00_input.txt`` for the graph it got).
When a pass raises, returns something else than a :class:`PassResult` for the same module, or leaves
a broken graph, the manager raises :class:`VerificationError` naming that pass and the passes that ran
before it.

Example:
    >>> pm = PassManager([("fold_batchnorm", fold_batchnorm)], check=True, dump_dir="dump")  # doctest: +SKIP
    >>> pm(gm).modified                                                                       # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch.fx as fx

from torch_tpu.errors import ConfigError, VerificationError
from torch_tpu.fx_passes.checker import check_top
from torch_tpu.graph.printer import format_graph


@dataclasses.dataclass(frozen=True)
class PassResult:
    """What a pass returns (the torch.fx convention).

    Attributes:
        graph_module: the graph module, edited in place (the same object the pass received).
        modified: whether the pass changed anything.
    """

    graph_module: fx.GraphModule
    modified: bool


PassFn = Callable[[fx.GraphModule], PassResult]


@dataclasses.dataclass(frozen=True)
class Pass:
    """A named pass."""

    name: str
    fn: PassFn


@dataclasses.dataclass
class PassRecord:
    """What one pass did in one run: its name, whether it changed the graph, and its time in seconds."""

    name: str
    modified: bool
    seconds: float


def _as_passes(passes: Iterable[Pass | tuple[str, PassFn]]) -> list[Pass]:
    out: list[Pass] = []
    seen: set[str] = set()
    for p in passes:
        p = p if isinstance(p, Pass) else Pass(*p)
        if p.name in seen:
            raise ConfigError(f"fx_passes: pass '{p.name}' is listed twice")
        seen.add(p.name)
        out.append(p)
    return out


class PassManager:
    """Runs named passes in order, checking and dumping after each (see the module docstring).

    Args:
        passes: ``Pass`` objects or ``(name, function)`` pairs; names must be unique.
        check: run :func:`check_top` before the first pass and after every pass.
        dump_dir: when given, write the graph text after every pass there.
    """

    def __init__(self, passes: Iterable[Pass | tuple[str, PassFn]], *, check: bool = False,
                 dump_dir: str | os.PathLike | None = None):
        self.passes = _as_passes(passes)
        self.check = check
        self.dump_dir = Path(dump_dir) if dump_dir is not None else None
        self.records: list[PassRecord] = []

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.passes]

    def _dump(self, gm: fx.GraphModule, index: int, name: str) -> None:
        assert self.dump_dir is not None
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        (self.dump_dir / f"{index:02d}_{name}.txt").write_text(format_graph(gm, f"TOP after {name}"))

    def _verify(self, gm: fx.GraphModule, name: str, before: Sequence[str]) -> None:
        ran = ", ".join(before) if before else "none"
        try:
            gm.graph.lint()
        except Exception as e:  # fx lint raises RuntimeError and others
            raise VerificationError(f"fx pass '{name}' left an invalid graph (passes run before it: {ran}): "
                                    f"{e}") from e
        if self.check:
            try:
                check_top(gm)
            except VerificationError as e:
                raise VerificationError(f"fx pass '{name}' broke a TOP invariant (passes run before it: "
                                        f"{ran}): {e}") from e

    def __call__(self, gm: fx.GraphModule) -> PassResult:
        """Run every pass on ``gm`` (in place); ``modified`` is True if any pass changed it."""
        self.records = []
        if self.check:
            try:
                check_top(gm)
            except VerificationError as e:
                raise VerificationError(f"the graph given to the fx pass pipeline is not a valid TOP graph: {e}") \
                    from e
        if self.dump_dir is not None:
            self._dump(gm, 0, "input")
        modified = False
        done: list[str] = []
        for i, p in enumerate(self.passes, start=1):
            t0 = time.perf_counter()
            try:
                res = p.fn(gm)
            except Exception as e:  # any failure inside a pass is reported with its name
                ran = ", ".join(done) if done else "none"
                raise VerificationError(f"fx pass '{p.name}' failed (passes run before it: {ran}): "
                                        f"{type(e).__name__}: {e}") from e
            if not isinstance(res, PassResult) or res.graph_module is not gm:
                ran = ", ".join(done) if done else "none"
                raise VerificationError(f"fx pass '{p.name}' did not return PassResult for the graph it was given "
                                        f"(passes edit in place; passes run before it: {ran})")
            self._verify(gm, p.name, done)
            self.records.append(PassRecord(p.name, res.modified, time.perf_counter() - t0))
            modified |= res.modified
            done.append(p.name)
            if self.dump_dir is not None:
                self._dump(gm, i, p.name)
        return PassResult(gm, modified)

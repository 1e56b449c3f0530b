"""Layer-local check of a Program against the TPU graph: every op of the graph is re-run (its reference
implementation) on the Program's own probed inputs and compared with the Program's probed output.

End to end, float errors compound through a deep model (each conv or matmul may sum in another order), so
an output-only check cannot hold every op to the f32 bound; checked one op at a time, each op's Program
result must be within ``F32_REL`` of the reference (bf16: one rounding step), data movement exactly equal.
A K-term f32 sum (conv2d, linear, matmul, sums, means and average pools) computed in two orders differs by at
most ``2 K u sum|terms|`` (u = 2^-24, the classic bound of recursive summation), which for long sums exceeds
``F32_REL`` of the largest output; those ops are held to that bound per element (``sum|terms|`` = the op on
absolute values, which for a mean or an average carries its division too) plus the final rounding
(``F32_REL`` of the largest output in f32, one storage step in bf16/f16).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from _codegen_helpers import assert_close, one_step
from torch_tpu.cmodel import run_program
from torch_tpu.lowering.codegen.ddr_plan import stable_name

#: ops whose float result is a sum (of products) over K terms: op name -> K from the node and its arguments
MAC = {"conv2d": lambda n, a: a[1].shape[1] * a[1].shape[2] * a[1].shape[3], "linear": lambda n, a: a[1].shape[1],
       "matmul": lambda n, a: a[0].shape[-1],
       "reduce_sum": lambda n, a: a[0].numel() // max(n.meta["val"].numel(), 1),
       "reduce_mean": lambda n, a: a[0].numel() // max(n.meta["val"].numel(), 1),
       "avg_pool2d": lambda n, a: a[1][0] * a[1][1],
       "adaptive_avg_pool2d": lambda n, a: ((a[0].shape[2] // a[1][0] + 2) * (a[0].shape[3] // a[1][1] + 2))}

#: ops that only move or select values: the Program must reproduce them bit for bit
EXACT = {"reshape", "permute", "expand", "concat", "slice", "pad", "copy", "full", "upsample_nearest2d",
         "embedding", "where", "eq", "ne", "lt", "le", "gt", "ge", "eq_const", "ne_const", "lt_const", "le_const",
         "gt_const", "ge_const", "logical_not", "logical_and", "logical_or", "reduce_any", "max_pool2d", "relu",
         "neg", "abs", "maximum", "minimum", "cast"}


def program_feed(prog, inputs) -> dict[str, torch.Tensor]:
    """Program inputs from graph inputs (int64 indices become the Program's int32)."""
    return {io.name: x.to(io.dtype.torch) for io, x in zip(prog.inputs, inputs)}


def _as_graph_dtype(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(like.dtype) if t.dtype != like.dtype else t


def check_layers(tpu: fx.GraphModule, prog, inputs, precision: str, kernels: str = "c") -> dict[str, float]:
    """Run ``prog`` with probes; assert every op matches its reference on the probed inputs.

    Returns ``{stable name: max |diff| / max |ref|}`` of the float ops (0 for exact ones).
    """
    res = run_program(prog, program_feed(prog, inputs), kernels=kernels, debug=True)
    named = dict(res.tensors)
    for n, x in zip([n for n in tpu.graph.nodes if n.op == "placeholder"], inputs):
        named[stable_name(n)] = x
    errors: dict[str, float] = {}
    for n in tpu.graph.nodes:
        if n.op != "call_function":
            continue
        name = stable_name(n)
        assert name in named, f"no probe for {name}"

        def value(a):
            if a.op == "get_attr":
                obj = tpu
                for part in a.target.split("."):
                    obj = getattr(obj, part)
                return obj
            return _as_graph_dtype(named[stable_name(a)], a.meta["val"])

        args = fx.node.map_arg(n.args, value)
        kwargs = fx.node.map_arg(n.kwargs, value)
        with torch.no_grad():
            ref = n.target(*args, **kwargs)
        out = _as_graph_dtype(named[name], ref)
        op = n.target._schema.name.split("::")[-1]
        if op in EXACT or not ref.dtype.is_floating_point:
            assert torch.equal(out, ref), f"{name} ({op}) differs from its reference"
            errors[name] = 0.0
            continue
        if op in MAC:
            k = MAC[op](n, args)
            with torch.no_grad():
                terms = n.target(*[a.abs() if isinstance(a, torch.Tensor) else a for a in args], **kwargs)
            last = (1e-6 * ref.double().abs().max() if precision == "f32"
                    else one_step(ref, ref.dtype).double())  # and the one rounding to the storage dtype
            bound = 2 * k * 2.0 ** -24 * terms.double() + last
            diff = (out.double() - ref.double()).abs()
            assert bool((diff <= bound).all()), f"{name} ({op}): exceeds the K={k} summation bound"
            scale = ref.double().abs().max().clamp_min(1e-30)
            errors[name] = float(diff.max() / scale)
            continue
        nan = torch.isnan(ref)
        assert torch.equal(nan, torch.isnan(out)), f"{name} ({op}): NaN positions differ"
        out, ref = out.masked_fill(nan, 0), ref.masked_fill(nan, 0)
        try:
            assert_close(out, ref, precision)
        except AssertionError as e:
            raise AssertionError(f"{name} ({op}): {e}") from None
        scale = ref.double().abs().max().clamp_min(1e-30)
        errors[name] = float((out.double() - ref.double()).abs().max() / scale)
    return errors

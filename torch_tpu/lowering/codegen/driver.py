"""``codegen(tpu_gm, target) -> Program``: walk a fully lowered TPU graph in order and emit each op.

Values go to the activation region (``[0, A)``, ``ddr_plan.plan_ddr``), constants to the weight region after
it (``[A, A + W)``, packed as the handlers ask for them, so one pass over the ops builds everything);
each op's handler (``HANDLERS``, one per ``tpu`` op name) emits DMA-in -> compute -> DMA-out slices with
``layer=<stable name>``. An op without a handler raises ``UnsupportedOpError`` naming op and stable name.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable

import torch
import torch.fx as fx

from torch_tpu.cmodel.operands import align_up
from torch_tpu.cmodel.program import DdrRegion, IOTensor, Probe, Program
from torch_tpu.errors import ProgramError, UnsupportedOpError
from torch_tpu.lowering.codegen import ops_conv, ops_elementwise as ew, ops_gather, ops_matmul, ops_norm, ops_pool
from torch_tpu.lowering.codegen import ops_resize, ops_select, ops_shape
from torch_tpu.lowering.codegen import ops_int8
from torch_tpu.lowering.codegen.context import OpCtx, WeightPacker
from torch_tpu.lowering.codegen.ddr_plan import DDR_ALIGN, DdrPlan, cm_dtype, op_name, plan_ddr, stable_name
from torch_tpu.lowering.codegen.emitter import Emitter
from torch_tpu.targets import get_target

Handler = Callable[[OpCtx], None]


def _build_handlers() -> dict[str, Handler]:
    table: dict[str, Handler] = {}

    def reg(name: str, fn: Handler) -> None:
        if name in table:
            raise ProgramError(f"codegen/driver.py: handler for tpu.{name} registered twice")
        table[name] = fn

    for op in ew.UNARY:
        reg(op, functools.partial(ew.gen_unary, op=op))
    reg("gelu", functools.partial(ew.gen_unary, op="gelu"))
    reg("pow", functools.partial(ew.gen_unary, op="pow"))
    for op in ew.BINARY:
        reg(op, functools.partial(ew.gen_binary, op=op))
        reg(f"{op}_const", functools.partial(ew.gen_binary_const, op=op))
    reg("cast", ew.gen_cast)
    reg("scale_shift", ew.gen_scale_shift)
    reg("conv2d", ops_conv.gen_conv2d)
    reg("linear", ops_matmul.gen_linear)
    reg("matmul", ops_matmul.gen_matmul)
    reg("softmax", functools.partial(ops_norm.gen_softmax, log=False))
    reg("log_softmax", functools.partial(ops_norm.gen_softmax, log=True))
    reg("layer_norm", ops_norm.gen_layer_norm)
    reg("max_pool2d", functools.partial(ops_pool.gen_pool2d, mode="max"))
    reg("avg_pool2d", functools.partial(ops_pool.gen_pool2d, mode="avg"))
    reg("adaptive_avg_pool2d", ops_pool.gen_adaptive_avg_pool2d)
    for op in ("sum", "mean", "max", "min", "any"):
        reg(f"reduce_{op}", functools.partial(ops_pool.gen_reduce, op=op))
    reg("reshape", ops_shape.gen_reshape)
    for op in ("permute", "expand", "concat", "slice", "pad", "copy", "full"):
        reg(op, getattr(ops_shape, f"gen_{op}"))
    for op in ops_select.COMPARISONS:
        reg(op, functools.partial(ops_select.gen_compare, op=op))
        reg(f"{op}_const", functools.partial(ops_select.gen_compare_const, op=op))
    reg("logical_not", ops_select.gen_logical_not)
    reg("logical_and", functools.partial(ops_select.gen_logical, op="and"))
    reg("logical_or", functools.partial(ops_select.gen_logical, op="or"))
    reg("where", ops_select.gen_where)
    reg("embedding", ops_gather.gen_embedding)
    reg("gather", ops_gather.gen_gather)
    reg("upsample_nearest2d", ops_resize.gen_upsample_nearest2d)
    reg("upsample_bilinear2d", ops_resize.gen_upsample_bilinear2d)
    ops_int8.register(reg)
    return table


#: tpu op name -> codegen handler
HANDLERS: dict[str, Handler] = _build_handlers()
#: tpu op name -> DDR scratch bytes its handler needs (``OpCtx.scratch()``), sized before the DDR plan
SCRATCH: dict[str, Callable[[fx.Node], int]] = {
    "upsample_nearest2d": ops_resize.nearest_scratch_bytes,
    **{f"reduce_{op}": ops_pool.reduce_scratch_bytes for op in ("sum", "mean", "max", "min", "any")},
    "reduce_sum_int8": ops_pool.reduce_scratch_bytes,
}


def codegen(tpu_gm: fx.GraphModule, target: str = "bm1684x", *, name: str = "model",
            return_plan: bool = False) -> Program | tuple[Program, DdrPlan]:
    """Compile a fully lowered TPU graph into a cmodel Program.

    Args:
        tpu_gm: GraphModule of ``torch.ops.tpu.*`` ops with ``meta["val"]`` on every value.
        target: chip preset name.
        name: program name (used in error messages).
        return_plan: also return the DDR plan (footprint report).

    Returns:
        the validated Program (inputs/outputs named by the graph's placeholders / ``output<i>``).
    """
    tgt = get_target(target)
    em = Emitter(tgt)
    nodes = [n for n in tpu_gm.graph.nodes if n.op == "call_function"]
    for n in nodes:
        if op_name(n) not in HANDLERS:
            op = str(n.target)
            raise UnsupportedOpError(op, name=stable_name(n), where=f"codegen[{tgt.name}] {name}",
                                     reason="no codegen handler (torch_tpu/lowering/codegen/driver.py)")
    # activations first (their plan depends on the graph only), the weights after them: one pass
    plan = plan_ddr(tpu_gm, 0, scratch=_scratch_bytes(tpu_gm, nodes))
    weights = WeightPacker(base=plan.size)
    probes: list[Probe] = []
    with _one_intra_op_thread():
        for n in nodes:
            em.arena.reset()
            HANDLERS[op_name(n)](OpCtx(n, tpu_gm, tgt, em, plan, weights))
            v = n.meta.get("val")
            if n in plan.addr and isinstance(v, torch.Tensor):
                # the value is complete in DDR once the op's last instruction ran (a view: its producer's;
                # a concat whose inputs were written in place: the last of them, all emitted before it)
                probes.append(Probe(stable_name(n), tuple(v.shape), cm_dtype(v.dtype), plan.addr[n],
                                    em.instructions[-1].id if em.instructions else -1))
    w_size = align_up(max(weights.nbytes, DDR_ALIGN), DDR_ALIGN)
    inputs = [_io(n.meta.get("stable_name", n.name), n, plan) for n in tpu_gm.graph.nodes if n.op == "placeholder"]
    out_node = list(tpu_gm.graph.nodes)[-1]
    outs: list[fx.Node] = []
    fx.node.map_arg(out_node.args, outs.append)
    outputs = [_io(f"output{i}", n, plan) for i, n in enumerate(outs)]
    prog = Program(target=tgt.name,
                   regions=[DdrRegion("activation", 0, plan.size), DdrRegion("weight", plan.size, w_size)],
                   inputs=inputs, outputs=outputs, instructions=em.instructions, weights=weights.data(),
                   probes=probes)
    prog.validate()
    return (prog, plan) if return_plan else prog


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"depth": 0, "saved": 1}  # codegen calls running, torch's thread count before the first


@contextlib.contextmanager
def _one_intra_op_thread():
    """Run the handlers' torch calls (weight reorders, derived int8 constants: small reductions) on one
    intra-op thread: on a loaded machine, OpenMP workers waiting for a core made resnet50's int8 codegen
    ten times slower (2.5 s instead of 0.25 s), and one thread loses nothing on tensors this small. The
    setting is process-wide: concurrent codegen calls share it and the last one out restores it."""
    with _THREADS_LOCK:
        if _THREADS_STATE["depth"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS_STATE["depth"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["depth"] -= 1
            if _THREADS_STATE["depth"] == 0:
                torch.set_num_threads(_THREADS_STATE["saved"])


def _scratch_bytes(gm: fx.GraphModule, nodes: list[fx.Node]) -> dict[fx.Node, int]:
    """DDR scratch bytes per op (``SCRATCH``: ops that stage a value in DDR), live only during the op."""
    need = {n: SCRATCH[op_name(n)](n) for n in nodes if op_name(n) in SCRATCH}
    return {n: b for n, b in need.items() if b > 0}


def _io(io_name: str, n: fx.Node, plan: DdrPlan) -> IOTensor:
    """The Program header's entry of a graph input / output: a buffer of its own (never an alias: the
    runtime writes inputs and reads outputs at these addresses, outside any liveness)."""
    v = n.meta["val"]
    if n not in plan.addr:
        raise ProgramError(f"codegen: IO value {io_name} ({n.op}) has no DDR address")
    if n in plan.aliases:
        raise ProgramError(f"codegen: IO value {io_name} ({stable_name(n)}) shares the bytes of "
                           f"{stable_name(plan.aliases[n])}; graph inputs and outputs need buffers of their own")
    return IOTensor(io_name, tuple(v.shape), cm_dtype(v.dtype), plan.addr[n])

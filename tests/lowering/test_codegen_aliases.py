"""In-place DDR aliases (``ddr_plan``): slices as views of their input, concat inputs written straight into
the concat's bytes. Every Program is checked against the TPU graph end to end and op by op on its probes
(data movement bit for bit), and against the plan without these aliases (``reshape`` views only, as before):
fewer activation bytes, fewer DMA copies."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from _codegen_helpers import assert_close, compile_module
from _codegen_local import check_layers
from torch_tpu.cmodel import isa, run_program
from torch_tpu.lowering.codegen import ddr_plan
from torch_tpu.lowering.codegen.ddr_plan import op_name, stable_name


def _run(model, inputs, precision="f32"):
    """(tpu graph, Program, plan), after checking the Program's outputs and every probed op."""
    tpu, prog, plan = compile_module(model, inputs, precision)
    with torch.no_grad():
        ref = tpu(*inputs)
    ref = tuple(ref) if isinstance(ref, (tuple, list)) else (ref,)
    out = run_program(prog, {io.name: x for io, x in zip(prog.inputs, inputs)}, kernels="c")
    for i, r in enumerate(ref):
        assert_close(out[f"output{i}"], r, precision)
    check_layers(tpu, prog, inputs, precision)
    return tpu, prog, plan


def _without_new_aliases(monkeypatch, model, inputs, precision="f32"):
    """The Program and plan with only ``reshape`` views (the plan before slice / concat aliases)."""
    with monkeypatch.context() as m:
        m.setattr(ddr_plan, "ALIAS_OPS", ("reshape",))
        m.setattr(ddr_plan, "IN_PLACE_OPS", ())
        _, prog, plan = compile_module(model, inputs, precision)
    return prog, plan


def _nodes(tpu, op):
    return [n for n in tpu.graph.nodes if n.op == "call_function" and op_name(n) == op]


def _copies(prog, layer=None):
    return [i for i in prog.instructions if isinstance(i, isa.DmaCopy) and layer in (None, i.layer)]


class Inception(nn.Module):
    """Three conv branches and a pool branch concatenated on C, then a 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(4, 3, 1)
        self.b3 = nn.Conv2d(4, 5, 3, padding=1)
        self.b5 = nn.Conv2d(4, 2, 5, padding=2)
        self.pool = nn.Conv2d(4, 2, 1)
        self.head = nn.Conv2d(12, 6, 1)

    def forward(self, x):
        x = torch.relu(x)
        p = self.pool(nn.functional.max_pool2d(x, 3, 1, 1))
        c = torch.cat([torch.relu(self.b1(x)), torch.relu(self.b3(x)), self.b5(x), p], dim=1)
        return self.head(c)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_inception_concat_in_place(monkeypatch, precision):
    torch.manual_seed(0)
    inputs = [torch.randn(1, 4, 9, 11)]
    tpu, prog, plan = _run(Inception(), inputs, precision)
    (cat,) = _nodes(tpu, "concat")
    placed = [a for a in cat.args[0] if plan.in_place(a, cat)]
    assert placed == list(cat.args[0])  # every branch's last op writes its block of the concat
    assert not _copies(prog, stable_name(cat))
    offs = [plan.addr[a] - plan.addr[cat] for a in cat.args[0]]
    esize = 4 if precision == "f32" else 2
    assert offs == [0, 3 * 99 * esize, 8 * 99 * esize, 10 * 99 * esize]
    old_prog, old_plan = _without_new_aliases(monkeypatch, Inception(), inputs, precision)
    assert plan.size < old_plan.size and plan.naive == old_plan.naive
    assert len(_copies(prog)) < len(_copies(old_prog))
    assert len(prog.instructions) == len(old_prog.instructions) - 4
    assert "4 aliases: concat input 4" in plan.report()


class DenseBlock(nn.Module):
    """DenseNet-style: each layer's concat holds the previous concat, the last a graph output."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 2, 3, padding=1)
        self.c2 = nn.Conv2d(5, 2, 3, padding=1)
        self.c3 = nn.Conv2d(7, 2, 1)

    def forward(self, x):
        a = torch.cat([x, torch.relu(self.c1(x))], 1)   # x is a graph input: copied
        b = torch.cat([a, torch.relu(self.c2(a))], 1)   # a written in place into b
        return torch.cat([b, self.c3(b)], 1)            # a graph output: its inputs still written into it


def test_dense_block_nested_concats(monkeypatch):
    torch.manual_seed(1)
    inputs = [torch.randn(1, 3, 8, 8)]
    tpu, prog, plan = _run(DenseBlock(), inputs)
    a, b, c = _nodes(tpu, "concat")
    (x,) = [n for n in tpu.graph.nodes if n.op == "placeholder"]
    assert x not in plan.aliases and plan.in_place(a, b) and plan.in_place(b, c)
    assert all(plan.in_place(v, cat) for cat in (a, b, c) for v in cat.args[0] if v is not x)
    # the input's copy is the only one left, into the output's buffer (a and b live inside it)
    assert [i.layer for i in _copies(prog)] == [stable_name(a)]
    assert plan.addr[a] == plan.addr[b] == plan.addr[c] == prog.outputs[0].addr
    old_prog, old_plan = _without_new_aliases(monkeypatch, DenseBlock(), inputs)
    assert plan.size < old_plan.size and len(_copies(prog)) == len(_copies(old_prog)) - 5


class InputAndConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([x, y], 1) * 2.0, y + 1.0   # y is consumed twice, once by the concat


def test_concat_of_input_and_conv():
    torch.manual_seed(2)
    inputs = [torch.randn(1, 3, 6, 5)]
    tpu, prog, plan = _run(InputAndConv(), inputs)
    (cat,) = _nodes(tpu, "concat")
    x, y = cat.args[0]
    assert x.op == "placeholder" and x not in plan.aliases and prog.inputs[0].addr == plan.addr[x]
    assert plan.in_place(y, cat) and plan.addr[y] == plan.addr[cat] + 3 * 30 * 4
    assert [i.layer for i in _copies(prog)] == [stable_name(cat)]   # the input's block only


class TwoConsumers(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 1)
        self.c2 = nn.Conv2d(2, 3, 3, padding=1)
        self.c3 = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        c = torch.cat([torch.relu(self.c1(x)), torch.sigmoid(self.c2(x))], 1)
        d = self.c3(c) + 1.0                 # first consumer, then a value reusing freed bytes
        e = torch.relu(d).sum(1, keepdim=True)
        return c.mean(1, keepdim=True) * e   # second consumer: c must have lived until here


def test_concat_feeding_two_consumers():
    torch.manual_seed(3)
    tpu, prog, plan = _run(TwoConsumers(), [torch.randn(1, 2, 7, 6)])
    (cat,) = _nodes(tpu, "concat")
    assert all(plan.in_place(a, cat) for a in cat.args[0]) and not _copies(prog)


class SliceIntoConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.side = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        s = y[:, 2:5]                                           # C slice, N = 1: a view at 2 channels in
        return torch.cat([s, self.side(x), y[:, 0:6:3]], 1)     # step 3: a strided copy


def test_slice_view_feeding_concat(monkeypatch):
    torch.manual_seed(4)
    inputs = [torch.randn(1, 3, 4, 4)]
    tpu, prog, plan = _run(SliceIntoConcat(), inputs)
    s, h = _nodes(tpu, "slice")
    (cat,) = _nodes(tpu, "concat")
    y = s.args[0]
    assert plan.is_view(s) and plan.addr[s] == plan.addr[y] + 2 * 16 * 4 and not _copies(prog, stable_name(s))
    assert not plan.is_view(h) and _copies(prog, stable_name(h))
    # the view is copied by the concat (it is an alias of y), the conv and the H slice write in place
    assert not plan.in_place(s, cat) and plan.in_place(cat.args[0][1], cat) and plan.in_place(h, cat)
    assert len(_copies(prog, stable_name(cat))) == 1
    assert "slice 1" in plan.report() and "concat input 2" in plan.report()
    old_prog, _ = _without_new_aliases(monkeypatch, SliceIntoConcat(), inputs)
    assert len(_copies(prog)) == len(_copies(old_prog)) - 3


class NotContiguous(nn.Module):
    """What is not one contiguous byte range keeps its copies: a concat on C with batch 2, a slice with step
    2, a value used twice in one concat, a concat input that is a graph output."""

    def forward(self, x):
        r = torch.relu(x)
        n = torch.sigmoid(x)
        t = torch.tanh(x[:1])               # an N slice of the input: a view of the input's buffer
        return torch.cat([r, n], 1), r[:, :, ::2], torch.cat([t, t], 0), torch.cat([n, -n], 0), n


def test_illegal_aliases_keep_copies():
    torch.manual_seed(5)
    tpu, prog, plan = _run(NotContiguous(), [torch.randn(2, 3, 4, 5)])
    c, tt, nn_ = _nodes(tpu, "concat")
    assert not any(plan.in_place(a, cat) for cat in (c, tt) for a in cat.args[0])
    assert [plan.in_place(a, nn_) for a in nn_.args[0]] == [False, True]   # n is a graph output
    n_slice, h_slice = _nodes(tpu, "slice")
    assert plan.is_view(n_slice) and plan.aliases[n_slice].op == "placeholder"
    assert not _copies(prog, stable_name(n_slice))
    assert not plan.is_view(h_slice) and _copies(prog, stable_name(h_slice))
    assert len(_copies(prog, stable_name(c))) == 2 and len(_copies(prog, stable_name(tt))) == 2


class LateSlice(nn.Module):
    """A one-channel slice of a 16-channel value used at the very end: as a view it would keep all 16
    channels alive through the two 16-channel temporaries in between."""

    def forward(self, x):
        y = torch.relu(x)
        s = y[:, :1]
        a = (y * 2.0).sum(1, keepdim=True)
        e = torch.sigmoid(a.expand(1, 16, 6, 6) * 1.5)
        return torch.tanh(e) + s


def test_slice_view_not_taken_when_footprint_grows():
    torch.manual_seed(6)
    tpu, prog, plan = _run(LateSlice(), [torch.randn(1, 16, 6, 6)])
    (s,) = _nodes(tpu, "slice")
    assert ddr_plan._slice_offset(s) == 0 and not plan.is_view(s) and _copies(prog, stable_name(s))
    nodes = list(tpu.graph.nodes)
    values = [n for n in nodes if n.op in ("placeholder", "call_function")]
    order = {n: i for i, n in enumerate(nodes)}
    life = ddr_plan._Lifetimes(order, {n: ddr_plan.value_nbytes(n) for n in values},
                               {n: max((order[u] for u in n.users), default=order[n]) for n in values})
    _, forced, _ = ddr_plan._allocate(values, life, set(ddr_plan._flat_outputs(nodes[-1])), {}, 0,
                                      {**plan.aliases, s: s.args[0]}, {**plan.offsets, s: 0})
    assert forced > plan.size   # the view would have cost bytes


def test_slice_offset_rule():
    """The legality rule on shapes: outer dims of 1, step 1 or one element; clamped python bounds."""
    g = torch.fx.Graph()
    x = g.placeholder("x")
    x.meta["val"] = torch.empty(1, 6, 4, 5)
    cases = {(1, 2, 5, 1): 2 * 20 * 4, (1, -3, None, 1): 3 * 20 * 4, (1, 1, 2, 3): 20 * 4, (1, 0, 6, 2): None,
             (2, 1, 3, 1): None, (0, 0, 1, 1): 0, (1, 7, 9, 1): None, (3, 1, 4, 1): None}
    for (d, a, b, step), want in cases.items():
        n = g.call_function(torch.ops.tpu.slice.default, (x, d, a, b, step))
        assert ddr_plan._slice_offset(n) == want, (d, a, b, step)

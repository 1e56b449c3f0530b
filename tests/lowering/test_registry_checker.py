"""Rule table behaviour (duplicates, misses, per-target overrides, partial-based family rules) and the
TPU-graph checker's refusals."""

import functools

import pytest
import torch
import torch.fx as fx

from torch_tpu.errors import TorchTpuError, UnsupportedOpError, VerificationError
from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.names import set_stable_name, stable_name
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.rules import build_table, default_table
from torch_tpu.lowering.rules.norm import lower_softmax

aten = torch.ops.aten


class SoftmaxNet(torch.nn.Module):
    def forward(self, x):
        return torch.softmax(x * 2.0, dim=-1)


@pytest.fixture(scope="module")
def top():
    return capture_module(SoftmaxNet(), (torch.randn(2, 8),))


def test_duplicate_rule_is_refused():
    table = build_table()
    with pytest.raises(TorchTpuError, match=r"aten.relu \[f32\] is already in the default table .*lower_unary\(op='relu'\)"):
        table.register(aten.relu.default, lambda ctx: None)


def test_override_table_wins_for_its_target(top):
    table = build_table()
    table.register(aten._softmax.default, functools.partial(lower_softmax, compute_dtype=torch.float32),
                   precisions=("bf16",), target="bm1688")
    with pytest.raises(TorchTpuError, match="override table of bm1688"):
        table.register(aten._softmax.default, lower_softmax, precisions=("bf16",), target="bm1688")
    x = torch.randn(2, 8)
    ref = top.run_flat(x)[0]
    for target, softmax_dtype in (("bm1684x", torch.bfloat16), ("bm1688", torch.float32)):
        gm = lower(top.gm, target, "bf16", table=table)
        check_tpu(gm, target, "bf16")
        sm = next(n for n in gm.graph.nodes if stable_name(n) == "_softmax")
        assert sm.meta["val"].dtype == softmax_dtype
        assert (gm(x)[0] - ref).abs().max() < 1e-2
    names = [stable_name(n) for n in lower(top.gm, "bm1688", "bf16", table=table).graph.nodes]
    assert "mul.cast_f32" in names and "mul.cast_bf16" not in names


def test_miss_names_op_node_and_location(top):
    table = build_table()
    empty = type(table)()
    with pytest.raises(UnsupportedOpError) as info:
        lower(top.gm, "bm1684x", "f16", table=empty)
    assert info.value.name == "mul" and info.value.op == "aten.mul.Tensor"
    assert "no lowering rule" in str(info.value) and "lowering[bm1684x/f16]" in str(info.value)
    assert "test_registry_checker.py" in info.value.location
    assert aten.convolution.default in default_table().ops("f32")


def test_checker_refuses_broken_graphs(top):
    gm = lower(top.gm, "bm1684x", "bf16")
    check_tpu(gm, "bm1684x", "bf16")
    with pytest.raises(VerificationError, match="bf16 value at precision f16"):
        check_tpu(gm, "bm1684x", "f16")
    # an ATen op in a TPU graph
    bad = lower(top.gm, "bm1684x", "f32")
    node = next(n for n in bad.graph.nodes if n.op == "call_function")
    node.target = aten.mul.Tensor
    with pytest.raises(VerificationError, match="not a tpu op"):
        check_tpu(bad, "bm1684x", "f32")
    # duplicate stable names
    dup = lower(top.gm, "bm1684x", "f32")
    a, b = [n for n in dup.graph.nodes if n.op == "call_function"][:2]
    set_stable_name(b, stable_name(a))
    with pytest.raises(VerificationError, match="stable name also used"):
        check_tpu(dup, "bm1684x", "f32")
    # a stale meta['val']
    stale = lower(top.gm, "bm1684x", "f32")
    n = next(n for n in stale.graph.nodes if n.op == "call_function")
    n.meta["val"] = torch.empty(3)
    with pytest.raises(VerificationError, match="meta\\['val'\\]"):
        check_tpu(stale, "bm1684x", "f32")


def test_identity_cast_is_refused(top):
    gm = lower(top.gm, "bm1684x", "f32")
    g: fx.Graph = gm.graph
    x = next(n for n in g.nodes if n.op == "placeholder")
    with g.inserting_after(x):
        c = g.call_function(torch.ops.tpu.cast.default, (x, torch.float32))
    c.meta["val"] = x.meta["val"]
    set_stable_name(c, "x.cast_f32")
    with pytest.raises(VerificationError, match="cast to the same dtype"):
        check_tpu(gm, "bm1684x", "f32")

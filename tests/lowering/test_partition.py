"""Partitioning with fallback, the fallback=False error, and target precision checks."""

import pytest
import torch

from torch_tpu.errors import TargetError, UnsupportedOpError
from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.names import stable_name
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.partition import Fallback, lower_partitioned
from torch_tpu.tpu_ops import is_tpu_op


@torch.library.custom_op("lowering_test::odd_square", mutates_args=())
def odd_square(x: torch.Tensor) -> torch.Tensor:
    return x * x + 1


@odd_square.register_fake
def _(x):
    return torch.empty_like(x)


class TwoIslands(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x)).mean([2, 3])        # tpu_0
        top3 = torch.topk(y, 3, dim=1).values             # unsupported: eager
        z = odd_square(top3)                              # unsupported custom op: eager
        return torch.sigmoid(self.fc(z) * 2.0)            # tpu_1


@pytest.fixture(scope="module")
def top():
    torch.manual_seed(0)
    return capture_module(TwoIslands(), (torch.randn(2, 3, 8, 8),))


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_unsupported_ops_fall_back(top, precision):
    x = torch.randn(2, 3, 8, 8)
    gm = lower_partitioned(top.gm, "bm1684x", precision)
    fallbacks = gm.meta["fallbacks"]
    assert [f.op for f in fallbacks] == ["aten.topk", "lowering_test.odd_square"]
    assert all(isinstance(f, Fallback) and f.location and "test_partition.py" in f.location for f in fallbacks)
    subs = [n for n, _ in gm.named_children()]
    assert subs == ["tpu_0", "tpu_1"]
    for name in subs:
        sub = getattr(gm, name)
        assert all(is_tpu_op(n.target) for n in sub.graph.nodes if n.op == "call_function")
    check_tpu(gm, "bm1684x", precision)
    ref = top.run_flat(x)[0]
    out = gm(x)[0]
    if precision == "f32":
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    else:
        assert (out - ref).abs().max() < 0.02


def test_no_fallback_raises_with_stable_name(top):
    with pytest.raises(UnsupportedOpError) as info:
        lower_partitioned(top.gm, "bm1684x", "f32", fallback=False)
    err = info.value
    assert err.op == "aten.topk" and err.name == "topk#tuple" and err.where == "lowering[bm1684x/f32]"
    assert "test_partition.py" in (err.location or "")
    with pytest.raises(UnsupportedOpError, match="topk"):
        lower(top.gm, "bm1684x", "bf16")


def test_cv183x_has_no_f32(top):
    with pytest.raises(TargetError, match="cv183x has no precision f32"):
        lower(top.gm, "cv183x", "f32")
    with pytest.raises(TargetError):
        lower_partitioned(top.gm, "cv183x", "f32")
    gm = lower_partitioned(top.gm, "cv183x", "bf16")
    check_tpu(gm, "cv183x", "bf16")


def test_stable_names_follow_top(top):
    gm = lower_partitioned(top.gm, "bm1684x", "bf16")
    nodes = {stable_name(n): n for n in gm.tpu_0.graph.nodes}
    assert {"x", "conv.weight", "relu", "mean", "x.cast_bf16", "mean.cast_f32"} <= nodes.keys()
    # conv + relu are fused (lowering/fuse.py): the conv takes the relu's name
    assert "conv" not in nodes and nodes["relu"].kwargs["act"] == "relu"

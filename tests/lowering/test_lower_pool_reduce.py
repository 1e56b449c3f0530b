"""Pooling and reduction rules."""

import torch
import torch.nn.functional as F

from _lowering_helpers import check_module


class PoolNet(torch.nn.Module):
    def forward(self, x):
        a = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
        b = F.max_pool2d(x, 2, dilation=2)
        c = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        d = F.avg_pool2d(x, 3, 2, 1, count_include_pad=True, divisor_override=5)
        e = F.adaptive_avg_pool2d(x, (2, 3))
        r = [x.mean([2, 3], keepdim=True).flatten(), x.sum(-1).flatten(), x.amax((1, 3)).flatten(),
             x.amin(2).flatten(), x.max(dim=1).values.flatten(), x.mean().reshape(1)]
        return a, b, c, d, e, torch.cat(r)


def test_pool_reduce_family():
    torch.manual_seed(0)
    check_module(PoolNet(), [torch.randn(2, 3, 9, 10)])


def test_max_pool_value_takes_the_name_of_the_top_value():
    # TOP has max_pool2d_with_indices (``pool#tuple``) and its element 0 (``pool``); the TPU value is element 0,
    # so per-layer comparisons by stable name find it
    import torch_tpu
    from torch_tpu.graph.names import stable_name
    from torch_tpu.lowering import lower

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2)).eval()
    x = torch.randn(1, 3, 8, 8)
    top = torch_tpu.transform(model, (x,))
    tpu = lower(top.gm, "bm1684x", "f32")
    names = {stable_name(n) for n in tpu.graph.nodes if n.op == "call_function"}
    assert "1" in names and not any(n.endswith("#tuple") for n in names), names
    got = top.named_values(x)["1"]
    assert torch.equal(got, model(x))
    # in int8 the value also carries what its codes mean (the checks dequantize it with these qparams)
    from torch_tpu.lowering.int8_driver import QPARAMS
    from torch_tpu.quant.calibrate import calibrate

    table = calibrate(top, [x, torch.randn(1, 3, 8, 8)], method="max", num_samples=2, tune_num=0, progress=False)
    q8 = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    pool = next(n for n in q8.graph.nodes if stable_name(n) == "1")
    conv = next(n for n in q8.graph.nodes if stable_name(n) == "0")
    assert pool.meta[QPARAMS] == conv.meta[QPARAMS]           # max pool keeps its input's grid

"""The simulation's view of the float-output INT8 MACs: ``simulate.float_outputs`` names the conv / linear /
matmul values (and fused activations) that only the graph output reads, the lowering leaves exactly those
in float, and search does not quantize them."""

from __future__ import annotations

import torch
import torch.nn as nn

import torch_tpu
from torch_tpu.graph.names import stable_name
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.int8_driver import float_value_names
from torch_tpu.quant.propagate import scale_groups
from torch_tpu.quant.search import search_thresholds
from torch_tpu.quant.simulate import float_outputs, run_fake_quant


class Head(nn.Module):
    """conv -> relu (read by conv2: int8) ; conv2 -> relu (graph output) ; pooled fc read by the output AND
    an add (int8), so it stays int8."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.fc, self.fc2 = nn.Linear(6, 4), nn.Linear(6, 4)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        p = y.mean((2, 3))
        f = self.fc(p)
        return torch.relu(self.c2(y)), f, self.fc2(p) + f


def _setup():
    torch.manual_seed(0)
    model = Head().eval()
    data = [torch.randn(1, 3, 6, 6) for _ in range(4)]
    top = torch_tpu.transform(model, (data[0],))
    table = torch_tpu.calibrate(top, data, method="max", tune_num=0, progress=False)
    return model, data, top, table


def test_float_outputs_are_the_macs_only_the_output_reads():
    _, _, top, _ = _setup()
    names = {stable_name(n) for n in float_outputs(top.gm)}
    assert names == {"c2", "relu_1"}
    assert names <= float_value_names(top.gm, "bm1684x")


def test_lowering_quantizes_exactly_what_the_simulation_quantizes():
    """The simulation without the lowering's float values follows the int8 graph up to accumulator rounding;
    quantizing the float output as well (the old form) is further from it by an int8 rounding."""
    _, data, top, table = _setup()
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    skip = float_value_names(top.gm, "bm1684x")
    entries = {k: e for k, e in table.items() if k not in skip}
    x = data[0]
    out = tpu(x)[0]
    same = run_fake_quant(top.gm, (x,), entries, quantize_weights=True)[0]
    old = run_fake_quant(top.gm, (x,), {**entries, "relu_1": table["relu_1"]}, quantize_weights=True)[0]
    assert (out - same).abs().max() < 0.25 * (out - old).abs().max()


def test_search_does_not_score_float_outputs():
    """Two 'methods' differ only on relu_1's group: a threshold far too small (which would wreck the output if
    it were quantized) and the true max. The lowering never quantizes relu_1, so the scores tie and the
    first method is kept; everything else is the same."""
    _, data, top, table = _setup()
    groups = scale_groups(top.gm)
    good = {k: e.threshold for k, e in table.items()}
    bad = {k: (1e-3 if k in ("c2", "relu_1") else t) for k, t in good.items()}
    ranges = {k: (e.min, e.max) for k, e in table.items()}
    samples = [(x,) for x in data[:2]]
    chosen, picked = search_thresholds(top.gm, samples, groups, {"kl": bad, "max": good}, ranges=ranges)
    assert chosen["relu_1"] == 1e-3
    # the check can fail: with c1's group (an int8 value) the bad threshold loses
    bad_c1 = {k: (1e-3 if k in ("c1", "relu") else t) for k, t in good.items()}
    chosen, _ = search_thresholds(top.gm, samples, groups, {"kl": bad_c1, "max": good}, ranges=ranges)
    assert chosen["relu"] == good["relu"]


def test_conv_with_a_curved_activation_at_the_output_keeps_its_int8_form():
    """Only relu / relu6 / clip bounds apply to the f32 result: a conv read by a silu (a lookup table, or a fused
    conv + table) stays int8, in the lowering and in the simulation's view alike."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return nn.functional.silu(self.c(x))

    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 6)
    top = torch_tpu.transform(M().eval(), (x,))
    table = torch_tpu.calibrate(top, [x], method="max", tune_num=0, progress=False)
    assert float_outputs(top.gm) == set()
    (act,) = [n for n in top.gm.graph.nodes if n.target == torch.ops.aten.silu.default]
    assert stable_name(act) not in float_value_names(top.gm, "bm1684x")      # its output is quantized
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    assert not any("_f32" in str(n.target) for n in tpu.graph.nodes)

"""INT8 lowering: rules, casts at precision boundaries, qtable overrides, checker, partitioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_tpu.errors import TargetError, VerificationError
from torch_tpu.frontends.torch_frontend import capture_module
from torch_tpu.graph.names import stable_name
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.int8_driver import fused_producer_names
from torch_tpu.lowering.partition import lower_partitioned
from torch_tpu.lowering.qparams import QuantizationError
from torch_tpu.quant.calibrate import calibrate
from torch_tpu.quant.simulate import cosine, run_fake_quant
from torch_tpu.quant.tables import CalibrationEntry, CalibrationTable, QTable


class Net(nn.Module):
    """Most int8 rule families in one small graph (conv+relu/relu6 fusion, LUT, add, cat, pools, mean, fc,
    softmax in float)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = F.relu(self.c1(x))
        z = F.silu(self.c2(y)) + y
        w = F.relu6(self.c3(z)) * 0.5
        u = torch.cat([z, w], 1)
        u = F.max_pool2d(u, 2)
        u = F.avg_pool2d(u, 2)
        v = u.mean([2, 3]) - 0.1
        return torch.softmax(self.fc(v.view(v.shape[0], -1)), -1), torch.sigmoid(v)


def _cnn_setup():
    torch.manual_seed(0)
    m = Net().eval()
    data = [torch.randn(2, 3, 8, 8) for _ in range(6)]
    top = capture_module(m, (data[0],))
    table = calibrate(top, data, method="max", num_samples=6, tune_num=0, progress=False)
    return m, top, data, table


@pytest.fixture(scope="module")
def setup():
    return _cnn_setup()


def ops_by_name(gm) -> dict[str, str]:
    return {stable_name(n): str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


def test_int8_graph_matches_float_and_simulation(setup):
    m, top, data, table = setup
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    ops = ops_by_name(tpu)
    int8_ops = [o for o in ops.values() if o.endswith("_int8.default")]
    assert len(int8_ops) >= 14
    # softmax has no int8 rule: f32 (bm1684x's fallback) between dequantize and the output
    assert any("softmax" in o for o in ops.values())
    x = data[1]
    ref = m(x)
    out = tpu(x)
    fused = fused_producer_names(top.gm, "bm1684x")
    assert fused == {"c1", "c3"}
    sim = run_fake_quant(top.gm, (x,), {k: e for k, e in table.items() if k not in fused},
                         quantize_weights=True)
    for r, o, s in zip(ref, out, sim):
        assert o.dtype == torch.float32 and o.shape == r.shape
        c_float, c_sim = cosine(r, o), cosine(s, o)
        print(f"int8 vs f32 cosine {c_float:.5f}, int8 vs fake-quant simulation {c_sim:.5f}")
        assert c_float >= 0.99 and c_sim >= 0.995


def test_relu_fused_into_conv(setup):
    _, top, _, table = setup
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    convs = {stable_name(n): n for n in tpu.graph.nodes if "conv2d_int8" in str(n.target)}
    # fused nodes take the activation's stable name, with the activation as saturation bounds; relu and
    # relu6 outputs are never negative, so they are on the unsigned grid (quant/qscheme.py): zp = -128
    assert convs["relu"].args[10:13] == (-128, -128, 127)
    qmax = convs["hardtanh"].args[12]
    s = float(np.float32(table["hardtanh"].threshold / 255))
    assert qmax == min(127, -128 + round(6.0 / s)) and convs["hardtanh"].args[10:12] == (-128, -128)


def test_asymmetric(setup):
    m, top, data, table = setup
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table, asymmetric=True)
    check_tpu(tpu, "bm1684x", "int8")
    zps = [n.args[2] for n in tpu.graph.nodes if "quantize_int8" in str(n.target) and "dequant" not in str(n.target)]
    assert any(z != 0 for z in zps)
    out = tpu(data[2])
    assert cosine(m(data[2])[0], out[0]) >= 0.99


def test_qtable_forces_exactly_one_layer_to_f32(setup, tmp_path):
    _, top, data, table = setup
    base = ops_by_name(lower(top.gm, "bm1684x", "int8", calibration_table=table))
    path = tmp_path / "q.qtable"
    QTable({"c2": "F32"}).save(path)
    table_path = table.save(tmp_path / "cal.table")
    mixed_gm = lower(top.gm, "bm1684x", "int8", calibration_table=table_path, qtable=path)
    check_tpu(mixed_gm, "bm1684x", "int8")
    mixed = ops_by_name(mixed_gm)
    changed = {k for k in base.keys() & mixed.keys() if base[k] != mixed[k]}
    assert changed == {"c2"} and mixed["c2"] == "tpu.conv2d.default"
    added = set(mixed) - set(base)
    assert added and all(a.endswith((".quantize", ".dequantize_f32")) for a in added), added


def test_cv183x_uses_bf16_and_refuses_f32(setup):
    m, top, data, table = setup
    tpu = lower(top.gm, "cv183x", "int8", calibration_table=table)
    check_tpu(tpu, "cv183x", "int8")
    deq = [n for n in tpu.graph.nodes if "dequantize_int8" in str(n.target)]
    assert any(n.args[3] == torch.bfloat16 for n in deq)
    assert cosine(m(data[0])[0], tpu(data[0])[0]) >= 0.99
    with pytest.raises(TargetError, match="cv183x has no precision f32"):
        lower(top.gm, "cv183x", "int8", calibration_table=table, qtable={"c2": "F32"})


def test_missing_calibration_entry_names_the_tensor(setup):
    _, top, _, table = setup
    partial = CalibrationTable({k: v for k, v in table.items() if k != "add"})
    with pytest.raises(QuantizationError, match="no entry for tensor 'add'"):
        lower(top.gm, "bm1684x", "int8", calibration_table=partial)
    with pytest.raises(TargetError, match="calibration_table"):
        lower(top.gm, "bm1684x", "int8")


def test_checker_rejects_bad_int8_graphs(setup):
    _, top, _, table = setup
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    conv = next(n for n in tpu.graph.nodes if "conv2d_int8" in str(n.target))
    getattr(tpu, conv.args[8].target).fill_(70)        # shift out of [0, 63]
    with pytest.raises(VerificationError, match="shift outside"):
        check_tpu(tpu, "bm1684x", "int8")
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    deq = next(n for n in tpu.graph.nodes if "dequantize_int8" in str(n.target))
    deq.target = torch.ops.tpu.cast.default          # an int8 -> float cast without the scale
    deq.args = (deq.args[0], torch.float32)
    with pytest.raises(VerificationError, match="without dequantize_int8"):
        check_tpu(tpu, "bm1684x", "int8")


class WithTopk(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        y = torch.relu(self.fc(x))
        v, _ = torch.topk(y, 3)
        return torch.tanh(v * 2.0)


def test_partitioned_int8_falls_back_for_unsupported_ops():
    torch.manual_seed(1)
    m = WithTopk().eval()
    data = [torch.randn(4, 6) for _ in range(4)]
    top = capture_module(m, (data[0],))
    table = calibrate(top, data, method="max", num_samples=4, tune_num=0, progress=False)
    gm = lower_partitioned(top.gm, "bm1684x", "int8", calibration_table=table)
    assert [f.op for f in gm.meta["fallbacks"]] == ["aten.topk"]
    check_tpu(gm, "bm1684x", "int8")
    assert cosine(m(data[1]), gm(data[1])[0] if isinstance(gm(data[1]), tuple) else gm(data[1])) >= 0.99


class ZeroBranch(nn.Module):
    """Branches that are all zeros during calibration (threshold 0) next to normal ones."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        # the fc + relu is read by an int8 op (neg, a lookup table), so it is requantized to the relu's degenerate
        # scale; as a graph output it would be the float-output form, which has no output scale
        return (torch.relu(-torch.abs(x)) + x, torch.cat([torch.relu(-torch.abs(x)), x], 1),
                torch.neg(torch.relu(self.fc(x))))


def test_degenerate_zero_threshold_lowers_and_runs():
    data = [torch.randn(2, 4) for _ in range(3)]
    m = ZeroBranch().eval()
    top = capture_module(m, (data[0],))
    table = calibrate(top, data, method="max", num_samples=3, tune_num=0, progress=False)
    zero = [k for k in table if k.startswith("relu")]
    assert zero
    for k in zero:      # (propagation may give relu its input's range; force the degenerate case)
        table[k] = CalibrationEntry(0.0, 0.0, 0.0)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    out = tpu(data[1])
    for r, o in zip(m(data[1])[:2], out[:2]):
        assert cosine(r, o) >= 0.999
    # the fused linear+relu requantizes to a ~1e-40 scale: factors capped at 2^22, outputs ~0, no overflow
    assert ops_by_name(tpu)["relu_2"] == "tpu.linear_int8.default"
    assert out[2].abs().max() < 1e-30


class PreNormBlock(nn.Module):
    """A pre-norm transformer residual stream with one token far smaller than the others (vit's class token)."""

    def __init__(self):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(16), nn.LayerNorm(16), nn.LayerNorm(16)
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        x = x + 0.05 * self.fc1(self.ln1(x))
        x = x + 0.05 * self.fc2(self.ln2(x))
        return self.ln3(x)[:, 0]


def test_residual_stream_read_only_in_float_stays_float():
    from torch_tpu.lowering.int8_driver import float_value_names
    torch.manual_seed(0)
    m = PreNormBlock().eval()

    def sample():
        x = torch.randn(2, 8, 16)
        x[:, 0] *= 0.01                             # the small token: one int8 step of the stream's scale
        return x

    data = [sample() for _ in range(6)]
    top = capture_module(m, (data[0],))
    table = calibrate(top, data, method="max", num_samples=6, tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    ops = ops_by_name(tpu)
    assert not any(o.startswith("tpu.add_int8") for o in ops.values())      # the residual adds run in f32
    assert any(o.startswith("tpu.linear_int8") for o in ops.values())       # the branches stay int8
    names = float_value_names(top.gm, "bm1684x")
    adds = [stable_name(n) for n in top.gm.graph.nodes if n.target == torch.ops.aten.add.Tensor]
    assert len(adds) == 2 and set(adds) <= names
    x = data[1]
    c = cosine(m(x), tpu(x)[0])
    # the simulation quantizing every value, the adds included (what the int8 graph did before)
    sim_int8_adds = run_fake_quant(top.gm, (x,), dict(table.items()), quantize_weights=True)[0]
    print(f"residual adds in f32: cosine {c:.5f}; all int8 (simulated): {cosine(m(x), sim_int8_adds):.5f}")
    assert c >= 0.999 > cosine(m(x), sim_int8_adds)
    # the CNN's residual add feeds a conv: it stays int8
    _, top_cnn, _, table_cnn = _cnn_setup()
    assert any(o.startswith("tpu.add_int8") for o in ops_by_name(
        lower(top_cnn.gm, "bm1684x", "int8", calibration_table=table_cnn)).values())


def test_residual_add_relu_fused_on_the_unsigned_grid():
    # a residual add read only by a relu is requantized straight to the relu's grid ([0, T], zp -128) with
    # the relu as saturation bound: no signed add output spending half its codes on values the relu removes
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = F.relu(self.c1(x))
            return F.relu(self.c2(y) + y), F.relu(x - self.c1(x))

    torch.manual_seed(0)
    m = Block().eval()
    data = [torch.randn(1, 4, 6, 6) for _ in range(6)]
    top = capture_module(m, (data[0],))
    table = calibrate(top, data, method="max", num_samples=6, tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table)
    check_tpu(tpu, "bm1684x", "int8")
    ops = ops_by_name(tpu)
    adds = {n: o for n, o in ops.items() if "add_int8" in o or "sub_int8" in o}
    assert set(adds) == {"relu_1", "relu_2"}, ops          # the fused nodes take the relus' names
    assert "add" not in ops and "sub" not in ops
    for n in tpu.graph.nodes:
        if stable_name(n) in adds:
            assert n.args[-3:] == (-128, -128, 127) and n.meta["qparams"][1] == -128
    x = data[0]
    for r, o in zip(m(x), tpu(x)):
        assert (o >= 0).all() and cosine(r, o) >= 0.999

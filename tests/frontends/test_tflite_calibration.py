"""Pre-quantized int8 TFLite models lowered to INT8 with their own scales (no calibration data) vs LiteRT.

The models are the ones of test_tflite_int8.py, written by ``TFLiteWriter`` as the TFLite converter would
(per-channel int8 weights, int32 bias, int8 activations with ranges measured on the float model): either
asymmetric activations (that file's ``Plan``) or symmetric ones (``zero_point == 0``, :class:`SymPlan`).
``load_tflite`` -> ``fx_passes.run_pipeline`` -> ``calibration_table_from_tflite`` -> ``lower(..., "int8")``;
the TPU graph's output must agree with LiteRT's int8 output, dequantized: cosine >= 0.99 and mean abs error
within one quantization step of that output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_tflite_int8 import Plan, _cos, _ranges, convnet, float_io, litert_outputs, run_litert

from torch_tpu.fixed_point import asymmetric_qparams, scale_from_threshold
from torch_tpu.frontends.tflite import load_tflite
from torch_tpu.frontends.tflite.calibration import (calibration_table_from_tflite, entry_from_qparams,
                                                    missing_activations, needs_asymmetric)
from torch_tpu.fx_passes import run_pipeline
from torch_tpu.lowering.checker import check_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.qparams import QuantizationError
from torch_tpu.quant.tables import CalibrationTable

TARGET = "bm1684x"


class SymPlan(Plan):
    """Symmetric int8 activations: ``zero_point = 0``, ``scale = max|range| / 127``."""

    def act_quant(self, name: str):
        lo, hi = self.ranges[name]
        scale = max(abs(lo), abs(hi), 1e-6) / 127.0
        self.scales[name] = np.array([scale])
        return [scale], [0], 0


CASES = {"convnet_asym": (convnet, Plan, (1, 12, 12, 3)), "convnet_sym": (convnet, SymPlan, (1, 12, 12, 3)),
         "float_io_asym": (float_io, Plan, (1, 8, 8, 4))}


def _model(case: str, tmp_path):
    build, plan_cls, shape = CASES[case]
    x = np.random.default_rng(3).uniform(-1.0, 1.0, shape).astype(np.float32)
    plan = plan_cls(_ranges(build, 7, [x]))
    build(plan, np.random.default_rng(7))
    data = plan.b.build()
    path = tmp_path / f"{case}.tflite"
    path.write_bytes(data)
    top = load_tflite(path)
    run_pipeline(top.gm)
    return plan, data, top, x


@pytest.mark.parametrize("case", list(CASES))
def test_int8_lowering_with_tflite_scales_matches_litert(case, tmp_path):
    plan, data, top, x = _model(case, tmp_path)
    table = calibration_table_from_tflite(top)
    asym = case.endswith("_asym")
    assert needs_asymmetric(top)   # softmax/logistic outputs are (1/256, -128) in TFLite even in SymPlan
    tpu = lower(top.gm, TARGET, "int8", calibration_table=table, asymmetric=asym)
    check_tpu(tpu, TARGET, "int8")
    assert sum(str(n.target).endswith("_int8.default") for n in tpu.graph.nodes) >= 4

    it, x_top = run_litert(data, x)
    got = tpu(torch.from_numpy(x_top))
    got = got if isinstance(got, (tuple, list)) else (got,)
    for d, g, r, s in litert_outputs(it, got, plan):
        g = g.detach().numpy()
        cos, mae = _cos(g, r), float(np.abs(g - r).mean())
        print(f"{case} {d['name']}: cosine {cos:.6f}, mean abs error {mae:.3g} (step {s:.3g})")
        assert g.shape == r.shape
        assert cos >= 0.99, d["name"]
        assert mae <= s, d["name"]


@pytest.mark.parametrize("case", list(CASES))
def test_table_covers_every_activation(case, tmp_path):
    _, _, top, _ = _model(case, tmp_path)
    table = calibration_table_from_tflite(top)
    assert missing_activations(top, table) == []
    assert table.method == "tflite"
    # every TFLite int8 tensor keeps its own (scale, zero point)
    for name, q in top.meta["tflite_quant"].items():
        if name not in table:
            continue   # folded away by fx_passes
        s, zp = q["scale"][0], q["zero_point"][0]
        e = table[name]
        s_a, zp_a = asymmetric_qparams(min(e.min, 0.0), max(e.max, 0.0))
        assert s_a == pytest.approx(s, rel=1e-9) and zp_a == zp, name
        if zp == 0:
            assert scale_from_threshold(e.threshold) == pytest.approx(s, rel=1e-12), name
    # both lowerings find an entry for every tensor they quantize
    for asym in (False, True):
        lower(top.gm, TARGET, "int8", calibration_table=table, asymmetric=asym)
    # and the table is what made them succeed: helpers the lowering quantizes (not range-preserving, not
    # fused) have no TFLite qparams of their own; without their derived entry it raises, naming them
    needed = []
    for helper in (k for k in table if k not in top.meta["tflite_quant"]):
        partial = CalibrationTable({k: e for k, e in table.items() if k != helper})
        try:
            lower(top.gm, TARGET, "int8", calibration_table=partial)
        except QuantizationError as err:
            assert f"'{helper}'" in str(err)
            needed.append(helper)
    print(case, "derived entries the lowering needs:", needed)
    assert needed


def test_entry_from_qparams():
    e = entry_from_qparams(0.5, 0)
    assert (e.threshold, e.min, e.max) == (63.5, -64.0, 63.5)
    e = entry_from_qparams(0.25, -128)     # [0, 63.75]: covers the whole grid on the positive side
    assert (e.threshold, e.min, e.max) == (63.75, 0.0, 63.75)
    e = entry_from_qparams(0.1, 10)
    assert e.threshold == pytest.approx(0.1 * 138) and e.min == pytest.approx(-13.8) and e.max == pytest.approx(11.7)

"""Each named int8 lookup-table function, checked entry by entry against a pure-Python model of its table.

The table of ``f`` maps every int8 input code ``q`` to ``clamp(round_half_away(f((q - zp_x) * s_x) / s_y) + zp_y)``
(lowering/rules/int8_eltwise.py). The reference below evaluates ``f`` with the ``math`` module in float64, not
with torch, and quantizes with its own rounding, so a wrong function, a wrong grid or a wrong entry order fails.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import torch_tpu
from torch_tpu.lowering.driver import lower
from torch_tpu.lowering.int8_driver import QPARAMS
from torch_tpu.quant.calibrate import calibrate


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


FUNCTIONS = {
    "sigmoid": (torch.sigmoid, _sigmoid),
    "silu": (nn.functional.silu, lambda v: v * _sigmoid(v)),
    "gelu": (nn.functional.gelu, lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))),
    "tanh": (torch.tanh, math.tanh),
    "hardswish": (nn.functional.hardswish, lambda v: v * min(max(v + 3.0, 0.0), 6.0) / 6.0),
    "hardsigmoid": (nn.functional.hardsigmoid, lambda v: min(max(v / 6.0 + 0.5, 0.0), 1.0)),
    "exp": (torch.exp, math.exp),
    "erf": (torch.erf, math.erf),
}


class _Net(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.c1, self.c2, self.fn = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1), fn

    def forward(self, x):
        # a max pool between conv and function: a conv + curved activation would fuse (tpu.conv2d_lut_int8,
        # tested in test_conv_lut_int8.py); here the function reads an int8 tensor through a 256-entry table
        return self.c2(self.fn(nn.functional.max_pool2d(self.c1(x), 3, 1, 1)))


def _quantize(v: float, scale: float, zp: int) -> int:
    r = v / scale
    q = math.floor(abs(r) + 0.5) * (1 if r >= 0 else -1)
    return min(127, max(-128, q + zp))


@pytest.mark.parametrize("name, asymmetric", [(n, False) for n in FUNCTIONS]
                         + [(n, True) for n in ("silu", "gelu", "hardswish")])
def test_lut_table_matches_the_function(name, asymmetric):
    torch_fn, ref_fn = FUNCTIONS[name]
    torch.manual_seed(0)
    model = _Net(torch_fn).eval()
    data = [torch.randn(1, 3, 6, 6) for _ in range(4)]
    top = torch_tpu.transform(model, (data[0],))  # the fx_passes recompose silu/hardswish/hardsigmoid
    table = calibrate(top, data, method="max", num_samples=4, tune_num=0, progress=False)
    tpu = lower(top.gm, "bm1684x", "int8", calibration_table=table, asymmetric=asymmetric)
    luts = [n for n in tpu.graph.nodes if n.op == "call_function" and "lut_int8" in str(n.target)]
    assert len(luts) == 1, f"{name}: expected one tpu.lut_int8, got {[str(n.target) for n in tpu.graph.nodes]}"
    lut = luts[0]
    sx, zx = lut.args[0].meta[QPARAMS]
    sy, zy = lut.meta[QPARAMS]
    entries = getattr(tpu, lut.args[1].target).reshape(256).tolist()
    # entries are ordered by q & 0xff: codes 0..127, then -128..-1
    codes = list(range(0, 128)) + list(range(-128, 0))
    want = [_quantize(ref_fn((q - zx) * sx), sy, zy) for q in codes]
    bad = [(q, e, w) for q, e, w in zip(codes, entries, want) if e != w]
    assert not bad, f"{name}: {len(bad)} wrong entries (code, got, want), first {bad[:4]}"
    # the table is not degenerate: the calibrated output range uses many codes
    assert len(set(entries)) >= 32

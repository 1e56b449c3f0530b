"""The model zoo through torch.compile(backend="tpu"): no fallback op, every precision within its bar.

Bars (issue 2): f32 output cosine >= 0.99999 vs eager, bf16 >= 0.99, f16 >= 0.999; the TOP graph matches
eager to 1e-5 relative. CNNs run at small input sizes except resnet50 (224x224, as the issue asks).
Every model runs on the cmodel (issue 3): its Programs give the TPU graph's results -- every value probed
in the Program by stable name, and the outputs -- within ``CMODEL_TOLERANCE`` (checked in bf16, where the
stored dtype rounds, and in f32).
"""

import pytest
import torch

from benchmarks.zoo import ZOO, build
from torch_tpu.backend import recent_compiles
from torch_tpu.verify import similarity

BARS = {"f32": 0.99999, "bf16": 0.99, "f16": 0.999}


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for t in out]


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model(name):
    model, inputs = build(name, small=True)
    with torch.no_grad():
        ref = _flat(model(*inputs))
    for precision, bar in BARS.items():
        torch._dynamo.reset()
        fn = torch.compile(model, backend="tpu", options={"precision": precision, "cache": False,
                                                           "verbose": False})
        with torch.no_grad():
            got = _flat(fn(*inputs))
        compiled = recent_compiles()[-1]
        assert compiled.fallbacks == [], f"{name}/{precision}: fallback ops {compiled.fallbacks}"
        assert compiled.on_cmodel, f"{name}/{precision}: not on the cmodel: {compiled.cmodel_fallbacks}"
        if precision in ("f32", "bf16"):
            reports = compiled.check(*inputs)
            cm = [r for r in reports if r.title.startswith("cmodel")]
            assert len(cm) == 2 and len(cm[0].rows) >= 3, [r.title for r in reports]
            for r in cm:
                print(r.table(max_rows=4))
                r.raise_if_failed()
        if precision == "f32":
            top_out = compiled.top.run_flat(*inputs)
            for r, t in zip(ref, top_out):
                torch.testing.assert_close(t, r, rtol=1e-5, atol=1e-5 * float(r.abs().max()))
        for r, g in zip(ref, got):
            cos = similarity(r, g).cosine
            print(f"{name} {precision}: cosine {cos:.7f}")
            assert g.dtype == r.dtype and g.shape == r.shape
            assert cos >= bar, f"{name}/{precision}: cosine {cos:.7f} < {bar}"

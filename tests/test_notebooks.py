"""Execute the notebooks under notebooks/ and check what they report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from torch_tpu.config import STAGE_TOLERANCE

nbformat = pytest.importorskip("nbformat", reason="nbformat comes with nbmake (the test extra)")
nbclient = pytest.importorskip("nbclient", reason="nbclient comes with nbmake (the test extra)")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TIMEOUT_S = 120


def _run(path: Path):
    nb = nbformat.read(path, as_version=4)
    env = {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                                         resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_calibration_notebook_runs_and_search_helps():
    nb = _run(NOTEBOOKS / "calibration.ipynb")   # raises CellExecutionError (with the cell) on any error
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    lines = [ln for ln in _stdout(code[-1]).splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, _stdout(code[-1])
    result = json.loads(lines[0][len("RESULT "):])
    print(result)
    # the int8 numbers come from the INT8 lowering (the search's evaluator too), not the fake-quant simulation
    assert result["evaluator"] == "int8 lowering"
    assert result["after_cosine"] >= result["before_cosine"]
    assert result["float_layers"], "the search should have put at least one layer in float"
    assert result["float_layers"] == sorted(result["search_float_layers"])   # the qtable file holds the search's
    assert result["fp32_acc"] > 0.85                  # the CNN learned the digits
    assert result["int8_acc"] > result["fp32_acc"] - 0.03
    # per-layer INT8 TPU graph vs FP32 TOP graph by stable name: conv+relu fused (the relu names them)
    assert {"relu", "relu_1", "relu_2", "mean", "fc"} <= set(result["per_layer_names"])
    assert result["per_layer_min_cosine"] >= STAGE_TOLERANCE["int8"][0]
    # the cmodel runs the same integers; the F32 layer differs from the reference op by summation order only
    assert result["cmodel_int8_bit_exact"]
    assert result["cmodel_mixed_max_abs"] < 1e-4
    # data-aware weight rounding: less weight error, and a better whole INT8 graph, than rounding to nearest
    (w_near, q_near), (w_gptq, q_gptq) = result["rounding_sqnr_db"]["nearest"], result["rounding_sqnr_db"]["gptq"]
    assert w_gptq > w_near + 3.0 and q_gptq > q_near
    figures = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) >= 3                          # histograms, per-layer similarity, sensitivity
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "comes later" not in markdown and "comes later" not in _stdout(code[-1])

"""Execute the notebooks under notebooks/ and check what they report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

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
    assert result["after_cosine"] >= result["before_cosine"]
    assert result["float_layers"], "the search should have put at least one layer in float"
    assert result["fp32_acc"] > 0.85                  # the CNN learned the digits
    assert "simulation" in _stdout(code[-1])
    figures = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) >= 3                          # histograms, per-layer similarity, sensitivity

"""Calibration table and qtable text formats."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from torch_tpu.quant.tables import CalibrationEntry, CalibrationTable, QTable, TableError

FINITE = st.floats(allow_nan=False, allow_infinity=False)
NAMES = st.text(st.sampled_from("abcXYZ019_.#:/-"), min_size=1, max_size=24).filter(lambda s: s[0] != "#")


@settings(max_examples=60, deadline=None)
@given(entries=st.dictionaries(NAMES, st.tuples(st.floats(0, 1e30), FINITE, FINITE), min_size=1, max_size=8),
       samples=st.integers(0, 10 ** 6), tune=st.integers(0, 100))
def test_calibration_table_round_trip_is_exact(entries, samples, tune):
    t = CalibrationTable({k: CalibrationEntry(*v) for k, v in entries.items()}, method="kl", sample_number=samples,
                         tune_number=tune)
    again = CalibrationTable.from_text(t.to_text())
    assert again == t
    for k, (th, lo, hi) in entries.items():       # bit-identical floats, order kept
        e = again[k]
        assert (e.threshold, e.min, e.max) == (th, lo, hi)
    assert list(again) == list(entries)


def test_save_load_and_tpu_mlir_header(tmp_path):
    t = CalibrationTable({"x": CalibrationEntry(2.5, -2.0, 2.5), "layer1.0.conv1": CalibrationEntry(0.1, -0.3, 1e-7)},
                         method="mse", histogram_bins=2048, sample_number=100, tune_number=5)
    path = t.save(tmp_path / "cali_table")
    text = path.read_text()
    assert text.startswith("# genetated time: ")
    for line in ("# histogram number: 2048", "# sample number: 100", "# tune number: 5",
                 "# op_name    threshold    min    max", "x 2.5 -2.0 2.5", "layer1.0.conv1 0.1 -0.3 1e-07"):
        assert line in text.splitlines()
    assert CalibrationTable.load(path) == t
    # a table as TPU-MLIR writes it (no method line; extra comment lines) reads back
    mlir = ("# genetated time: 2023-06-01 10:00:00\n# histogram number: 2048\n# sample number: 10\n"
            "# tune number: 0\n###\n# op_name    threshold    min    max\n"
            "input 2.6432 -2.5123 2.6432\nconv1_Conv 5.1 -3.0 5.2\n#int4_th\n")
    m = CalibrationTable.from_text(mlir)
    assert m.sample_number == 10 and m.threshold("conv1_Conv") == 5.1 and len(m) == 2


@pytest.mark.parametrize("text, message", [
    ("a 1.0 2.0\n", r"cali\.txt:1: expected 'op_name threshold min max'"),
    ("# x\na 1.0 -1 1\nb one -1 1\n", r"cali\.txt:3: tensor 'b': threshold/min/max must be numbers"),
    ("a 1.0 -1 1\na 2.0 -1 1\n", r"cali\.txt:2: tensor 'a' appears twice"),
    ("a nan -1 1\n", r"cali\.txt:1: tensor 'a': non-finite"),
    ("a -1 -1 1\n", r"cali\.txt:1: tensor 'a': negative threshold"),
    ("# sample number: many\n", r"cali\.txt: header 'sample_number'"),
])
def test_calibration_table_errors_name_file_and_line(tmp_path, text, message):
    p = tmp_path / "cali.txt"
    p.write_text(text)
    with pytest.raises(TableError, match=message):
        CalibrationTable.load(p)


def test_calibration_table_refuses_bad_names_and_missing_entries(tmp_path):
    with pytest.raises(TableError, match="whitespace"):
        CalibrationTable({"a b": CalibrationEntry(1, 0, 1)}).to_text()
    with pytest.raises(TableError, match="no entry for tensor 'zz'"):
        CalibrationTable()["zz"]
    with pytest.raises(TableError, match="cannot read"):
        CalibrationTable.load(tmp_path / "missing.txt")


def test_qtable_round_trip_and_errors(tmp_path):
    q = QTable({"layer1.0.conv1": "f32", "fc": "BF16", "softmax": "F16", "conv2": "int8"})
    assert q["layer1.0.conv1"] == "F32" and q["conv2"] == "INT8"
    path = q.save(tmp_path / "model.qtable")
    assert path.read_text().splitlines() == ["# op_name quantize_mode", "layer1.0.conv1 F32", "fc BF16",
                                             "softmax F16", "conv2 INT8"]
    assert QTable.load(path) == q
    bad = tmp_path / "bad.qtable"
    bad.write_text("# op_name quantize_mode\nfc BF16\nconv FP8\n")
    with pytest.raises(TableError, match=r"bad\.qtable:3: unknown quantize mode 'FP8'"):
        QTable.load(bad)
    bad.write_text("fc BF16 extra\n")
    with pytest.raises(TableError, match=r"bad\.qtable:1: expected 'op_name MODE'"):
        QTable.load(bad)
    with pytest.raises(TableError, match="unknown quantize mode"):
        QTable({"fc": "int4"})

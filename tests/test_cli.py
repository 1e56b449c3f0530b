import numpy as np

from torch_tpu.cli import main


def test_compare_npz_pass_and_fail(tmp_path, capsys):
    a = tmp_path / "a.npz"
    b = tmp_path / "b.npz"
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    np.savez(a, conv=x, fc=x[:, :4])
    np.savez(b, conv=x + 1e-4, fc=-x[:, :4])
    assert main(["compare", str(a), str(b), "--tolerance", "0.99,0.9"]) == 1
    out = capsys.readouterr().out
    assert "FAIL at 'fc'" in out and "conv" in out
    np.savez(b, conv=x, fc=x[:, :4])
    assert main(["compare", str(a), str(b)]) == 0


def test_compare_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    assert main(["compare", str(bad), str(bad)]) == 2
    assert "bad.npz" in capsys.readouterr().err

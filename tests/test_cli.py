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


def test_transform_then_calibrate_from_the_shell(tmp_path, capsys):
    import torch

    from torch_tpu.graph import load_top
    from torch_tpu.quant import CalibrationTable

    assert main(["transform", "--torchvision", "resnet18", "--input-shape", "1,3,32,32",
                 "-o", str(tmp_path / "r18")]) == 0
    out = capsys.readouterr().out
    assert "TOP vs eager PyTorch" in out and "PASS" in out
    top = load_top(tmp_path / "r18.pt2")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.save(data / f"{i}.npy", rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    assert main(["calibrate", str(tmp_path / "r18.pt2"), "--data", str(data), "--input-num", "6",
                 "--tune-num", "0", "--method", "percentile", "--percentile", "99.0",
                 "-o", str(tmp_path / "p99")]) == 0
    assert main(["calibrate", str(tmp_path / "r18.pt2"), "--data", str(data), "--input-num", "6",
                 "--tune-num", "1", "-o", str(tmp_path / "r18_cali_table")]) == 0
    table = CalibrationTable.load(tmp_path / "r18_cali_table")
    p99 = CalibrationTable.load(tmp_path / "p99")
    # the 99th percentile of |x| clips: below the max-based threshold on most tensors
    assert sum(p99[n].threshold < 0.999 * max(abs(p99[n].min), abs(p99[n].max)) for n in p99) >= len(p99) // 2
    assert "fc" in table and "layer1.0.relu" in table and len(table) >= 20
    assert set(top.input_names) <= set(table)
    assert main(["qtable", str(tmp_path / "r18.pt2"), "--calibration-table", str(tmp_path / "r18_cali_table"),
                 "--data", str(data), "--input-num", "2", "--expected-cos", "0.5", "-o", str(tmp_path / "q")]) == 0
    from torch_tpu.quant import QTable
    assert set(QTable.load(tmp_path / "q")) <= {n for n in table}
    assert main(["round-weights", str(tmp_path / "r18.pt2"), "--data", str(data), "--input-num", "4",
                 "-o", str(tmp_path / "r18_gptq")]) == 0
    rounded = load_top(tmp_path / "r18_gptq.pt2")
    assert rounded.meta["weight_rounding"] == "gptq" and rounded.input_names == top.input_names
    changed = [k for k, v in top.gm.state_dict().items() if not torch.equal(v, rounded.gm.state_dict()[k])]
    assert len(changed) >= 15                   # conv and fc weights, one per layer


def test_transform_an_onnx_file_validates_against_onnxruntime(tmp_path, capsys):
    import torch
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"])
    assert main(["transform", "--model", str(path), "-o", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "TOP vs onnxruntime" in out and "logits" in out and "PASS" in out
    assert (tmp_path / "m.pt2").exists() and "logits" in (tmp_path / "m.txt").read_text()
    assert main(["transform", "--model", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x")]) == 2
    assert "missing.onnx" in capsys.readouterr().err


def test_deploy_and_run_on_the_cmodel_from_the_shell(tmp_path, capsys):
    import json

    import torch

    import torch_tpu
    from torch_tpu.verify import load_npz, similarity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10)).eval()
    x = torch.randn(1, 3, 8, 8)
    torch_tpu.transform(model, (x,)).save(tmp_path / "m")
    assert main(["deploy", str(tmp_path / "m.pt2"), "-o", str(tmp_path / "m.tpu")]) == 0
    assert "activation DDR:" in capsys.readouterr().out  # the footprint vs the naive sum
    np.savez(tmp_path / "in.npz", **{torch_tpu.load(tmp_path / "m.pt2").input_names[0]: x.numpy()})
    assert main(["run", str(tmp_path / "m.tpu"), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"),
                 "--profile", str(tmp_path / "trace.json")]) == 0
    out = load_npz(tmp_path / "out.npz")["output0"]
    with torch.no_grad():
        ref = model(x)
    assert similarity(ref, out).cosine > 0.99999 and torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace  # Chrome trace events of both engines
    assert "cycles" in capsys.readouterr().out.lower()

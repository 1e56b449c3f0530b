import json
import zipfile

import pytest
import torch
import torchvision

from torch_tpu.errors import ModelFormatError
from torch_tpu.frontends import capture_module
from torch_tpu.graph import load_top


@pytest.fixture(scope="module")
def small_top():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    return model, x, capture_module(model, (x,))


def test_top_matches_eager_and_round_trips(small_top, tmp_path):
    model, x, top = small_top
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(top(x), ref, rtol=1e-5, atol=1e-6)
    for n in top.gm.graph.nodes:
        if n.op != "output":
            assert "val" in n.meta and "stable_name" in n.meta, n
    pt2 = top.save(tmp_path / "r18")
    assert pt2.name == "r18.pt2" and (tmp_path / "r18.txt").read_text() == top.text()
    again = load_top(pt2)
    assert again.text() == top.text()
    torch.testing.assert_close(again(x), ref, rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob("*partial*"))


def test_load_refuses_pickled_payloads(small_top, tmp_path):
    _, _, top = small_top
    pt2 = top.save(tmp_path / "m")
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(pt2) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                cfg = json.loads(data)
                first = next(iter(cfg["config"]))
                cfg["config"][first]["use_pickle"] = True
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
    with pytest.raises(ModelFormatError, match="pickle"):
        load_top(bad)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_load_refuses_garbage(tmp_path, content):
    p = tmp_path / "g.pt2"
    p.write_bytes(content)
    with pytest.raises(ModelFormatError, match="g.pt2"):
        load_top(p)


def test_truncated_archive_is_a_clear_error(small_top, tmp_path):
    _, _, top = small_top
    pt2 = top.save(tmp_path / "t")
    data = pt2.read_bytes()
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError):
        load_top(cut)


def test_top_values_match_eager_module_outputs_by_name(small_top):
    from torch_tpu.verify import compare, module_outputs
    model, x, top = small_top
    ref = module_outputs(model, (x,))
    vals = top.named_values(x)
    common = [n for n in vals if n in ref]
    # convs, BatchNorms, ReLUs (called twice per block: relu, relu_1), blocks, pools, fc
    assert {"conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu_1", "avgpool", "fc"} <= set(common)
    rep = compare(ref, vals, tolerance=(0.99999, 0.9999), names=common)
    rep.raise_if_failed()
    assert rep.min_cosine() > 0.99999

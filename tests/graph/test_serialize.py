import json
import zipfile

import pytest
import torch
import torch.nn as nn

from torch_tpu.errors import ModelFormatError
from torch_tpu.frontends import capture_module
from torch_tpu.graph.printer import format_graph
from torch_tpu.graph.serialize import load_graph, save_graph


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.pool(torch.relu(self.conv(x)))
        return self.fc(y.mean((2, 3))), y


def test_round_trip_runs_the_same(tmp_path):
    x = torch.randn(2, 3, 16, 16)
    top = capture_module(Small(), (x,))
    path = save_graph(top.gm, tmp_path / "g.tgraph", meta={"k": [1, 2]})
    gm, meta = load_graph(path)
    assert meta == {"k": [1, 2]}
    for a, b in zip(top.gm(x), gm(x)):
        assert torch.equal(a, b)
    assert format_graph(gm) == format_graph(top.gm)


def _rewrite(src, dst, fn):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "graph.json":
                doc = json.loads(data)
                fn(doc)
                data = json.dumps(doc).encode()
            zout.writestr(item, data)


def test_refuses_foreign_call_targets(tmp_path):
    top = capture_module(Small(), (torch.randn(1, 3, 8, 8),))
    path = save_graph(top.gm, tmp_path / "g.tgraph")

    def evil(doc):
        for n in doc["root"]["nodes"]:
            if n["op"] == "call_function" and n["target"] != "getitem":
                n["target"] = "os.system.default"
                break

    _rewrite(path, tmp_path / "evil.tgraph", evil)
    with pytest.raises(ModelFormatError, match="refusing call target 'os.system.default'"):
        load_graph(tmp_path / "evil.tgraph")


def test_corrupt_files(tmp_path):
    p = tmp_path / "x.tgraph"
    p.write_bytes(b"PK garbage")
    with pytest.raises(ModelFormatError, match="x.tgraph"):
        load_graph(p)
    top = capture_module(Small(), (torch.randn(1, 3, 8, 8),))
    path = save_graph(top.gm, tmp_path / "g.tgraph")

    def dangling(doc):
        doc["root"]["nodes"][-1]["args"] = {"tuple": [{"node": "does_not_exist"}]}

    _rewrite(path, tmp_path / "d.tgraph", dangling)
    with pytest.raises(ModelFormatError, match="does_not_exist"):
        load_graph(tmp_path / "d.tgraph")

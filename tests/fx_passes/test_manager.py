import pytest
import torch
import torch.nn as nn

from torch_tpu.errors import ConfigError, VerificationError
from torch_tpu.frontends import capture_module
from torch_tpu.fx_passes import Pass, PassManager, PassResult
from torch_tpu.fx_passes.dead_code import remove_dead_code
from torch_tpu.fx_passes.silu import recognize_silu


class Swish(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y * torch.sigmoid(y)


@pytest.fixture(scope="module")
def gm():
    return capture_module(Swish(), (torch.randn(2, 4),)).gm


def _explode(gm):
    raise RuntimeError("boom")


def _drop_val(gm):
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    node.meta["_saved_val"] = node.meta.pop("val")
    return PassResult(gm, True)


def _restore(gm):
    for n in gm.graph.nodes:
        if "_saved_val" in n.meta:
            n.meta["val"] = n.meta.pop("_saved_val")


def test_failing_pass_is_named_with_the_passes_before_it(gm):
    pm = PassManager([("remove_dead_code", remove_dead_code), ("first_ok", remove_dead_code),
                      ("explode", _explode), ("never", remove_dead_code)])
    with pytest.raises(VerificationError, match=r"fx pass 'explode' failed \(passes run before it: "
                                                 r"remove_dead_code, first_ok\): RuntimeError: boom"):
        pm(gm)


def test_broken_invariant_is_named_when_checking(gm):
    pm = PassManager([Pass("remove_dead_code", remove_dead_code), Pass("drop_val", _drop_val)], check=True)
    try:
        with pytest.raises(VerificationError, match=r"(?s)fx pass 'drop_val' broke a TOP invariant \(passes run before "
                                                     r"it: remove_dead_code\).*rule has-val"):
            pm(gm)
    finally:
        _restore(gm)
    assert PassManager([("drop_val", _drop_val)], check=False)(gm).modified  # unchecked: not noticed
    _restore(gm)


def test_wrong_return_and_duplicate_names_are_refused(gm):
    with pytest.raises(VerificationError, match="'returns_none' did not return PassResult"):
        PassManager([("returns_none", lambda g: None)])(gm)
    with pytest.raises(ConfigError, match="pass 'x' is listed twice"):
        PassManager([("x", remove_dead_code), ("x", remove_dead_code)])


def test_dump_dir_gets_one_numbered_file_per_pass(gm, tmp_path):
    pm = PassManager([("remove_dead_code", remove_dead_code), ("recognize_silu", recognize_silu)],
                     check=True, dump_dir=tmp_path)
    assert pm(gm).modified
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_input.txt", "01_remove_dead_code.txt",
                                                          "02_recognize_silu.txt"]
    assert "aten.sigmoid" in (tmp_path / "00_input.txt").read_text()
    assert "aten.silu" in (tmp_path / "02_recognize_silu.txt").read_text()
    assert [r.name for r in pm.records] == ["remove_dead_code", "recognize_silu"] and pm.records[1].modified

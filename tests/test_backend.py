import logging
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from torch_tpu.backend import recent_compiles
from torch_tpu.errors import ConfigError, TargetError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean((2, 3)))


class WithTopk(Net):
    def forward(self, x):
        logits = super().forward(x)
        vals, _ = torch.topk(logits, 3, dim=-1)   # no TPU rule: must fall back to eager
        return torch.sigmoid(vals)


def _cause(exc, kind):
    while exc is not None:
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or getattr(exc, "inner_exception", None)
    return None


def test_entry_point_in_a_process_that_never_imports_torch_tpu():
    code = (
        "import sys, torch, torch.nn as nn\n"
        "m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()\n"
        "x = torch.randn(1, 3, 8, 8)\n"
        "assert 'torch_tpu' not in sys.modules\n"
        "y = torch.compile(m, backend='tpu', options={'cache': False})(x)\n"
        "torch.testing.assert_close(y, m(x), rtol=1e-5, atol=1e-6)\n"
        "assert 'torch_tpu' in sys.modules\n"
        "print('OK')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


def test_fallback_op_runs_in_eager_with_one_report_line(caplog):
    torch._dynamo.reset()
    model = WithTopk().eval()
    x = torch.randn(2, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="torch_tpu"):
        got = torch.compile(model, backend="tpu", options={"cache": False})(x)
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-6)
    c = recent_compiles()[-1]
    assert len(c.fallbacks) == 1 and "topk" in c.fallbacks[0].op
    lines = [r.getMessage() for r in caplog.records if "fallback to eager" in r.getMessage()]
    assert len(lines) == 1 and "aten.topk" in lines[0] and "test_backend.py" in lines[0]


def test_no_fallback_option_turns_it_into_an_error():
    torch._dynamo.reset()
    fn = torch.compile(WithTopk().eval(), backend="tpu", options={"cache": False, "fallback": False})
    with pytest.raises(Exception) as info:
        fn(torch.randn(1, 3, 8, 8))
    err = _cause(info.value, __import__("torch_tpu").errors.UnsupportedOpError)
    assert err is not None and "topk" in str(err)


def test_dump_dir_writes_every_stage(tmp_path):
    torch._dynamo.reset()
    torch.compile(Net().eval(), backend="tpu", options={"dump_dir": str(tmp_path), "cache": False})(
        torch.randn(1, 3, 8, 8))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:4] == ["00_dynamo_graph.txt", "01_top_captured.txt", "02_top.txt", "03_tpu_bm1684x_f32.txt"]
    passes = sorted(p.name for p in (tmp_path / "passes").iterdir())
    assert len(passes) >= 5 and passes[0].startswith("00") or passes[0].startswith("01")
    assert "bn" in (tmp_path / "01_top_captured.txt").read_text()


def test_new_shapes_recompile_within_limits():
    torch._dynamo.reset()
    model = Net().eval()
    fn = torch.compile(model, backend="tpu", options={"cache": False})
    for batch, size in [(1, 8), (2, 8), (3, 8), (2, 12), (4, 12)]:
        x = torch.randn(batch, 3, size, size)
        torch.testing.assert_close(fn(x), model(x), rtol=1e-5, atol=1e-6)


def test_on_disk_cache_gives_the_same_graph(tmp_path):
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    outs = []
    for _ in range(2):
        torch._dynamo.reset()
        outs.append(torch.compile(model, backend="tpu", options={"cache_dir": str(tmp_path)})(x))
    first, second = recent_compiles()[-2:]
    assert not first.from_cache and second.from_cache
    assert second.text() == first.text()
    assert torch.equal(outs[0], outs[1])
    # the Programs come from the cache too
    assert second.on_cmodel and list(second.programs) == ["tpu_0"]
    assert second.programs["tpu_0"].to_text() == first.programs["tpu_0"].to_text()
    assert len(list(tmp_path.rglob("*.tpu"))) == 1


def test_bad_options_are_clear_errors():
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(Net().eval(), backend="tpu", options={"precison": "bf16"})(torch.randn(1, 3, 8, 8))
    assert _cause(info.value, ConfigError) is not None and "precison" in str(info.value)
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(Net().eval(), backend="tpu", options={"target": "cv183x", "precision": "f32"})(
            torch.randn(1, 3, 8, 8))
    err = _cause(info.value, TargetError)
    assert err is not None and "cv183x has no precision f32" in str(err)


def test_stage_check_passes_in_bf16():
    torch._dynamo.reset()
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    torch.compile(model, backend="tpu", options={"precision": "bf16", "cache": False})(x)
    reports = recent_compiles()[-1].check(x)
    assert [r.title.split("[")[0] for r in reports] == ["TOP vs eager (outputs)", "TPU", "TPU", "cmodel", "cmodel"]
    for rep in reports:
        rep.raise_if_failed()
    assert len(reports[1].rows) > 3  # per named tensor, not only outputs
    assert len(reports[3].rows) > 3  # cmodel probes by stable name vs the TPU graph


def test_runs_on_the_cmodel_by_default_and_none_runs_the_tpu_graph():
    from torch_tpu.backend import ProgramModule
    from torch_tpu.cmodel import run_program

    model = Net().eval()
    x = torch.randn(2, 3, 8, 8)
    torch._dynamo.reset()
    got = torch.compile(model, backend="tpu", options={"cache": False})(x)
    c = recent_compiles()[-1]
    assert c.on_cmodel and list(c.programs) == ["tpu_0"] and isinstance(c.runner.tpu_0, ProgramModule)
    prog = c.programs["tpu_0"]
    direct = run_program(prog, {prog.inputs[0].name: x}, kernels="reference")["output0"]
    torch.testing.assert_close(got, direct, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    ref = torch.compile(model, backend="tpu", options={"cache": False, "cmodel": "none"})(x)
    c = recent_compiles()[-1]
    assert not c.programs and c.runner is c.module and not c.on_cmodel
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_partition_without_codegen_runs_the_reference_ops_with_one_report_line(monkeypatch, caplog):
    from torch_tpu.lowering.codegen import driver

    monkeypatch.delitem(driver.HANDLERS, "linear")
    torch._dynamo.reset()
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="torch_tpu"):
        got = torch.compile(model, backend="tpu", options={"cache": False})(x)
    c = recent_compiles()[-1]
    assert not c.on_cmodel and not c.programs and c.cmodel_fallbacks[0].partition == "tpu_0"
    lines = [r.getMessage() for r in caplog.records if "not on the cmodel" in r.getMessage()]
    assert len(lines) == 1 and "tpu.linear" in lines[0] and "'fc'" in lines[0]
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)


def test_int8_through_torch_compile_and_the_one_call_api():
    import torch_tpu
    torch._dynamo.reset()
    model = Net().eval()
    g = torch.Generator().manual_seed(3)
    data = [torch.randn(1, 3, 8, 8, generator=g) for _ in range(16)]
    x = torch.randn(1, 3, 8, 8, generator=g)
    table = torch_tpu.calibrate(model, data, num_samples=16, tune_num=0, example_inputs=(x,), progress=False)
    got = torch.compile(model, backend="tpu", options={"precision": "int8", "calibration_table": table,
                                                       "cache": False})(x)
    c = recent_compiles()[-1]
    assert c.fallbacks == []
    ops = {str(n.target) for m in c.module.modules() if isinstance(m, torch.fx.GraphModule) for n in m.graph.nodes}
    assert any("conv2d_int8" in o for o in ops) and any("quantize_int8" in o for o in ops)
    ref = model(x)
    cos = torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0).item()
    assert cos >= 0.98, cos
    assert c.on_cmodel
    reports = c.check(x)
    for rep in reports:
        rep.raise_if_failed()
    # int8 TPU values are compared with TOP as real numbers (their qparams), the cmodel exactly
    named = reports[1]
    assert len(named.rows) >= 3 and all(r.sim.cosine > 0.9 for r in named.rows)
    assert all(r.ok for r in reports[3].rows) and len(reports[3].rows) >= 3
    # a qtable through the options: exactly the named layer runs in float, on the cmodel too
    from torch_tpu.graph.names import stable_name

    def ops_by_name(compiled):
        return {stable_name(n): str(n.target) for m in compiled.module.modules() if isinstance(m, torch.fx.GraphModule)
                for n in m.graph.nodes if n.op == "call_function" and "tpu." in str(n.target)}

    base = ops_by_name(c)
    torch._dynamo.reset()
    mixed_out = torch.compile(model, backend="tpu", options={"precision": "int8", "calibration_table": table,
                                                             "qtable": {"fc": "F32"}, "cache": False})(x)
    cm = recent_compiles()[-1]
    mixed = ops_by_name(cm)
    assert "_int8" in base["fc"] and "_int8" not in mixed["fc"], (base["fc"], mixed["fc"])
    assert {k for k in base.keys() & mixed.keys() if base[k] != mixed[k]} == {"fc"}
    assert cm.on_cmodel
    assert torch.nn.functional.cosine_similarity(mixed_out.flatten(), ref.flatten(), dim=0).item() >= cos - 1e-3
    torch._dynamo.reset()
    fast = torch_tpu.compile(model, (x,), precision="int8", calibration_data=data, num_samples=16, tune_num=0,
                             cache=False)
    assert len(fast.calibration_table) >= 5
    assert torch.nn.functional.cosine_similarity(fast(x).flatten(), ref.flatten(), dim=0).item() >= 0.98
    torch._dynamo.reset()
    with pytest.raises(ConfigError, match="calibration"):
        torch_tpu.compile(model, (x,), precision="int8")


class MaskAndIds(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)

    def forward(self, ids, x):
        e = self.emb(ids)                     # int64 ids: int32 inside the Program
        return e * 2.0, (x > 0.5)             # a bool mask: uint8 inside the Program


def test_program_io_dtypes_follow_the_model():
    torch._dynamo.reset()
    model = MaskAndIds().eval()
    ids, x = torch.randint(0, 50, (2, 5)), torch.rand(2, 5)
    got = torch.compile(model, backend="tpu", options={"cache": False})(ids, x)
    c = recent_compiles()[-1]
    assert c.on_cmodel, c.cmodel_fallbacks
    ref = model(ids, x)
    assert got[1].dtype == torch.bool and torch.equal(got[1], ref[1])
    torch.testing.assert_close(got[0], ref[0])

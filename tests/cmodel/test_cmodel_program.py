"""Program files: round trip, atomic save, and refusal of bad files with a precise ProgramError."""

import dataclasses
import json
import struct

import numpy as np
import pytest

from torch_tpu.cmodel import isa
from torch_tpu.cmodel.builder import ProgramBuilder
from torch_tpu.cmodel.operands import DdrTensor, DType, LocalTensor
from torch_tpu.cmodel.program import FORMAT_VERSION, MAGIC, Program
from torch_tpu.errors import ProgramError


def small_program() -> Program:
    b = ProgramBuilder("bm1684x", weight_bytes=4096, activation_bytes=8192)
    x = b.input("x", (1, 4, 3, 3), "f32")
    w = b.weight(np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1), "f32")
    t = b.load(x, layer="add")
    wt = b.load(w, layer="add")
    y = b.compute(isa.Eltwise, t.shape, "f32", layer="add", op="add", a=t, b=wt)
    b.output("y", b.store(y, layer="add"), shape=(1, 4, 3, 3))
    return b.build()


def rewrite(path, mutate_header=None, weights=None):
    """Re-write a program file with a changed header (JSON) and/or weights, keeping lengths consistent."""
    data = path.read_bytes()
    _, version, hlen = struct.unpack_from("<8sIQ", data)
    header = json.loads(data[20:20 + hlen])
    w = data[20 + hlen:] if weights is None else weights
    if mutate_header:
        mutate_header(header)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<8sIQ", MAGIC, version, len(raw)) + raw + w)


def test_save_load_round_trip(tmp_path):
    p = small_program()
    path = p.save(tmp_path / "m.tpu")
    q = Program.load(path)
    assert q == p
    assert [f.name for f in tmp_path.iterdir()] == ["m.tpu"]   # no temporary file left behind
    assert path.read_bytes()[:8] == MAGIC


def test_save_is_atomic_when_validation_fails(tmp_path):
    p = small_program()
    path = p.save(tmp_path / "m.tpu")
    before = path.read_bytes()
    bad = dataclasses.replace(p, regions=[])
    with pytest.raises(ProgramError):
        bad.save(path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d[:len(d) - 3], "truncated"),
    (lambda d: d[:15], "truncated"),
    (lambda d: d[:40], "truncated: header"),
    (lambda d: d + b"x", "too long"),
    (lambda d: b"NOTATPU!" + d[8:], "not a torch_tpu program"),
    (lambda d: d[:8] + struct.pack("<I", 99) + d[12:], "format version 99"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum"),
])
def test_corrupt_files_are_refused(tmp_path, corrupt, message):
    path = small_program().save(tmp_path / "m.tpu")
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ProgramError, match=message) as e:
        Program.load(path)
    assert str(path) in str(e.value)


def _set_inst(i, **fields):
    def mutate(h):
        h["instructions"][i].update(fields)
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_set_inst(2, opcode="fft"), r"instruction 2 \(fft\): unknown opcode 'fft'"),
    (_set_inst(0, src={"D": [12200, [1, 4, 3, 3], [36, 9, 3, 1], "f32"]}),
     r"instruction 0 \(dma_load, layer 'add'\): field 'src': DDR bytes \[12200, 12344\) outside every DDR region"),
    (_set_inst(3, dst={"D": [0, [1, 4, 3, 3], [36, 9, 3, 1], "f32"]}), "field 'dst': writes into the weight region"),
    (_set_inst(2, out={"L": [0, 262144, [1, 4, 3, 3], "f32"]}), "field 'out': local bytes .* exceed the lane size"),
    (_set_inst(2, out={"L": [64, 0, [1, 4, 3, 3], "f32"]}), "field 'out': lane 64 outside"),
    (_set_inst(2, deps=[3]), "field 'deps': depends on 3"),
    (_set_inst(3, id=2), "instruction 2 .*duplicate instruction id"),
    (lambda h: h["inputs"][0].update(addr=1 << 40), "input 'x': DDR bytes"),
    (lambda h: h["regions"].append({"name": "extra", "base": 100, "size": 10}), "overlap"),
    (lambda h: h["regions"][1].update(size=8 << 30), "outside the target's DDR"),
    (lambda h: h.update(target="tpu9000"), "unknown target 'tpu9000'"),
    (lambda h: h["inputs"][0].pop("dtype"), "input 'x': missing field 'dtype'"),
])
def test_invalid_programs_are_refused_naming_the_field(tmp_path, mutate, message):
    path = small_program().save(tmp_path / "m.tpu")
    rewrite(path, mutate)
    with pytest.raises(ProgramError, match=message):
        Program.load(path)


def test_program_validate_checks_weights_fit():
    p = small_program()
    with pytest.raises(ProgramError, match="weight bytes do not fit"):
        dataclasses.replace(p, weights=bytes(5000)).validate()


def test_strided_ddr_view_range_is_checked():
    p = small_program()
    view = DdrTensor(4096 + 8192 - 64, (1, 4, 3, 3), (0, 1, 0, 0), DType.F32)   # in range: only 4 elements
    ok = isa.DmaLoad(id=9, src=view, dst=LocalTensor(0, 4096, (1, 4, 3, 3), DType.F32))
    dataclasses.replace(p, instructions=p.instructions + [ok]).validate()
    bad = dataclasses.replace(ok, src=dataclasses.replace(view, strides=(0, 16, 0, 0)))
    with pytest.raises(ProgramError, match="instruction 9 .*field 'src'"):
        dataclasses.replace(p, instructions=p.instructions + [bad]).validate()


def test_text_listing_names_every_instruction():
    text = small_program().to_text()
    lines = text.splitlines()
    assert lines[0].startswith(f"program v{FORMAT_VERSION} target bm1684x")
    assert "input x 1x4x3x3 f32 @0x1000" in text and "output y 1x4x3x3 f32" in text
    inst_lines = [ln for ln in lines if ln.startswith("%")]
    assert len(inst_lines) == 4
    assert inst_lines[2].startswith("%2    eltwise    [add] deps=0,1 op=add a=L(lane 0 @0x0 1x4x3x3 f32)")


def test_probes_round_trip_are_checked_and_read_whole_values_in_debug_runs(tmp_path):
    from torch_tpu.cmodel import run_program
    from torch_tpu.cmodel.program import Probe

    p = small_program()
    out = p.outputs[0]
    x_io = p.inputs[0]
    store_id = p.instructions[-1].id
    # the output, complete after its store; the input, readable before the first instruction
    p.probes = [Probe("add", out.shape, out.dtype, out.addr, store_id), Probe("x", x_io.shape, x_io.dtype, x_io.addr, -1)]
    path = p.save(tmp_path / "m.tpu")
    q = Program.load(path)
    assert q.probes == p.probes
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float32)
    res = run_program(q, {"x": x}, debug=True)
    assert set(res.tensors) == {"add", "x"}
    np.testing.assert_array_equal(res.tensors["x"].numpy(), x)
    np.testing.assert_array_equal(res.tensors["add"].numpy(), res.outputs["y"].numpy())
    # a probe read too early sees the input bytes' old contents, not the value: "after" matters
    q.probes = [Probe("add", out.shape, out.dtype, out.addr, -1)]
    early = run_program(q, {"x": x}, debug=True).tensors["add"]
    assert not np.array_equal(early.numpy(), res.outputs["y"].numpy())
    for bad, message in [(Probe("p", out.shape, out.dtype, out.addr, 999), "not an instruction id"),
                         (Probe("p", (1 << 30,), out.dtype, out.addr, -1), "outside every DDR region")]:
        q.probes = [bad]
        with pytest.raises(ProgramError, match=message):
            q.validate()
    rewrite(path, lambda h: h["probes"][0].update(after="3"))
    with pytest.raises(ProgramError, match="'after' must be int"):
        Program.load(path)

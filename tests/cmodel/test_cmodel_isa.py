"""ISA: every instruction round-trips through encode/decode; bad encodings and bad fields are refused."""

import json

import pytest
from cmodel_testutil import L, sample_instructions

from torch_tpu.cmodel import codec, isa
from torch_tpu.errors import ProgramError
from torch_tpu.targets import get_target

T = get_target("bm1684x")


def test_every_opcode_has_a_sample_and_round_trips():
    insts = sample_instructions()
    assert {i.OPCODE for i in insts} == set(isa.OPCODES)
    for inst in insts:
        inst.check(T)
        data = json.loads(json.dumps(codec.encode(inst)))
        assert codec.decode(data) == inst
    assert codec.loads(codec.dumps(insts)) == insts


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(opcode="fft"), "unknown opcode 'fft'"),
    (lambda d: d.pop("kernel"), "missing field 'kernel'"),
    (lambda d: d.update(color="red"), "unknown field(s) color"),
    (lambda d: d.update(groups="1"), "field 'groups': expected an integer"),
    (lambda d: d.update(kernel=[3]), "field 'kernel': expected 2 values"),
    (lambda d: d.update(x={"L": [0, 0, [1, 4, 8, 8], "f64"]}), "unknown dtype 'f64'"),
    (lambda d: d.update(x={"D": [0, [1, 4, 8, 8], [1, 1, 1, 1], "f32"]}), "expected a LocalTensor"),
])
def test_decode_refuses_bad_encodings(mutate, message):
    data = codec.encode(sample_instructions()[1])
    mutate(data)
    with pytest.raises(ProgramError, match="instruction 1") as e:
        codec.decode(data)
    assert message in str(e.value)


def test_check_names_instruction_and_field():
    conv = sample_instructions()[1]
    bad_w = isa.Conv2d(**{**conv.__dict__, "w": L(0, 1024, (1, 8, 1, 35))})
    with pytest.raises(ProgramError, match=r"instruction 1 \(conv2d, layer 'conv'\): field 'w'"):
        bad_w.check(T)
    past_lane = isa.Conv2d(**{**conv.__dict__, "out": L(0, T.local_mem_bytes - 64, (1, 8, 8, 8))})
    with pytest.raises(ProgramError, match="field 'out': local bytes .* exceed the lane size"):
        past_lane.check(T)
    misaligned = isa.Conv2d(**{**conv.__dict__, "x": L(0, 32, (1, 4, 8, 8))})
    with pytest.raises(ProgramError, match="field 'x': local address 32"):
        misaligned.check(T)
    int_div = isa.Eltwise(id=5, op="div", a=L(0, 0, (1, 1, 1, 4), "int32"), scalar=2,
                          out=L(0, 64, (1, 1, 1, 4), "int32"))
    with pytest.raises(ProgramError, match="div is a float op"):
        int_div.check(T)
    mixed = isa.Eltwise(id=6, op="add", a=L(0, 0, (1, 1, 1, 4), "int32"), b=L(0, 64, (1, 1, 1, 4)),
                        out=L(0, 128, (1, 1, 1, 4)))
    with pytest.raises(ProgramError, match="mixes float and integer"):
        mixed.check(T)


def test_local_layout_wraps_lanes():
    t = L(60, 0, (2, 10, 3, 3), "f16")   # channels on lanes 60..63 then 0..5 (group 1)
    assert t.groups(T) == 2
    assert t.cstride(T) == 64            # 18 bytes aligned to 64
    assert t.bytes_per_lane(T) == 2 * 2 * 64

"""compare / select / gather: the C kernels against the torch reference (bit-exact: nothing is rounded), the
reference against plain torch, and the field checks of the three instructions."""

import re

import numpy as np
import pytest
import torch
from cmodel_testutil import L, rand

from torch_tpu.cmodel import isa, kernels_c, kernels_ref
from torch_tpu.cmodel.kernels_ref import to_torch
from torch_tpu.cmodel.operands import DType
from torch_tpu.cmodel.timing import instruction_cost
from torch_tpu.errors import ProgramError
from torch_tpu.targets import get_target

T = get_target("bm1684x")


def _both(inst, ops):
    want = kernels_ref.KERNELS[inst.OPCODE](inst, ops)
    got = kernels_c.KERNELS[inst.OPCODE](inst, ops)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    return want


@pytest.mark.parametrize("dt", ["f32", "bf16", "f16", "int8", "int32", "uint8"])
@pytest.mark.parametrize("op", isa.COMPARE_OPS)
def test_compare_broadcast(op, dt):
    g = torch.Generator().manual_seed(1)
    d = DType.parse(dt)
    a = rand((2, 3, 4, 5), d, g, lo=-3, hi=4)
    b = rand((1, 3, 1, 5), d, g, lo=-3, hi=4)
    a.reshape(-1)[:5] = b.reshape(-1)[:5]  # some equal pairs
    inst = isa.Compare(id=0, op=op, a=L(0, 0, a.shape, dt), b=L(0, 0, b.shape, dt), out=L(0, 0, a.shape, "uint8"))
    inst.check(T)
    got = _both(inst, [a, b])
    fn = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}[op]
    want = fn(to_torch(a, d).double(), to_torch(b, d).double())
    assert torch.equal(torch.from_numpy(got).bool(), want)


@pytest.mark.parametrize("scalar", [0.0, 0.5, float("-inf"), 1e40])
@pytest.mark.parametrize("dt", ["f32", "bf16", "uint8"])
def test_compare_scalar(dt, scalar):
    g = torch.Generator().manual_seed(2)
    d = DType.parse(dt)
    a = rand((1, 70, 3, 3), d, g, lo=0, hi=2)
    if d.is_float:
        a.reshape(-1)[:3] = kernels_ref.from_torch(torch.tensor([float("-inf"), float("nan"), 0.5]), d)
    for op in isa.COMPARE_OPS:
        inst = isa.Compare(id=0, op=op, a=L(0, 0, a.shape, dt), scalar=scalar, out=L(0, 0, a.shape, "uint8"))
        got = _both(inst, [a, None])
        x = to_torch(a, d).float() if d.is_float else to_torch(a, d).double()
        fn = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}[op]
        assert torch.equal(torch.from_numpy(got).bool(), fn(x, torch.tensor(scalar, dtype=x.dtype)))


@pytest.mark.parametrize("dt", ["f32", "bf16", "int8"])
def test_select_broadcast(dt):
    g = torch.Generator().manual_seed(3)
    d = DType.parse(dt)
    cond = rand((2, 1, 4, 5), DType.UINT8, g, lo=0, hi=2)
    a, b = rand((2, 3, 4, 5), d, g), rand((1, 3, 1, 1), d, g)
    inst = isa.Select(id=0, cond=L(0, 0, cond.shape, "uint8"), a=L(0, 0, a.shape, dt), b=L(0, 0, b.shape, dt),
                      out=L(0, 0, a.shape, dt))
    inst.check(T)
    got = _both(inst, [cond, a, b])
    want = torch.where(torch.from_numpy(cond).bool(), to_torch(a, d), to_torch(b, d))
    assert torch.equal(to_torch(got, d), want)


@pytest.mark.parametrize("with_prev", [False, True])
@pytest.mark.parametrize("dt", ["f32", "bf16", "int8"])
def test_gather_block(dt, with_prev):
    g = torch.Generator().manual_seed(4)
    d = DType.parse(dt)
    table = rand((1, 70, 1, 6), d, g)
    index = np.array([0, 64, 100, 133, 65, -1, 70, 99], dtype=np.int32).reshape(2, 4, 1, 1)
    prev = rand((2, 4, 1, 6), d, g) if with_prev else None
    inst = isa.Gather(id=0, table=L(0, 0, table.shape, dt), index=L(0, 0, index.shape, "int32"),
                      prev=L(0, 0, prev.shape, dt) if with_prev else None, out=L(0, 0, (2, 4, 1, 6), dt), base=64)
    inst.check(T)
    got = to_torch(_both(inst, [table, index, prev]), d).reshape(8, 6)
    rows = to_torch(table, d).reshape(70, 6)
    fallback = to_torch(prev, d).reshape(8, 6) if with_prev else torch.zeros(8, 6, dtype=rows.dtype)
    for i, v in enumerate(index.reshape(-1).tolist()):
        want = rows[v - 64] if 0 <= v - 64 < 70 else fallback[i]
        assert torch.equal(got[i], want), i


def test_gather_blocks_compose_to_embedding():
    """Two table blocks, the second given the first's output as prev: the full lookup."""
    g = torch.Generator().manual_seed(5)
    table = rand((1, 100, 1, 4), DType.F32, g)
    index = np.array([3, 99, 50, 49, 0], dtype=np.int32).reshape(1, 5, 1, 1)
    out = None
    for v0, v1 in ((0, 50), (50, 100)):
        blk = np.ascontiguousarray(table[:, v0:v1])
        inst = isa.Gather(id=0, table=L(0, 0, blk.shape), index=L(0, 0, index.shape, "int32"),
                          prev=L(0, 0, (1, 5, 1, 4)) if out is not None else None, out=L(0, 0, (1, 5, 1, 4)), base=v0)
        out = _both(inst, [blk, index, out])
    assert np.array_equal(out.reshape(5, 4), table.reshape(100, 4)[index.reshape(-1)])


def test_field_checks():
    f = lambda shape, dt="f32": L(0, 0, shape, dt)  # noqa: E731
    bad = [
        (isa.Compare(id=0, op="eq", a=f((1, 2, 3, 4)), out=f((1, 2, 3, 4))), "mask is uint8"),
        (isa.Compare(id=0, op="approx", a=f((1, 2, 3, 4)), out=f((1, 2, 3, 4), "uint8")), "unknown comparison"),
        (isa.Compare(id=0, op="eq", a=f((1, 2, 3, 4)), b=f((1, 2, 3, 4), "int8"), out=f((1, 2, 3, 4), "uint8")),
         "mixes float and integer"),
        (isa.Select(id=0, cond=f((1, 2, 3, 4)), a=f((1, 2, 3, 4)), b=f((1, 2, 3, 4)), out=f((1, 2, 3, 4))),
         "uint8 mask"),
        (isa.Select(id=0, cond=f((1, 2, 3, 4), "uint8"), a=f((1, 2, 3, 4)), b=f((1, 2, 3, 4), "bf16"),
                    out=f((1, 2, 3, 4))), "dtype bf16 differs"),
        (isa.Select(id=0, cond=f((1, 2, 3, 4), "uint8"), a=f((1, 2, 3, 2)), b=f((1, 2, 3, 4)), out=f((1, 2, 3, 4))),
         "does not broadcast"),
        (isa.Gather(id=0, table=f((1, 9, 1, 4)), index=f((1, 3, 1, 1)), out=f((1, 3, 1, 4))), "needs int32"),
        (isa.Gather(id=0, table=f((1, 9, 1, 5)), index=f((1, 3, 1, 1), "int32"), out=f((1, 3, 1, 4))),
         "expected (1, V, 1, 4)"),
        (isa.Gather(id=0, table=f((1, 9, 1, 4)), index=f((1, 3, 1, 1), "int32"), out=f((1, 3, 1, 4)), base=-1),
         "in [0, 2^31)"),
        (isa.Gather(id=0, table=f((1, 9, 1, 4)), index=f((1, 3, 1, 1), "int32"), out=f((1, 3, 1, 4)),
                    base=2 ** 31), "indices are int32"),
    ]
    for inst, msg in bad:
        with pytest.raises(ProgramError, match=re.escape(msg)):
            inst.check(T)


def test_costs_count_output_elements():
    sel = isa.Select(id=0, cond=L(0, 0, (1, 64, 1, 16), "uint8"), a=L(0, 0, (1, 64, 1, 16)),
                     b=L(0, 0, (1, 64, 1, 16)), out=L(0, 0, (1, 64, 1, 16)))
    big = isa.Select(**{**sel.__dict__, "a": L(0, 0, (1, 128, 1, 16)), "b": L(0, 0, (1, 128, 1, 16)),
                        "cond": L(0, 0, (1, 128, 1, 16), "uint8"), "out": L(0, 0, (1, 128, 1, 16))})
    assert instruction_cost(big, T).cycles > instruction_cost(sel, T).cycles > 0

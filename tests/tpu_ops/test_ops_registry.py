"""The op set registry: every op is a torch.library custom op in namespace tpu; duplicates and unknown
names are precise errors; every op has a docstring."""

import pytest
import torch

from torch_tpu.errors import TorchTpuError
from torch_tpu.tpu_ops import define_all, is_tpu_op, op_defs, tpu_op
from torch_tpu.tpu_ops import registry


def test_every_op_registered_with_schema_and_doc():
    ops = define_all()
    assert len(ops) == len(op_defs()) >= 60
    for name, op in ops.items():
        assert op is getattr(torch.ops.tpu, name).default and is_tpu_op(op)
        assert op._schema.name == f"tpu::{name}"
        assert op_defs()[name].impl.__doc__, name
    for needed in ("conv2d", "linear", "matmul", "add", "mul_const", "relu", "gelu", "softmax", "layer_norm",
                   "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "reduce_mean", "reshape", "permute",
                   "concat", "slice", "pad", "upsample_nearest2d", "upsample_bilinear2d", "embedding", "cast"):
        assert needed in ops


def test_unknown_and_duplicate_names(monkeypatch):
    with pytest.raises(TorchTpuError, match="no op tpu::nope"):
        tpu_op("nope")
    from torch_tpu.tpu_ops import activation
    monkeypatch.setattr(activation, "OPS", activation.OPS + (activation.OPS[0],))
    with pytest.raises(TorchTpuError, match="activation.py: op tpu::relu is defined twice"):
        registry.op_defs()

"""The TPU op set: ``torch.ops.tpu.*`` custom ops with reference semantics (see ``registry.py``).

Importing this package registers the ops (:func:`define_all`, idempotent).
"""

from torch_tpu.tpu_ops.registry import define_all, is_tpu_op, op_defs, tpu_op

define_all()

__all__ = ["define_all", "is_tpu_op", "op_defs", "tpu_op"]

"""torch_tpu: a TPU-MLIR-style NPU compiler on PyTorch's own stack (see docs/ and ../shared/DESIGN.md)."""

__version__ = "0.1.0"

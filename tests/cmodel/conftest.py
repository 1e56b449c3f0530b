"""cmodel tests: Triton runs in its interpreter on CPU; the flag must be set before triton decorates."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

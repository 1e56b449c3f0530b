"""Build of the cmodel C extension (``torch_tpu.cmodel._cmodel``); metadata lives in pyproject.toml.

Plain C99 through the Python C API (no torch headers). SIMD kernels are compiled per function with
``__attribute__((target(...)))`` and chosen at run time, so one build runs on any x86-64 CPU.
"""

import sys

from setuptools import Extension, setup

_ARGS = ["-O3", "-std=c99", "-fno-strict-aliasing", "-Wall", "-Wno-unused-parameter"]
_THREADS = ["-pthread"]  # the kernels' worker pool (csrc/threads.c); Windows builds run serially
if sys.platform == "win32":
    _ARGS, _THREADS = ["/O2"], []

setup(
    ext_modules=[
        Extension(
            "torch_tpu.cmodel._cmodel",
            sources=[f"torch_tpu/cmodel/csrc/{name}.c"
                     for name in ("module", "kernels", "gemm", "convert", "kernels_misc", "threads")],
            depends=[f"torch_tpu/cmodel/csrc/{name}.h" for name in ("common", "kernels", "threads")],
            extra_compile_args=_ARGS + _THREADS,
            extra_link_args=_THREADS,
            libraries=[] if sys.platform == "win32" else ["m"],
        )
    ]
)

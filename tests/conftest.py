"""Shared test set-up: deterministic seeds, a private compile cache, small thread counts (2-core CI)."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    os.environ["TORCH_TPU_CACHE_DIR"] = str(tmp_path_factory.mktemp("tpu_cache"))
    yield


def pytest_configure(config):
    # pytest-xdist runs 2 workers on 2 cores: one intra-op thread each.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)

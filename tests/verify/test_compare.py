import math

import numpy as np
import pytest
import torch

from torch_tpu.errors import VerificationError
from torch_tpu.verify import compare, similarity


def test_metrics_against_numpy():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1000, generator=g)
    b = a + 0.01 * torch.randn(1000, generator=g)
    s = similarity(a, b)
    an, bn = a.double().numpy(), b.double().numpy()
    assert s.cosine == pytest.approx(np.dot(an, bn) / np.linalg.norm(an) / np.linalg.norm(bn), rel=1e-12)
    assert s.euclidean == pytest.approx(1 - np.linalg.norm(an - bn) / np.linalg.norm((an + bn) / 2), rel=1e-12)
    assert s.sqnr_db == pytest.approx(10 * math.log10((an ** 2).sum() / ((an - bn) ** 2).sum()), rel=1e-12)
    assert s.max_abs == pytest.approx(np.abs(an - bn).max())


def test_identical_and_zero_tensors():
    z = torch.zeros(4)
    s = similarity(z, z)
    assert (s.cosine, s.euclidean, s.sqnr_db, s.max_abs) == (1.0, 1.0, math.inf, 0.0)
    assert similarity(torch.ones(3), -torch.ones(3)).cosine == pytest.approx(-1.0)


def test_report_names_first_failure_in_graph_order():
    a = {"conv1": torch.ones(8), "relu": torch.arange(8.0), "fc": torch.arange(8.0)}
    b = {"conv1": torch.ones(8), "relu": -torch.arange(8.0), "fc": torch.zeros(8)}
    rep = compare(a, b, tolerance=(0.99, 0.9))
    assert not rep.ok and rep.first_failure.name == "relu"
    assert "FAIL at 'relu'" in rep.table()
    with pytest.raises(VerificationError, match="'relu'"):
        rep.raise_if_failed()


def test_shape_mismatch_and_integers_are_strict():
    rep = compare({"a": torch.ones(2, 3), "i": torch.tensor([1, 2, 3])},
                  {"a": torch.ones(4), "i": torch.tensor([1, 2, 4])}, tolerance=(0.5, 0.5))
    assert [r.ok for r in rep.rows] == [False, False]

"""Embedding rule: repeated ids summed before squaring, padding_idx rows skipped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vigor_service.engine.errors import UnsupportedModelError
from vigor_service.engine.norms.registry import rule_for

from .oracle import autograd_sq_norms, padded_batch, rule_sq_norms


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_matches_autograd(padding_idx):
    torch.manual_seed(0)
    module = nn.Embedding(6, 5, padding_idx=padding_idx, dtype=torch.float64)
    lengths = (7, 3, 5)
    grad, mask = padded_batch(lengths, 5, seed=1)
    # Few ids, so rows repeat within a sample; id 2 (padding_idx) occurs inside sequences.
    ids = torch.tensor([[2, 1, 1, 2, 4, 1, 0], [3, 2, 3, 0, 0, 0, 0], [5, 5, 2, 5, 0, 0, 0]])
    got = rule_sq_norms(module, ids, grad, mask)
    torch.testing.assert_close(got, autograd_sq_norms(module, ids, grad, mask), rtol=1e-12, atol=0)


def test_ignoring_padding_idx_would_be_wrong():
    module = nn.Embedding(4, 3, padding_idx=1, dtype=torch.float64)
    ids = torch.tensor([[1, 0, 1]])
    grad, mask = padded_batch((3,), 3, seed=2)
    got = rule_sq_norms(module, ids, grad, mask)
    no_pad = rule_sq_norms(nn.Embedding(4, 3, dtype=torch.float64), ids, grad, mask)
    assert float(got[0]) == pytest.approx(float(grad[0, 1].pow(2).sum()))
    assert float(no_pad[0]) > float(got[0])


@pytest.mark.parametrize("kw", [{"max_norm": 1.0}, {"scale_grad_by_freq": True}])
def test_batch_dependent_embeddings_refused(kw):
    module = nn.Embedding(4, 3, **kw)
    with pytest.raises(UnsupportedModelError):
        rule_for(module).check(module)

"""GPT-2 Conv1D rule (weight stored as d_in × d_out)."""

from __future__ import annotations

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from .oracle import autograd_sq_norms, padded_batch, rule_sq_norms


@pytest.mark.parametrize("form", ["auto", "ghost", "direct"])
@pytest.mark.parametrize(("lengths", "nx", "nf"), [((5, 2, 4), 6, 9), ((8, 3), 2, 3)])
def test_conv1d_matches_autograd(form, lengths, nx, nf):
    torch.manual_seed(0)
    module = Conv1D(nf, nx).double()
    with torch.no_grad():
        module.bias.normal_()
    x, mask = padded_batch(lengths, nx, seed=1)
    grad, _ = padded_batch(lengths, nf, seed=2)
    got = rule_sq_norms(module, x, grad, mask, force=form)
    torch.testing.assert_close(got, autograd_sq_norms(module, x, grad, mask), rtol=1e-12, atol=0)

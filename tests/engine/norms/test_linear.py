"""Linear rule: ghost and direct forms, bias, padding, extra token dims, form choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vigor_service.engine.norms.linear import choose_form

from .oracle import autograd_sq_norms, padded_batch, rule_sq_norms

SHAPES = [  # lengths, d_in, d_out, extra token dims
    ((5, 3, 1), 4, 6, ()),
    ((9, 2), 3, 2, ()),  # more positions than features: auto picks direct
    ((4, 4), 7, 5, ()),  # nothing padded
    ((3, 6), 4, 3, (2,)),  # (batch, positions, heads, features), as per-head modules see it
    ((70, 33, 5), 90, 80, ()),  # long enough for the Gram to be built in symmetric blocks
]


@pytest.mark.parametrize(("lengths", "d_in", "d_out", "extra"), SHAPES)
@pytest.mark.parametrize("form", ["auto", "ghost", "direct"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_autograd(lengths, d_in, d_out, extra, form, bias):
    torch.manual_seed(0)
    module = nn.Linear(d_in, d_out, bias=bias, dtype=torch.float64)
    x, mask = padded_batch(lengths, d_in, extra=extra, seed=1)
    grad, _ = padded_batch(lengths, d_out, extra=extra, seed=2)
    got = rule_sq_norms(module, x, grad, mask, force=form)
    want = autograd_sq_norms(module, x, grad, mask)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_only_scored_parameters_counted():
    module = nn.Linear(4, 3, dtype=torch.float64)
    x, mask = padded_batch((3, 2), 4, seed=3)
    grad, _ = padded_batch((3, 2), 3, seed=4)
    for names in (["weight"], ["bias"]):
        got = rule_sq_norms(module, x, grad, mask, scored=names)
        torch.testing.assert_close(got, autograd_sq_norms(module, x, grad, mask, scored=names))


def test_float32_rule_accumulates_well():
    module = nn.Linear(64, 48)
    x, mask = padded_batch((40, 17), 64, dtype=torch.float32, seed=5)
    grad, _ = padded_batch((40, 17), 48, dtype=torch.float32, seed=6)
    want = autograd_sq_norms(module.double(), x.double(), grad.double(), mask)
    module.float()
    for form in ("ghost", "direct"):
        got = rule_sq_norms(module, x, grad, mask, force=form, acc=torch.float32)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    ("n", "d_in", "d_out", "cached", "want"),
    [
        (10, 64, 64, False, "ghost"),  # 10·128 < 4096
        (40, 64, 64, False, "direct"),  # 40·128 > 4096 (one block: 40 < 2·MIN_SPLIT)
        (20, 64, 16, False, "direct"),  # k/v-sized, no shared Gram: 20·80 > 1024
        (20, 64, 16, True, "ghost"),  # the same with q's Gram already there: n < d_in
        (70, 64, 16, True, "ghost"),  # two blocks: (3/4)·70 < 64
        (90, 64, 16, True, "direct"),
        (300, 576, 576, False, "ghost"),  # three blocks: (2/3)·300·1152 < 576²
        (300, 576, 576, True, "ghost"),
        (450, 576, 576, False, "direct"),
    ],
)
def test_form_choice(n, d_in, d_out, cached, want):
    assert choose_form(n, d_in, d_out, cached, "auto") == want
    assert choose_form(n, d_in, d_out, cached, "direct") == "direct"


@pytest.mark.parametrize("form", ["ghost", "direct"])
def test_relaxed_mode_ignores_finite_padding_and_flags_non_finite(form):
    # Outside strict mode the output-gradient side is not zeroed (the input side is): finite
    # values there cannot change the result, and NaN turns it into NaN, never a wrong number.
    module = nn.Linear(5, 4, bias=False, dtype=torch.float64)
    x, mask = padded_batch((6, 2), 5, seed=7)
    grad, _ = padded_batch((6, 2), 4, seed=8)
    want = autograd_sq_norms(module, x, grad, mask)
    finite = grad.nan_to_num(nan=123.0)
    got = rule_sq_norms(module, x, finite, mask, force=form, strict=False)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got = rule_sq_norms(module, x, grad, mask, force=form, strict=False)
    assert torch.isnan(got[1]) and torch.isfinite(got[0])

"""Per-layer oracle: each sample's squared gradient norm by autograd on that sample alone."""

from __future__ import annotations

import torch

from vigor_service.engine.norms.gram import GramCache
from vigor_service.engine.norms.registry import CallContext, rule_for


def padded_batch(lengths, width, dtype=torch.float64, extra=(), seed=0):
    """(B, L, *extra, width) random rows, NaN past each length; and the (B, L) mask."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = len(lengths), max(lengths)
    x = torch.randn(batch, length, *extra, width, generator=gen, dtype=torch.float64).to(dtype)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    x[~mask] = float("nan")  # the rules must zero padding, not trust it
    return x, mask


def rule_sq_norms(module, x, grad, mask, scored=None, force="auto", acc=torch.float64, strict=True):
    rule = rule_for(module)
    ctx = CallContext(None if bool(mask.all()) else mask, acc, GramCache(), force, strict)
    names = frozenset(scored or [n for n, _ in module.named_parameters()])
    with torch.no_grad():
        saved = rule.capture(module, x, ctx)
        return rule.sq_norms(module, saved, grad, ctx, names)


def autograd_sq_norms(module, x, grad, mask, scored=None):
    names = scored or [n for n, _ in module.named_parameters()]
    params = [p for n, p in module.named_parameters() if n in names]
    out = []
    for i in range(x.shape[0]):
        keep = mask[i]
        y = module(x[i, keep].unsqueeze(0))
        loss = (y * grad[i, keep].unsqueeze(0)).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        out.append(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))
    return torch.tensor(out, dtype=torch.float64)

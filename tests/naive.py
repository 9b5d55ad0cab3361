"""Deliberately naive float64 VIGOR oracle used by the exactness tests.

It shares no code with the service: an explicit per-token NLL loop, `.backward()` into `.grad`
buffers, one flattened concatenation of every gradient, and an O(G²) rank count.
"""

from __future__ import annotations

import copy
import math

import torch


def naive_grad_norm(model, prompt_ids, completion_ids, *, lora_only=None, select=None):
    """‖∇θ (1/T) Σ_t −log p(y_t | x, y_<t)‖₂ in float64, or None when T = 0.

    `select(name)`, when given, picks the scored parameters by name instead.
    """
    if len(completion_ids) == 0:
        return None
    m = copy.deepcopy(model).to(torch.float64)
    m.eval()
    names = [n for n, _ in m.named_parameters()]
    if lora_only is None:
        lora_only = any("lora" in n for n in names)
    scored = [p for n, p in m.named_parameters() if ("lora" in n) or not lora_only]
    if select is not None:
        scored = [p for n, p in m.named_parameters() if select(n)]
    for p in m.parameters():
        p.requires_grad_(False)
    for p in scored:
        p.requires_grad_(True)
        p.grad = None
    ids = list(prompt_ids) + list(completion_ids)
    x = torch.tensor([ids])
    logits = m(input_ids=x, position_ids=torch.arange(len(ids)).unsqueeze(0)).logits[0]
    total = torch.zeros((), dtype=torch.float64)
    for t, tok in enumerate(completion_ids):
        row = logits[len(prompt_ids) - 1 + t]
        total = total - (row[tok] - torch.logsumexp(row, dim=0))
    loss = total / len(completion_ids)
    loss.backward()
    flat = torch.cat([p.grad.reshape(-1) for p in scored if p.grad is not None])
    return math.sqrt(float((flat * flat).sum()))


def naive_score(grad_norm, num_tokens):
    return None if grad_norm is None else -grad_norm * math.sqrt(num_tokens)


def naive_rank_rewards(scores):
    """Rank rewards in [−1, 1]; None scores rank below every valid one, ties go by position."""
    g = len(scores)
    if g == 1:
        return [0.0]

    def below(j, i):  # does member j rank below member i?
        sj, si = scores[j], scores[i]
        if (sj is None) != (si is None):
            return sj is None
        if sj is not None and sj != si:
            return sj < si
        return j < i

    ranks = [sum(1 for j in range(g) if j != i and below(j, i)) for i in range(g)]
    return [2.0 * r / (g - 1) - 1.0 for r in ranks]


def naive_entropy_and_p_norm(model, prompt_ids, completion_ids):
    """(mean token entropy, mean token probability) of the completion in float64, at temperature
    1; (None, None) when T = 0. One position at a time, from a plain forward."""
    if len(completion_ids) == 0:
        return None, None
    m = copy.deepcopy(model).to(torch.float64).eval()
    ids = list(prompt_ids) + list(completion_ids)
    with torch.no_grad():
        logits = m(input_ids=torch.tensor([ids]), position_ids=torch.arange(len(ids))[None]).logits
    entropies, probs = [], []
    for t, tok in enumerate(completion_ids):
        row = logits[0, len(prompt_ids) - 1 + t]
        logp = row - torch.logsumexp(row, dim=0)
        entropies.append(float(-(logp.exp() * logp).sum()))
        probs.append(math.exp(float(logp[tok])))
    return sum(entropies) / len(entropies), sum(probs) / len(probs)


def naive_focal(scores, entropies, p_norms, metric, lam, target):
    """The reference trainer's focal weighting of one group's raw scores, written out from its
    description: entropy base = max(H + 1e-6, 1e-6), kept only where base < target (else 1);
    p_norm base = max(1 − p, 1e-6) only where p > target (else 1); score × base ** λ."""
    out = []
    for s, h, p in zip(scores, entropies, p_norms, strict=True):
        if s is None:
            out.append(None)
            continue
        if metric == "entropy":
            base = max(h + 1e-6, 1e-6)
            if target is not None and not (base < target):
                base = 1.0
        else:
            base = max(1.0 - p, 1e-6) if p > target else 1.0
        out.append(s * base**lam)
    return out

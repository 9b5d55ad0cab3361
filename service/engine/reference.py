"""The reference engine: one forward and one backward per completion, full gradient materialized.

Slow but plainly correct; it is what the batched engine is checked against in production (the
`--engine loop` option) and what serves models whose layers the batched engine has no rule for.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..errors import InputProblem, InvalidInputError
from .signals import accumulation_dtype, compute_signals
from .types import SequenceScore, Sketch, TokenSequence


@contextlib.contextmanager
def only_these_require_grad(
    model: torch.nn.Module, params: list[torch.nn.Parameter]
) -> Iterator[None]:
    """Make exactly `params` require grad for the duration, then restore every flag."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    wanted = {id(p) for p in params}
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in wanted)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def completion_logits(
    model: torch.nn.Module, seq: TokenSequence, device: torch.device
) -> torch.Tensor:
    """Logits predicting each completion token (T × V), with positions 0..n−1 of this sequence."""
    ids = torch.tensor([list(seq.prompt_ids) + list(seq.completion_ids)], device=device)
    n = ids.shape[1]
    positions = torch.arange(n, device=device).unsqueeze(0)
    out = model(input_ids=ids, position_ids=positions, use_cache=False)
    start = len(seq.prompt_ids) - 1
    return out.logits[0, start : n - 1]


class ReferenceEngine:
    """Per-completion loop; exact by construction."""

    name = "loop"

    def score(
        self,
        model: torch.nn.Module,
        params: list[torch.nn.Parameter],
        sequences: list[TokenSequence],
        *,
        signals: tuple[str, ...] = (),
        temperature: float = 1.0,
        estimator: Sketch | None = None,
    ) -> list[SequenceScore]:
        if estimator is not None:
            # The request path refuses this before it queues; never answer exact for a sketch.
            raise InvalidInputError(
                [
                    InputProblem(
                        "estimator",
                        "the loop engine computes exact norms only; the sketch estimator "
                        "needs --engine batched",
                    )
                ]
            )
        device = next(model.parameters()).device
        results = []
        with only_these_require_grad(model, params), torch.enable_grad():
            for seq in sequences:
                results.append(self._score_one(model, params, seq, device, signals, temperature))
        return results

    def _score_one(self, model, params, seq, device, signals, temperature) -> SequenceScore:
        if seq.num_tokens == 0:
            return SequenceScore(None, 0, dict.fromkeys(signals))
        logits = completion_logits(model, seq, device)
        targets = torch.tensor(seq.completion_ids, device=device)
        loss = F.cross_entropy(logits.to(accumulation_dtype(logits.dtype)), targets)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        # Sum of squares in float64 whatever the model dtype: the reference's bf16 sum is noisy.
        sq = sum(g.to(torch.float64).pow(2).sum().item() for g in grads if g is not None)
        return SequenceScore(
            grad_norm=math.sqrt(sq),
            num_tokens=seq.num_tokens,
            signals=compute_signals(logits, targets, signals, temperature),
        )

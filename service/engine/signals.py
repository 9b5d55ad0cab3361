"""Cheap intrinsic signals read off the completion-position logits of the scoring forward pass.

Each function takes one sequence's logits at its completion positions (T × V, already divided by
the temperature) and its target ids (T) and returns a float. They are used by every engine so
that both report the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vigor_client.wire import SIGNAL_NAMES


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, the dtype itself when it is already float32 or float64."""
    return torch.promote_types(dtype, torch.float32)


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def logprob_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return _token_logprobs(logits, targets).sum().item()


def logprob_mean(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return _token_logprobs(logits, targets).mean().item()


def prob_mean(logits: torch.Tensor, targets: torch.Tensor) -> float:
    # The reference's `p_norm`: the arithmetic mean of the target tokens' probabilities.
    return _token_logprobs(logits, targets).exp().mean().item()


def perplexity(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return math.exp(-logprob_mean(logits, targets))  # OverflowError at tiny temperatures


def entropy_mean(logits: torch.Tensor, targets: torch.Tensor) -> float:
    logp = torch.log_softmax(logits, dim=-1)
    return (-(logp.exp() * logp).sum(-1)).mean().item()


def self_certainty(logits: torch.Tensor, targets: torch.Tensor) -> float:
    # INTUITOR: mean over positions of KL(uniform ‖ p_t) = logsumexp(l) − mean(l) − log|V|.
    vocab = logits.shape[-1]
    kl = torch.logsumexp(logits, dim=-1) - logits.mean(dim=-1) - math.log(vocab)
    return kl.mean().item()


SIGNALS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "logprob_sum": logprob_sum,
    "logprob_mean": logprob_mean,
    "entropy_mean": entropy_mean,
    "self_certainty": self_certainty,
    "perplexity": perplexity,
    "prob_mean": prob_mean,
}
# The wire format lists the signals a request may ask for; each needs its computation here.
if set(SIGNALS) != set(SIGNAL_NAMES):
    raise ImportError(f"signals {sorted(SIGNALS)} != the wire format's {sorted(SIGNAL_NAMES)}")


def compute_signals(
    logits: torch.Tensor, targets: torch.Tensor, names: tuple[str, ...], temperature: float
) -> dict[str, float | None]:
    """Signals for one sequence; logits are upcast to float32 or better before any maths.

    A signal that does not come out as a finite number (an extreme temperature overflows) is
    None, for the response to give its reason: it never fails the sequence or its batch.
    """
    if not names:
        return {}
    if logits.shape[0] == 0:
        return dict.fromkeys(names)
    scaled = logits.detach().to(accumulation_dtype(logits.dtype)) / temperature
    return {name: _finite_or_none(SIGNALS[name], scaled, targets) for name in names}


def _finite_or_none(fn, logits: torch.Tensor, targets: torch.Tensor) -> float | None:
    try:
        value = fn(logits, targets)
    except ArithmeticError:
        return None
    return value if math.isfinite(value) else None

"""A rewards request, from validated groups to the response: tokenize, score, shape."""

from __future__ import annotations

import math

from vigor_client.schema import GroupResult, RewardSpec, RewardsRequest, RewardsResponse
from vigor_client.variants import PLAIN, variant_score

from ..engine.types import SequenceScore, TokenSequence
from .shaping import shape

EMPTY = "empty_completion"
NON_FINITE = "non_finite_gradient"
NON_FINITE_SIGNAL = "non_finite_signal"


def vigor_score(result: SequenceScore) -> tuple[float | None, str | None]:
    """The raw VIGOR score −‖∇θ L‖₂·√T, or None with the reason there is none."""
    if result.grad_norm is None or result.num_tokens == 0:
        return None, EMPTY
    if not math.isfinite(result.grad_norm):
        return None, NON_FINITE
    return -result.grad_norm * math.sqrt(result.num_tokens), None


def build_response(
    model: str,
    version: int,
    request: RewardsRequest,
    groups: list[list[TokenSequence]],
    results: list[SequenceScore],
) -> RewardsResponse:
    """Scores, rewards and signals per group from the engine's per-sequence results.

    `scores` are the request's variant's (the plain VIGOR score unless it names another), the
    values that are ranked, or returned as rewards with shaping "none"; `grad_norms` stay raw.
    """
    spec = request.reward_spec if isinstance(request.reward_spec, RewardSpec) else PLAIN
    flat = sum(len(g) for g in groups)
    if len(results) != flat:
        raise RuntimeError(f"engine returned {len(results)} results for {flat} sequences")
    out, k = [], 0
    for group, seqs in zip(request.groups, groups, strict=True):
        mine = results[k : k + len(seqs)]
        k += len(seqs)
        scored = [_variant(spec, r) for r in mine]
        scores = [s for s, _ in scored]
        grad_norms = [
            r.grad_norm if r.grad_norm is not None and math.isfinite(r.grad_norm) else None
            for r in mine
        ]
        signals = None
        if request.signals:
            signals = {
                name: [_finite(r.signals.get(name)) for r in mine] for name in request.signals
            }
        reasons = [reason for _, reason in scored]
        out.append(
            GroupResult(
                id=group.id,
                rewards=shape(scores, request.shaping),
                scores=scores,
                grad_norms=grad_norms,
                num_tokens=[r.num_tokens for r in mine],
                reasons=reasons,
                signals=signals,
                signal_reasons=signal_reasons(signals, [r.num_tokens for r in mine], reasons),
            )
        )
    return RewardsResponse(
        model=model, weight_version=version, groups=out, reward_spec=spec,
        estimator=request.estimator,
    )  # fmt: skip


def _variant(spec: RewardSpec, result: SequenceScore) -> tuple[float | None, str | None]:
    raw, reason = vigor_score(result)
    if raw is None or spec is PLAIN:
        return raw, reason
    return variant_score(spec, raw, result.num_tokens, result.signals)


def signal_reason(value: float | None, num_tokens: int, score_reason: str | None) -> str | None:
    if value is not None:
        return None
    if num_tokens == 0:
        return EMPTY
    if score_reason is not None and score_reason != NON_FINITE:
        return score_reason  # never scored at all (e.g. group_incomplete)
    return NON_FINITE_SIGNAL


def signal_reasons(
    signals: dict[str, list[float | None]] | None,
    num_tokens: list[int],
    reasons: list[str | None],
) -> dict[str, list[str | None]] | None:
    """Each null signal's reason, beside `signals`; None when no signal was asked for."""
    if signals is None:
        return None
    return {
        name: [signal_reason(v, n, r) for v, n, r in zip(values, num_tokens, reasons, strict=True)]
        for name, values in signals.items()
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None

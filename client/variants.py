"""The reward variants' arithmetic, defined once: the server applies it to what its scoring pass
yields, and `vigor-eval` applies it to the scores it recorded, so an evaluated spec and a served
one compute the same numbers. Pure Python (the client stays torch-free).

Order of operations, as the reference trainer (`_generate_and_score_completions`): raw score
−‖∇θ L‖₂·√T → focal weight → (combination) → rank shaping, or the weighted score as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .schema import PLAIN_SPEC_NAME, Focal, RewardSpec

FOCAL_EPS = 1e-6  # the reference's `entropy_eps`: added to the entropy, and the floor of a base
FOCAL_SIGNAL = {"entropy": "entropy_mean", "p_norm": "prob_mean"}
PLAIN = RewardSpec(name=PLAIN_SPEC_NAME)
MISSING_SIGNAL = "non_finite_signal"


def focal_weight(focal: Focal, entropy: float | None, p_norm: float | None) -> float:
    """`base ** lambda` for one completion (1.0 where the target leaves it unweighted)."""
    if focal.metric == "p_norm":
        if p_norm is None:
            raise ValueError("p_norm is missing")
        target = focal.target
        base = max(1.0 - p_norm, FOCAL_EPS) if target is not None and p_norm > target else 1.0
    else:
        if entropy is None:
            raise ValueError("entropy is missing")
        base = max(entropy + FOCAL_EPS, FOCAL_EPS)
        if focal.target is not None and not base < focal.target:
            base = 1.0  # the reference compares base (entropy + eps), not the entropy itself
    return base**focal.lam


def needed_signals(spec: RewardSpec) -> tuple[str, ...]:
    """The same-pass signals (at temperature 1) that computing `spec` reads."""
    names: list[str] = []
    if spec.focal is not None and spec.focal.enabled:
        names.append(FOCAL_SIGNAL[spec.focal.metric])
    for feature in spec.weights or {}:
        if feature not in ("vigor", "num_tokens") and feature not in names:
            names.append(feature)
    return tuple(names)


def variant_score(
    spec: RewardSpec, raw: float | None, num_tokens: int, signals: Mapping[str, float | None]
) -> tuple[float | None, str | None]:
    """The score `spec` gives one completion, from its raw VIGOR score, its token count and its
    signals at temperature 1; or None with why (a raw score's own reason is the caller's)."""
    if raw is None:
        return None, None
    vigor = raw
    focal = spec.focal
    if focal is not None and focal.enabled:
        value = signals.get(FOCAL_SIGNAL[focal.metric])
        if value is None or not math.isfinite(value):
            return None, MISSING_SIGNAL
        vigor = raw * focal_weight(
            focal,
            value if focal.metric == "entropy" else None,
            value if focal.metric == "p_norm" else None,
        )
    if spec.weights is None:
        return (vigor, None) if math.isfinite(vigor) else (None, MISSING_SIGNAL)
    total = 0.0
    for feature, weight in spec.weights.items():
        if feature == "vigor":
            value = vigor
        elif feature == "num_tokens":
            value = float(num_tokens)
        else:
            value = signals.get(feature)
        if value is None or not math.isfinite(value):
            return None, MISSING_SIGNAL
        total += weight * value
    return (total, None) if math.isfinite(total) else (None, MISSING_SIGNAL)

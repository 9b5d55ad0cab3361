"""Plain data passed between the request layer and the scoring engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class TokenSequence:
    """One prompt/completion pair as token ids; the completion tokens are the NLL targets."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


@dataclass(frozen=True)
class Sketch:
    """The opt-in estimator: each Linear weight's per-sample ‖G‖² from seeded k-wide projections.

    Unbiased, not exact (norms/sketch.py). `None` where an estimator is expected means exact.
    """

    k: int
    seed: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"sketch k must be ≥ 1, not {self.k}")


@dataclass
class SequenceScore:
    """What an engine returns for one sequence.

    `grad_norm` is None exactly when the sequence has no completion tokens (nothing to score).
    `signals` maps a signal name to its value (None for an empty completion).
    """

    grad_norm: float | None
    num_tokens: int
    signals: dict[str, float | None] = field(default_factory=dict)


class NormEngine(Protocol):
    """Computes each sequence's ‖∇θ mean-NLL‖₂ over `params`, independently per sequence.

    Exact unless `estimator` names a sketch; an engine without one raises InvalidInputError.
    """

    def score(
        self,
        model: torch.nn.Module,
        params: list[torch.nn.Parameter],
        sequences: list[TokenSequence],
        *,
        signals: tuple[str, ...] = (),
        temperature: float = 1.0,
        estimator: Sketch | None = None,
    ) -> list[SequenceScore]: ...

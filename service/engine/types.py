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
    """Computes each sequence's exact ‖∇θ mean-NLL‖₂ over `params`, independently per sequence."""

    def score(
        self,
        model: torch.nn.Module,
        params: list[torch.nn.Parameter],
        sequences: list[TokenSequence],
        *,
        signals: tuple[str, ...] = (),
        temperature: float = 1.0,
    ) -> list[SequenceScore]: ...

"""The model being served and what a score differentiates (its version is the slot's).

Mutated only on the engine worker thread (see worker.py), so a request always scores on one
consistent set of weights.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ..engine.params import scored_parameters
from ..engine.types import NormEngine, SequenceScore, Sketch, TokenSequence
from ..models.loader import LoadedModel, max_sequence_length
from .token_budget import MAX_REQUEST_TOKENS


@runtime_checkable
class ModelFacts(Protocol):
    """What requests read of the served model (tokenizing, limits, /v1/model): a ServedModel, or
    at the Ray ingress, which holds no weights, rayserve's ModelView of its replicas' model."""

    name: str
    tokenizer: Any
    vocab_size: int
    max_length: int
    max_request_tokens: int
    adapter: str | None

    @property
    def device(self) -> Any: ...

    @property
    def dtype(self) -> Any: ...

    @property
    def engine_name(self) -> str: ...

    def num_parameters(self) -> int: ...

    def num_scored_parameters(self) -> int: ...

    def micro_batches(self) -> dict[str, int | str | bool] | None: ...


class ServedModel:
    def __init__(
        self,
        loaded: LoadedModel,
        engine: NormEngine,
        *,
        max_sequence_tokens: int | None = None,
        max_request_tokens: int | None = None,
    ) -> None:
        self.name = loaded.name
        self.path = loaded.path
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.engine = engine
        self.adapter: str | None = None
        self.context_length = max_sequence_length(self.model)
        # An operator limit may lower the model's context, never raise it.
        self.max_length = min(self.context_length, max_sequence_tokens or self.context_length)
        self.max_request_tokens = max_request_tokens or MAX_REQUEST_TOKENS
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        self.refresh_scored()

    def refresh_scored(self) -> None:
        """Recompute the scored parameter list (after an adapter is loaded or removed)."""
        self.scored_named = scored_parameters(self.model)
        self.scored = [p for _, p in self.scored_named]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def num_scored_parameters(self) -> int:
        return sum(p.numel() for p in self.scored)

    def micro_batches(self) -> dict[str, int | str | bool] | None:
        """The batched engine's micro-batch policy and its measured numbers; None for the loop."""
        describe = getattr(self.engine, "describe", None)
        return describe() if describe is not None else None

    def score(
        self,
        sequences: list[TokenSequence],
        signals: tuple[str, ...],
        temperature: float,
        estimator: Sketch | None = None,
    ) -> list[SequenceScore]:
        return self.engine.score(
            self.model, self.scored, sequences,
            signals=signals, temperature=temperature, estimator=estimator,
        )  # fmt: skip

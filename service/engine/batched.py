"""The batched engine: exact per-sample gradient norms from one forward and one backward per batch.

Sequences are packed by length into micro-batches under a token budget (`microbatch.py`); the
backward pass of Σ_i ℓ_i gives each module output its per-row gradients ∂ℓ_i/∂out_i, and the
per-layer rules in `norms/` turn module inputs and output gradients into per-sample squared norms.

Exact speed-ups: parameters are frozen for the pass (no weight-gradient GEMMs, no .grad buffers;
only the embedding output requires grad), and the lm_head runs only at completion positions.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial
from typing import Literal

import torch
from torch import nn

from .head import (
    DEFAULT_CHUNK_ELEMENTS,
    NotChunkable,
    bypassed_head,
    chunkable,
    chunked_loss,
    row_logits,
)
from .microbatch import (
    MicroBatch,
    build_batch,
    completion_head,
    completion_logits_and_loss,
    embeddings_require_grad,
    pack,
)
from .norms import NormCapture, capturing, plan_norms
from .norms.checkpointing import checkpointing
from .norms.sketch import Projections
from .reference import only_these_require_grad
from .signals import accumulation_dtype, compute_signals
from .types import SequenceScore, Sketch, TokenSequence


class BatchedEngine:
    """Exact per-sample gradient norms, many sequences per forward/backward pass.

    `estimator=Sketch(k, seed)` swaps each untied Linear weight's exact norm for its unbiased
    sketch (norms/sketch.py); everything else stays exact.
    """

    name = "batched"

    def __init__(
        self,
        max_batch_tokens: int = 8192,
        gradient_checkpointing: bool = False,
        force_form: Literal["auto", "ghost", "direct"] = "auto",
        use_reentrant: bool = False,
        head_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    ):
        if head_chunk_elements < 0:
            raise ValueError(
                f"head_chunk_elements must be ≥ 0 (0: unchunked), not {head_chunk_elements}"
            )
        self.max_batch_tokens = max_batch_tokens
        self.head_chunk_elements = head_chunk_elements
        # Model types whose head output is transformed after the lm_head (soft-capping, scaling).
        self._unchunkable: set[type] = set()
        self.gradient_checkpointing = gradient_checkpointing
        self.force_form = force_form
        self.use_reentrant = use_reentrant
        # Drawn once per (seed, layer, k, dims) and kept across calls: the opt-in sketch.
        self.projections = Projections()

    def score(
        self,
        model: nn.Module,
        params: list[torch.nn.Parameter],
        sequences: list[TokenSequence],
        *,
        signals: tuple[str, ...] = (),
        temperature: float = 1.0,
        estimator: Sketch | None = None,
    ) -> list[SequenceScore]:
        args = (model, params, sequences, signals, temperature, estimator)
        if self.head_chunk_elements and type(model) not in self._unchunkable:
            try:
                return self._score(*args, chunked=True)
            except NotChunkable:
                self._unchunkable.add(type(model))
        return self._score(*args, chunked=False)

    def _score(self, model, params, sequences, signals, temperature, estimator, chunked):
        results = [SequenceScore(None, 0, dict.fromkeys(signals)) for _ in sequences]
        todo = [i for i, s in enumerate(sequences) if s.num_tokens > 0]
        if not todo:
            return results
        if any(not sequences[i].prompt_ids for i in todo):
            raise ValueError("a completion needs a prompt of at least one token to be scored")
        plan = plan_norms(model, params)
        first = next(model.parameters())
        acc_dtype = accumulation_dtype(first.dtype)
        batch_ref: list[MicroBatch] = []
        with contextlib.ExitStack() as stack:
            stack.enter_context(only_these_require_grad(model, []))
            stack.enter_context(
                checkpointing(model, self.gradient_checkpointing, self.use_reentrant)
            )
            stack.enter_context(torch.enable_grad())
            stack.enter_context(embeddings_require_grad(model))
            capture = stack.enter_context(
                capturing(model, plan, self.force_form, estimator, self.projections)
            )
            chunk = self.head_chunk_elements if chunked and chunkable(model, capture) else 0
            found: list[torch.Tensor] = []
            if chunk:
                head_hooked = True
                stack.enter_context(bypassed_head(model, batch_ref, found))
                stack.enter_context(capture.driving(model.get_output_embeddings()))
            else:
                head_hooked = stack.enter_context(completion_head(model, batch_ref))
            run = partial(_run, model, capture=capture, signals=signals, temperature=temperature)
            for group in pack([sequences[i] for i in todo], self.max_batch_tokens):
                batch_ref[:] = [build_batch([sequences[todo[g]] for g in group], first.device)]
                for strict in (False, True):
                    capture.start(batch_ref[0].masks(), acc_dtype, first.device, strict)
                    if chunk:
                        scores = run(_chunked_pass(model, batch_ref[0], capture, found, chunk))
                    else:
                        scores = run(_plain_pass(model, batch_ref[0], head_hooked))
                    # Non-finite values at padding only ever show up as NaN; then redo the
                    # micro-batch zeroing padding on both sides of every product.
                    if all(math.isfinite(s.grad_norm) for s in scores):
                        break
                for g, score in zip(group, scores, strict=True):
                    results[todo[g]] = score
        return results


def _plain_pass(model, batch, head_hooked):
    logits, loss = completion_logits_and_loss(model, batch, head_hooked)
    return batch, loss, lambda r, n: logits[r, :n]


def _chunked_pass(model, batch, capture, found, chunk):
    h, loss = chunked_loss(model, batch, capture, found, chunk)
    return batch, loss, lambda r, n: row_logits(model, h[r, :n].detach())


def _run(
    model: nn.Module,
    pass_: tuple,
    *,
    capture: NormCapture,
    signals: tuple[str, ...],
    temperature: float,
) -> list[SequenceScore]:
    batch, loss, logits_of = pass_
    lengths = batch.num_tokens.tolist()
    found = [
        compute_signals(logits_of(r, n), batch.targets[r, :n], signals, temperature)
        if signals
        else {}
        for r, n in enumerate(lengths)
    ]
    del pass_, logits_of
    with capture.backward_phase():
        loss.backward()
    sq = capture.finish().tolist()
    return [
        SequenceScore(math.sqrt(max(s, 0.0)) if math.isfinite(s) else math.nan, n, sig)
        for s, n, sig in zip(sq, lengths, found, strict=True)
    ]

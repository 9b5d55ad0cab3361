"""The batched engine: exact per-sample gradient norms from one forward and one backward per batch.

Sequences are packed by length into micro-batches under a token budget (`microbatch.py`); the
backward pass of Σ_i ℓ_i gives each module output its per-row gradients ∂ℓ_i/∂out_i, and the
per-layer rules in `norms/` turn module inputs and output gradients into per-sample squared norms.

Exact speed-ups: parameters are frozen for the pass (no weight-gradient GEMMs, no .grad buffers;
only the embedding output requires grad), and the lm_head runs only at completion positions.

With a `budget` the micro-batches and each one's head choice come from the planner (`plan.py`),
on the memory this engine measures per token (`footprint.py`); without one, rows are packed
greedily under max_batch_tokens and the head is always chunked (when it can be).
"""

from __future__ import annotations

import contextlib
import math
from functools import partial
from typing import Literal

import torch
from torch import nn

from .footprint import Footprint, cached_footprint, footprint_key, measure
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
from .norms.linear import LinearLikeRule
from .norms.sketch import Projections
from .plan import Planned, Planner, Shapes
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
        budget: Literal["loop", "tokens"] | None = None,
    ):
        """`budget`: plan micro-batches by measured memory, capped by the loop's modelled peak
        ("loop") or by what max_batch_tokens holds ("tokens"); None packs by tokens alone."""
        if budget not in (None, "loop", "tokens"):
            raise ValueError(f"budget must be 'loop', 'tokens' or None, not {budget!r}")
        if head_chunk_elements < 0:
            raise ValueError(
                f"head_chunk_elements must be ≥ 0 (0: unchunked), not {head_chunk_elements}"
            )
        self.max_batch_tokens = max_batch_tokens
        self.budget = budget
        self.footprint: Footprint | None = None  # what the last planned call measured
        self._scored_bytes = 0
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
        fp = None
        if self.budget is not None and any(s.num_tokens for s in sequences):
            fp = self.footprint = self._measured(model, params)
            self._scored_bytes = _nbytes(params)
        return self._either(model, params, sequences, signals, temperature, fp, True, estimator)

    def describe(self) -> dict[str, int | str | bool]:
        """The micro-batch policy and its effective numbers (/v1/model)."""
        out: dict[str, int | str | bool] = {
            "policy": {"loop": "loop_memory", "tokens": "max_batch_tokens"}.get(
                self.budget, "max_batch_tokens_greedy"
            ),
            "max_batch_tokens": self.max_batch_tokens,
        }
        if self.footprint is not None:
            out |= {
                "bytes_per_token": self.footprint.bytes_per_token,
                "logit_bytes_per_token": self.footprint.logit_bytes_per_token,
                "probe_tokens": self.footprint.probe_tokens,
                "measured": self.footprint.measured,
                # With loop_memory a request's cap is this + (both per-token figures) × its
                # longest sequence: the loop's gradient and its longest sequence.
                "scored_bytes": self._scored_bytes,
            }
        return out

    def _either(self, model, params, sequences, signals, temperature, fp, chunk, estimator=None):
        args = (model, params, sequences, signals, temperature)
        if chunk and self.head_chunk_elements and type(model) not in self._unchunkable:
            try:
                return self._score(*args, True, fp, estimator)
            except NotChunkable:
                self._unchunkable.add(type(model))
        return self._score(*args, False, fp, estimator)

    def _measured(self, model, params) -> Footprint:
        key = footprint_key(model, len(params), self.gradient_checkpointing)

        def probe(prompt: int, completion: int, chunk: bool) -> None:
            seq = TokenSequence((1,) * prompt, (2,) * completion)
            self._either(model, params, [seq], (), 1.0, None, chunk)

        return cached_footprint(key, lambda: measure(model, probe, _context(model)))

    def _batches(self, model, params, plan, seqs, chunk, fp) -> list[Planned]:
        if fp is None:
            return [Planned(tuple(g), bool(chunk), 0) for g in pack(seqs, self.max_batch_tokens)]
        planner = Planner(
            fp,
            _shapes(model, plan),
            max_batch_tokens=self.max_batch_tokens,
            budget=self.budget,
            scored_bytes=_nbytes(params),
            chunkable=bool(chunk),
        )
        return planner.plan([s.length for s in seqs], [s.num_tokens for s in seqs])

    def _score(self, model, params, sequences, signals, temperature, chunked, fp, estimator=None):
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
            can_chunk = self.head_chunk_elements if chunked and chunkable(model, capture) else 0
            found: list[torch.Tensor] = []
            run = partial(_run, model, capture=capture, signals=signals, temperature=temperature)
            todo_seqs = [sequences[i] for i in todo]
            for mb in self._batches(model, params, plan, todo_seqs, can_chunk, fp):
                chunk = can_chunk if mb.chunked else 0
                batch_ref[:] = [build_batch([todo_seqs[g] for g in mb.rows], first.device)]
                with contextlib.ExitStack() as head:
                    if chunk:
                        head.enter_context(bypassed_head(model, batch_ref, found))
                        head.enter_context(capture.driving(model.get_output_embeddings()))
                    else:
                        head_hooked = head.enter_context(completion_head(model, batch_ref))
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
                for g, score in zip(mb.rows, scores, strict=True):
                    results[todo[g]] = score
        return results


def _nbytes(params: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _context(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 1:
            return value
    return 2048


def _shapes(model: nn.Module, plan) -> Shapes:
    """GEMM sizes for the planner's cost model, from the norm plan and the model."""
    head = model.get_output_embeddings()
    skip = {id(model.get_input_embeddings()), id(head)}
    body = sum(
        m.weight.numel()
        for m in model.modules()
        if id(m) not in skip
        and isinstance(getattr(m, "weight", None), torch.Tensor)
        and m.weight.dim() == 2
    )
    scored, head_scored = [], False
    for mp in plan.modules:
        if mp.module is head:
            head_scored = True
        elif isinstance(mp.rule, LinearLikeRule):
            scored.append(mp.rule.dims(mp.module))
    head_dims = (head.in_features, head.out_features) if isinstance(head, nn.Linear) else None
    return Shapes(body, tuple(scored), head_dims, head_scored)


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

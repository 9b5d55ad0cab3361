"""The completion-only lm_head and loss in chunks, so no [tokens × vocab] logits stay alive.

The forward computes each completion token's logsumexp a few rows of logits at a time and keeps
only those; the backward recomputes the logits a slice of the vocabulary at a time and turns each
slice into its part of ∂ℓ/∂logits, of the head-input gradient and of the lm_head's per-sample
norms. Every norm term of a linear head is a sum over output columns (‖BᵀA‖², ⟨AAᵀ, BBᵀ⟩, the
bias's ‖Σ_s B‖², the tied cross term's Bhead[s, x_t]), so summing the slices is exact.

Only a plain nn.Linear head whose output the model returns untouched is chunked (checked on
every pass: a soft-capped or scaled head would make `logits is` fail); anything else takes the
unchunked path of `microbatch.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .microbatch import IGNORE, MicroBatch
from .norms import NormCapture
from .signals import accumulation_dtype

# Elements of one logits chunk: rows × vocabulary in the forward, tokens × columns in the backward.
# 4M float32 is 16 MiB; measured on the default model, smaller chunks only add per-chunk overhead.
DEFAULT_CHUNK_ELEMENTS = 1 << 22


class NotChunkable(Exception):
    """The model changed the head's output (soft-capping, scaling): score it unchunked."""


def chunkable(model: nn.Module, capture: NormCapture) -> bool:
    """A plain nn.Linear head whose norm rules (own and tied) can take output-column slices."""
    head = model.get_output_embeddings()
    return type(head) is nn.Linear and "forward" not in head.__dict__ and capture.can_drive(head)


@contextlib.contextmanager
def bypassed_head(model: nn.Module, batch_ref: list[MicroBatch], found: list) -> Iterator[None]:
    """The head returns its gathered completion-position input, also put in `found`."""
    head = model.get_output_embeddings()

    def forward(h: torch.Tensor) -> torch.Tensor:
        index = batch_ref[0].head_index
        picked = h.gather(1, index.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        found[:] = [picked]
        return picked

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def chunked_loss(
    model: nn.Module, batch: MicroBatch, capture: NormCapture, found: list, elements: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, d) completion head inputs and Σ_i ℓ_i, the sum of each row's own mean NLL."""
    out = model(**batch.model_inputs())
    if not found or out.logits is not found[0]:
        raise NotChunkable
    h = found.pop()
    head = model.get_output_embeddings()
    if h.shape[:2] != batch.targets.shape:
        raise RuntimeError(
            f"head input of shape {tuple(h.shape)} for targets {batch.targets.shape}"
        )
    call = capture.drive_forward(head, h)
    weights = (batch.targets != IGNORE).double() / batch.num_tokens.double().unsqueeze(1)
    run = _HeadRun(head, capture, call, elements)
    return h, ChunkedHeadNLL.apply(h, batch.targets, weights, run)


def row_logits(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """One row's completion logits (T × V) for the signals, recomputed without a graph.

    F.linear, not the module: its forward is bypassed and its hooks must not see this call.
    """
    head = model.get_output_embeddings()
    with torch.no_grad():
        return F.linear(h, head.weight, head.bias)


class _HeadRun:
    """What the backward needs besides tensors: the head, the norm capture and the chunk size."""

    def __init__(self, head: nn.Linear, capture: NormCapture, call, elements: int):
        self.head, self.capture, self.call, self.elements = head, capture, call, elements


class ChunkedHeadNLL(torch.autograd.Function):
    """Σ_{i,t} w_it·(logsumexp(l_it) − l_it[y_it]), l = head(h), never holding all of l.

    Same numbers as `microbatch.RowMeanNLL` on the full logits: the logsumexp of each row is
    taken over the whole vocabulary in the accumulation dtype, and ∂ℓ/∂l = w·(softmax − onehot)
    is formed elementwise from it.
    """

    @staticmethod
    def forward(ctx, h, targets, weights, run: _HeadRun):
        head = run.head
        flat = h.reshape(-1, h.shape[-1])
        acc = accumulation_dtype(h.dtype)
        vocab = head.out_features
        safe = targets.reshape(-1).clamp(min=0)
        rows = max(1, run.elements // vocab)
        lse, picked = [], []
        for r0 in range(0, flat.shape[0], rows):
            logits = F.linear(flat[r0 : r0 + rows], head.weight, head.bias)
            lse.append(torch.logsumexp(logits.to(acc), dim=-1))
            picked.append(logits.gather(1, safe[r0 : r0 + rows].unsqueeze(1)).squeeze(1).to(acc))
            del logits
        lse, picked = torch.cat(lse), torch.cat(picked)
        w = weights.reshape(-1).to(acc)
        ctx.run = run
        ctx.save_for_backward(h, safe, w, lse)
        return ((lse - picked) * w).sum()

    @staticmethod
    def backward(ctx, grad_loss):
        h, safe, w, lse = ctx.saved_tensors
        run, head = ctx.run, ctx.run.head
        batch, span, d = h.shape
        flat = h.reshape(-1, d)
        n, acc = flat.shape[0], lse.dtype
        scale = (w * grad_loss).unsqueeze(1)
        grad_h = torch.zeros(n, d, dtype=acc, device=h.device)
        cols = max(1, run.elements // n)
        for c0 in range(0, head.out_features, cols):
            weight = head.weight[c0 : c0 + cols]
            bias = None if head.bias is None else head.bias[c0 : c0 + cols]
            p = F.linear(flat, weight, bias).to(acc).sub_(lse.unsqueeze(1)).exp_()
            # −1 at the target column where it falls in this slice, +0 elsewhere.
            local = safe - c0
            inside = (local >= 0) & (local < p.shape[1])
            p.scatter_add_(1, local.clamp(0, p.shape[1] - 1).unsqueeze(1), -inside.to(acc)[:, None])
            g = p.mul_(scale).to(h.dtype)
            if g.dtype == acc:
                grad_h.addmm_(g, weight)
            else:
                grad_h.addmm_(g.to(acc), weight.to(acc))
            run.capture.drive_grad(run.call, head, g.view(batch, span, -1), c0)
            del p, g
        run.capture.drive_done(run.call, head)
        return grad_h.to(h.dtype).view_as(h), None, None, None

"""The micro-batch planner: which rows go together, and whether the lm_head is chunked.

Contract. `Planner.plan` takes the lengths of the sequences to score and returns micro-batches
(indices into them, each index exactly once) with a head choice each, such that:

- **Memory.** Every micro-batch of two or more rows has modelled bytes ≤ the cap, and padded
  tokens (rows × longest row) ≤ `max_batch_tokens`; a row that alone exceeds either still goes,
  alone. Modelled bytes are `bytes_per_token · rows · padded length` with the head chunked, plus
  `logit_bytes_per_token · rows · longest completion` unchunked (`footprint.py` measures both).
  The cap is, with `budget="loop"` (the server's default), the loop's modelled peak on the same
  request: a full gradient of every scored parameter plus its longest sequence's activations and
  full logits, `scored_bytes + (bytes_per_token + logit_bytes_per_token) · longest` — a lower
  bound of what the loop holds (it also saves the inputs of weight GEMMs and takes its norm in
  float64), so the batched engine stays below it. With `budget="tokens"` (an explicit
  --max-batch-tokens) the cap is what that budget holds chunked, `bytes_per_token · budget`.
- **Head.** Unchunked when its modelled bytes fit under the cap (one GEMM instead of two, no
  recompute in the backward); chunked only when they do not. A single row under the loop's
  cap always fits: it runs the loop's own work (its forms take min(ghost, direct), never more
  than the loop's weight-gradient GEMM) without a head recompute.
- **Cost.** Among the partitions of the length-sorted rows into contiguous runs, the one of
  least modelled cost: per micro-batch a fixed overhead (the body FLOPs of PASS_OVERHEAD_TOKENS
  tokens) + the floor, 4 × body linear FLOPs per padded token + 4·d·V per completion position
  (2·d·V more when chunked: the backward recomputes the logits) + the norms, per row and
  linear layer min(ghost c·N²(d_in + d_out), direct N·d_in·d_out) as `choose_form` picks,
  N the padded length (the completion span for the head). Attention's own N² products are left
  out (the same for every plan but through padding). More than DP_MAX_ROWS sequences are packed
  greedily instead (longest first, as many as fit), where the quadratic search would cost more
  than it saves.

The planner knows nothing of torch tensors or models: numbers in, indices out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .footprint import Footprint
from .norms.gram import cost_factor

PASS_OVERHEAD_TOKENS = 32
DP_MAX_ROWS = 512


@dataclass(frozen=True)
class Planned:
    """One micro-batch: indices into the planned sequences, longest first, and its head."""

    rows: tuple[int, ...]
    chunked: bool
    modelled_bytes: int


@dataclass(frozen=True)
class Shapes:
    """What the cost model needs of a model: its GEMM sizes, scored or not."""

    body_params: int  # parameters of every layer but the embeddings and the head
    scored: tuple[tuple[int, int], ...]  # (d_in, d_out), scored linear-like layers but the head
    head: tuple[int, int] | None  # the head's (d, V); None without a linear head
    head_scored: bool


class Planner:
    def __init__(
        self,
        footprint: Footprint,
        shapes: Shapes,
        *,
        max_batch_tokens: int,
        budget: Literal["loop", "tokens"],
        scored_bytes: int,
        chunkable: bool,
    ):
        if max_batch_tokens <= 0:
            raise ValueError(f"max_batch_tokens must be > 0, not {max_batch_tokens}")
        self.fp, self.shapes = footprint, shapes
        self.max_batch_tokens, self.budget = max_batch_tokens, budget
        self.scored_bytes, self.chunkable = scored_bytes, chunkable
        self._body_flops = 2 * shapes.body_params  # one forward, per token
        self._norm = lru_cache(maxsize=4096)(self._norm_flops)

    def cap_bytes(self, lengths: list[int]) -> int:
        if self.budget == "loop":
            per_token = self.fp.bytes_per_token + self.fp.logit_bytes_per_token
            return self.scored_bytes + per_token * max(lengths, default=0)
        return self.fp.bytes_per_token * self.max_batch_tokens

    def plan(self, lengths: list[int], spans: list[int]) -> list[Planned]:
        """Micro-batches for sequences of these lengths (prompt + completion) and completions."""
        if len(lengths) != len(spans):
            raise ValueError(f"{len(lengths)} lengths for {len(spans)} spans")
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        cap = self.cap_bytes(lengths)
        if len(order) > DP_MAX_ROWS:
            return self._greedy(order, lengths, spans, cap)
        n = len(order)
        best: list[tuple[float, int, bool]] = [(0.0, 0, False)] + [(float("inf"), 0, False)] * n
        for i in range(1, n + 1):
            span = 0
            for j in range(i - 1, -1, -1):
                rows, padded = i - j, lengths[order[j]]
                span = max(span, spans[order[j]])
                chosen = self._fit(rows, padded, span, cap)
                if chosen is None:
                    break  # more rows and longer rows only grow
                cost = best[j][0] + self._cost(rows, padded, span, chosen)
                if cost < best[i][0]:
                    best[i] = (cost, j, chosen)
        out: list[Planned] = []
        i = n
        while i > 0:
            _, j, chunked = best[i]
            out.append(self._planned(order[j:i], lengths, spans, chunked))
            i = j
        return out[::-1]

    def _greedy(self, order, lengths, spans, cap) -> list[Planned]:
        groups: list[list[int]] = []
        for i in order:
            if groups:
                g = groups[-1]
                span = max(spans[i], *(spans[k] for k in g))
                if self._fit(len(g) + 1, lengths[g[0]], span, cap) is not None:
                    g.append(i)
                    continue
            groups.append([i])
        out = []
        for g in groups:
            span = max(spans[k] for k in g)
            chunked = self._fit(len(g), lengths[g[0]], span, cap)
            out.append(self._planned(g, lengths, spans, bool(chunked)))
        return out

    def _planned(self, rows, lengths, spans, chunked) -> Planned:
        span = max(spans[k] for k in rows)
        modelled = self._bytes(len(rows), lengths[rows[0]], span, chunked)
        return Planned(tuple(rows), chunked, modelled)

    def _bytes(self, rows: int, padded: int, span: int, chunked: bool) -> int:
        logits = 0 if chunked else self.fp.logit_bytes_per_token * rows * span
        return self.fp.bytes_per_token * rows * padded + logits

    def _fit(self, rows: int, padded: int, span: int, cap: int) -> bool | None:
        """False: fits unchunked; True: fits only chunked; None: does not fit (rows > 1)."""
        if self._bytes(rows, padded, span, False) <= cap and (
            rows == 1 or rows * padded <= self.max_batch_tokens
        ):
            return False
        if not self.chunkable:
            return False if rows == 1 else None  # unchunked is the only way
        if rows == 1:
            return True
        if rows * padded <= self.max_batch_tokens and self._bytes(rows, padded, span, True) <= cap:
            return True
        return None

    def _cost(self, rows: int, padded: int, span: int, chunked: bool) -> float:
        d, vocab = self.shapes.head or (0, 0)
        head = (6 if chunked else 4) * d * vocab * span
        floor = 2 * self._body_flops * padded + head
        return self._body_flops * PASS_OVERHEAD_TOKENS + rows * (floor + self._norm(padded, span))

    def _norm_flops(self, padded: int, span: int) -> float:
        total = sum(_layer(padded, a, b) for a, b in self.shapes.scored)
        if self.shapes.head is not None and self.shapes.head_scored:
            total += _layer(span, *self.shapes.head)
        return total


def _layer(n: int, d_in: int, d_out: int) -> float:
    """The cheaper form's multiply-adds ×2 for one sample of n positions (norms/linear.py)."""
    return 2 * min(cost_factor(n) * n * n * (d_in + d_out), n * d_in * d_out)

"""Per-sample Gram matrices for the ghost form, computed as a block lower triangle, and a cache.

⟨AAᵀ, BBᵀ⟩ only needs the lower triangles of two symmetric Grams. With the positions cut in k
row blocks, row block i is T_i·T_{≤i}ᵀ: one product per block row against a prefix view of T (no
copies), (k+1)/(2k) of the full N×N product, 2/3 for k = 3. On one side the entries left of
the diagonal block are doubled, standing in for their mirror images above it.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass

import torch

from .common import batched_dot, flat, token_mask

# Cut positions in this many row blocks once there are at least MIN_SPLIT per block; measured on
# 2 CPU cores, 3 beat 1, 2 and 4 (more blocks save FLOPs but make smaller products).
PARTS = 3
MIN_SPLIT = 32


@dataclass
class Gram:
    """rows[i] = (batch, n_i, end_i): block row i of a per-sample Gram, up to its diagonal."""

    rows: list[torch.Tensor]
    folded: bool  # entries left of the diagonal block doubled


def _parts(n: int) -> int:
    return max(1, min(PARTS, n // MIN_SPLIT))


def cost_factor(n: int) -> float:
    """Fraction of the full N×N product that the block rows of an N-position Gram cost."""
    k = _parts(n)
    return (k + 1) / (2 * k)


def _bounds(n: int) -> list[tuple[int, int]]:
    parts = _parts(n)
    cuts = [round(k * n / parts) for k in range(parts + 1)]
    return list(itertools.pairwise(cuts))


def masked_gram(
    t: torch.Tensor,
    mask: torch.Tensor | None,
    dtype: torch.dtype,
    cache: GramCache,
    fold: bool = False,
) -> Gram:
    """Per-sample T·Tᵀ with every entry touching a padded position set to zero.

    Masking the Gram instead of the N×d input is cheaper whenever the Gram is worth using
    (N < d), and exact: a real×real entry never reads a padded row.
    """
    a = flat(t, dtype)
    pairs = cache.padded_pairs(mask, t) if mask is not None else None
    rows = []
    for r0, r1 in _bounds(a.shape[1]):
        g = torch.bmm(a[:, r0:r1], a[:, :r1].transpose(1, 2))
        if pairs is not None:
            g.masked_fill_(pairs[:, r0:r1, :r1], 0)
        if fold and r0:
            g[:, :, :r0].mul_(2)
        rows.append(g)
    return Gram(rows, fold)


def gram_inner(ga: Gram, gb: Gram) -> torch.Tensor:
    """Per-sample ⟨GA, GB⟩ as float64, (batch,); exactly one of the two must be folded."""
    if ga.folded == gb.folded:
        raise ValueError("one Gram of the pair must be folded, the other not")
    out = batched_dot(ga.rows[0], gb.rows[0])
    for x, y in zip(ga.rows[1:], gb.rows[1:], strict=True):
        out += batched_dot(x, y)
    return out


class GramCache:
    """Remembers the masked A-Gram of the last few module inputs.

    q/k/v (and gate/up) read the very same input tensor, so one Gram serves all of them. Keyed by
    tensor identity and version; only a handful of entries are kept, since siblings run back to
    back (peft interleaves lora_B calls, hence more than one).
    """

    def __init__(self, size: int = 4):
        self._size = size
        self._entries: list[tuple[weakref.ref, int, Gram]] = []
        self._pairs: dict[tuple[int, int], torch.Tensor] = {}

    def clear(self) -> None:
        self._entries.clear()
        self._pairs.clear()

    def padded_pairs(self, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """bool (batch, N, N): True where either position is padding; built once per layout."""
        m = token_mask(mask, t)
        key = (id(mask), m.shape[1])
        if key not in self._pairs:
            self._pairs[key] = ~(m.unsqueeze(2) & m.unsqueeze(1))
        return self._pairs[key]

    def get(self, x: torch.Tensor) -> Gram | None:
        for ref, version, g in self._entries:
            if ref() is x and x._version == version:
                return g
        return None

    def put(self, x: torch.Tensor, g: Gram) -> None:
        self._entries.append((weakref.ref(x), x._version, g))
        del self._entries[: -self._size]

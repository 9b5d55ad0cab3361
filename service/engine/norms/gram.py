"""Per-sample Gram matrices for the ghost form, computed by symmetric blocks, and their cache.

⟨AAᵀ, BBᵀ⟩ only needs the lower-triangular blocks of two symmetric Grams: with the positions
split in k parts, the k(k+1)/2 blocks i ≥ j (off-diagonal ones counted twice) cost
(k+1)/(2k) of the full product, 2/3 for k = 3. Blocks are views of the input, so no copies.
More parts save little more and add calls (measured on 2 CPU cores: k = 3 was the best).
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass

import torch

from .common import batched_dot, flat, token_mask

# Split positions in this many parts once there are at least MIN_SPLIT of them per part.
PARTS = 3
MIN_SPLIT = 32


@dataclass
class Gram:
    """Lower-triangular blocks (batch, n_i, n_j) of a per-sample Gram, i ≥ j."""

    blocks: list[torch.Tensor]
    weights: list[float]  # 1 on the diagonal, 2 below it (for the mirrored block above)


def _parts(n: int) -> int:
    return max(1, min(PARTS, n // MIN_SPLIT))


def cost_factor(n: int) -> float:
    """Fraction of the full N×N product that the blocks of an N-position Gram cost."""
    k = _parts(n)
    return (k + 1) / (2 * k)


def _bounds(n: int) -> list[tuple[int, int]]:
    parts = _parts(n)
    cuts = [round(k * n / parts) for k in range(parts + 1)]
    return list(itertools.pairwise(cuts))


def masked_gram(
    t: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype, cache: GramCache
) -> Gram:
    """Per-sample T·Tᵀ with every entry touching a padded position set to zero.

    Masking the Gram instead of the N×d input is cheaper whenever the Gram is worth using
    (N < d), and exact: a real×real entry never reads a padded row.
    """
    a = flat(t, dtype)
    bounds = _bounds(a.shape[1])
    pairs = cache.padded_pairs(mask, t) if mask is not None else None
    blocks, weights = [], []
    for i, (i0, i1) in enumerate(bounds):
        for j0, j1 in bounds[: i + 1]:
            g = torch.bmm(a[:, i0:i1], a[:, j0:j1].transpose(1, 2))
            if pairs is not None:
                g.masked_fill_(pairs[:, i0:i1, j0:j1], 0)
            blocks.append(g)
            weights.append(1.0 if i0 == j0 else 2.0)
    return Gram(blocks, weights)


def gram_inner(ga: Gram, gb: Gram) -> torch.Tensor:
    """Per-sample ⟨GA, GB⟩ as float64, (batch,)."""
    out = None
    for x, y, w in zip(ga.blocks, gb.blocks, ga.weights, strict=True):
        dot = batched_dot(x, y)
        out = dot if out is None and w == 1.0 else (w * dot if out is None else out + w * dot)
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

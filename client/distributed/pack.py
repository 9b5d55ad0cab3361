"""Packing tensors into the byte buckets that are broadcast, and unpacking them again.

A bucket is the tensors' bytes back to back, in the order of `update_info.names`, without padding
or header (vLLM's packed format); which tensors share a bucket is `bucket_plan`'s rule, so the
receiver knows every bucket's size before it arrives.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from ..transfer import bucket_plan


def tensor_nbytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def pack_buckets(
    tensors: Sequence[torch.Tensor], plan: list[range], device: torch.device
) -> Iterator[torch.Tensor]:
    """Each bucket as one contiguous uint8 tensor on `device` (a lone tensor is not copied)."""
    for bucket in plan:
        flat = [_as_bytes(tensors[k].detach().to(device)) for k in bucket]
        yield flat[0] if len(flat) == 1 else torch.cat(flat)


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)


def unpack_bucket(
    buffer: torch.Tensor, shapes: Sequence[Sequence[int]], dtypes: Sequence[torch.dtype]
) -> list[torch.Tensor]:
    """Views of `buffer` as the bucket's tensors (an unaligned one is copied to align it)."""
    sizes = [tensor_nbytes(s, d) for s, d in zip(shapes, dtypes, strict=True)]
    out, at = [], 0
    for shape, dtype, n in zip(shapes, dtypes, sizes, strict=True):
        raw = buffer[at : at + n]
        if at % dtype.itemsize:
            raw = raw.clone()
        out.append(raw.view(dtype).view(list(shape)))
        at += n
    return out


__all__ = ["bucket_plan", "pack_buckets", "tensor_nbytes", "unpack_bucket"]

"""Pushed tensors: the safetensors byte format, parsed strictly and without copying the data.

Layout: 8 bytes little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the
data. The tensors returned are views into the received buffer; they are copied once, into the
served parameters, when applied.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import torch

from vigor_client.wire import SAFETENSORS_DTYPES

from ..errors import WeightsRejectedError

DTYPES: dict[str, torch.dtype] = {
    code: getattr(torch, name) for name, code in SAFETENSORS_DTYPES.items()
}
MAX_HEADER = 100 << 20


@dataclass
class Payload:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)


def _reject(message: str) -> WeightsRejectedError:
    return WeightsRejectedError([f"body is not a valid safetensors payload: {message}"])


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _reject(f"tensor {key!r} appears twice in the header")
        out[key] = value
    return out


def parse_header(buf: bytes | bytearray | memoryview) -> tuple[dict, int]:
    """The header dict and the offset where tensor data starts."""
    if len(buf) < 8:
        raise _reject(f"{len(buf)} bytes is shorter than the 8-byte header length")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER or 8 + n > len(buf):
        raise _reject(f"header length {n} exceeds the {len(buf)} bytes received (truncated?)")
    try:
        header = json.loads(bytes(buf[8 : 8 + n]), object_pairs_hook=_no_duplicates)
    except WeightsRejectedError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise _reject(f"header is not JSON ({exc})") from None
    except RecursionError:
        raise _reject("header nests JSON too deeply (a header is one flat object)") from None
    if not isinstance(header, dict):
        raise _reject("header is not a JSON object")
    return header, 8 + n


def parse_safetensors(buf: bytearray) -> Payload:
    """Tensors viewing `buf` (which must stay alive and unchanged while they are used)."""
    header, start = parse_header(buf)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _reject("__metadata__ must map strings to strings")
    size = len(buf) - start
    spans, tensors = [], {}
    for name, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _reject(
                f"tensor {name!r}: unknown dtype or malformed shape/data_offsets ({info!r})"
            ) from None
        nbytes = math.prod(shape) * dtype.itemsize
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= size or end - begin != nbytes:
            raise _reject(
                f"tensor {name!r}: data_offsets [{begin}, {end}] do not hold shape {shape} of "
                f"{info['dtype']} within the {size} data bytes (truncated or corrupt)"
            )
        spans.append((begin, end, name))
        tensors[name] = _view(buf, start + begin, nbytes, dtype, shape)
    _check_layout(spans, size)
    return Payload(tensors, metadata)


def _view(buf: bytearray, offset: int, nbytes: int, dtype, shape) -> torch.Tensor:
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    raw = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=offset)
    if offset % dtype.itemsize:
        raw = raw.clone()  # unaligned data: reinterpreting needs an aligned copy
    return raw.view(dtype).view(shape)


def _check_layout(spans: list[tuple[int, int, str]], size: int) -> None:
    """Tensors must tile the data exactly: no overlap, no gap, nothing trailing."""
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            why = "overlaps another tensor" if begin < at else f"leaves a gap at byte {at}"
            raise _reject(f"tensor {name!r} {why}")
        at = end
    if at != size:
        raise _reject(f"{size - at} bytes after the last tensor (corrupt or concatenated)")

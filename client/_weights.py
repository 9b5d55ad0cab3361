"""Pushing tensors: bucketing, serialization and the push sequence, shared by both clients.

torch and safetensors are imported only here, and only when a push is made: the base client stays
torch-free. The sequences are generators that yield (request, response model) and receive the
parsed answer, so the sync and async clients run the same steps with the one driver (_drive.py)
and only send differently.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import json
import logging
import struct
from collections.abc import Generator, Mapping
from typing import Any

from ._requests import PreparedRequest, RequestCore
from ._retry import RecoveredUpdate
from .errors import NotFoundError
from .schema import ModelInfo, UploadStatus, WeightUpdate
from .wire import ADAPTER_CONFIG_KEY, SAFETENSORS_DTYPES, ErrorCode

log = logging.getLogger(__name__)

DEFAULT_BUCKET_BYTES = 256 << 20

# What a client driver receives: a request and the model its answer parses into (None: ignore).
Step = tuple[PreparedRequest, type | None]
Plan = Generator[Step, Any, WeightUpdate]


def named_tensors(source: Any) -> dict[str, Any]:
    """name → tensor from an nn.Module (its state_dict) or a mapping; tied tensors kept once."""
    import torch

    if isinstance(source, torch.nn.Module):
        items = source.state_dict().items()
    elif isinstance(source, Mapping):
        items = source.items()
    else:
        raise TypeError(f"expected a torch.nn.Module or a dict of tensors, not {type(source)}")
    out, seen = {}, set()
    for name, tensor in items:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
               tuple(tensor.shape), tensor.dtype)  # fmt: skip
        if tensor.numel() and key in seen:
            continue  # the second name of a tied pair (lm_head = embed_tokens)
        seen.add(key)
        out[name] = tensor.detach()
    return out


def torch_dtype(name: str):
    import torch

    dtype = getattr(torch, name, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def cast_floating(tensors: dict[str, Any], dtype) -> dict[str, Any]:
    """Floating tensors in the served dtype (the server refuses any other)."""
    if dtype is None:
        return tensors
    return {
        n: t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t
        for n, t in tensors.items()
    }


def buckets(tensors: dict[str, Any], bucket_bytes: int) -> list[list[str]]:
    """Names grouped so each bucket holds at most `bucket_bytes` (a larger tensor goes alone)."""
    out: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if out[-1] and size + n > bucket_bytes:
            out.append([])
            size = 0
        out[-1].append(name)
        size += n
    return [b for b in out if b]


class TensorBody:
    """The safetensors byte format of `tensors`, as parts that view the tensors' own memory.

    Nothing is copied on the client (CPU tensors that are contiguous are sent from where they
    lie); tensors are laid out widest dtype first after an 8-byte-padded header, so every tensor
    starts aligned and the server can view it in place too.
    """

    def __init__(self, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None):
        import torch

        ready = {n: t.detach().to("cpu").contiguous() for n, t in tensors.items()}
        order = sorted(ready, key=lambda n: (-ready[n].element_size(), n))
        header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        offset, views = 0, []
        for name in order:
            t = ready[name]
            code = SAFETENSORS_DTYPES.get(str(t.dtype).removeprefix("torch."))
            if code is None:
                raise TypeError(f"{name!r}: dtype {t.dtype} has no safetensors code")
            nbytes = t.numel() * t.element_size()
            span = [offset, offset + nbytes]
            header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": span}
            offset += nbytes
            if nbytes:
                views.append(_bytes_of(t.reshape(-1).view(torch.uint8)))
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self._keep = ready  # the views below point into these
        self.parts: list[bytes | memoryview] = [struct.pack("<Q", len(text)) + text, *views]
        self.length = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in self.parts)

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def _bytes_of(flat) -> memoryview:
    """A memoryview of a contiguous CPU uint8 tensor's memory (kept alive by the caller)."""
    try:
        return memoryview(flat.numpy())
    except (ImportError, RuntimeError):  # torch built or installed without numpy
        return memoryview((ctypes.c_ubyte * flat.numel()).from_address(flat.data_ptr()))


def serialize(tensors: Mapping[str, Any], metadata: dict[str, str] | None = None) -> TensorBody:
    return TensorBody(tensors, metadata)


class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def reset(self) -> None:
        if self.bar is not None:
            self.bar.reset()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def push_plan(
    core: RequestCore,
    source: Any,
    *,
    version: int | None,
    bucket_bytes: int,
    full: bool | None,
    cast: bool,
    progress: bool,
    timeout: float,
    restarts: int = 0,
) -> Plan:
    """One request for a small push; else open an upload, stage each bucket, commit.

    Each request is retried by the client's policy (a bucket is staged again in place: the server
    accepts a tensor twice when it carries the same values). When the upload itself is gone (it
    expired, or the server restarted), the push starts over with a new upload, at most `restarts`
    times. On any other failure after the upload is opened, the upload is aborted (best effort)
    and the failure re-raised: nothing is left staged and nothing was applied.
    """
    import torch

    if bucket_bytes <= 0:
        raise ValueError("bucket_bytes must be positive")
    if full is None:
        full = isinstance(source, torch.nn.Module)
    tensors = named_tensors(source)
    if not tensors:
        raise ValueError("nothing to push: no tensors given")
    if cast:
        info: ModelInfo = yield core.get("/v1/model"), ModelInfo
        tensors = cast_floating(tensors, torch_dtype(info.dtype))
    groups = buckets(tensors, bucket_bytes)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    bar = _Progress(total, progress, "push")
    try:
        if len(groups) == 1:
            body = serialize(tensors)
            result = yield (
                core.push_weights(body, version=version, full=full, timeout=timeout),
                (WeightUpdate),
            )
            bar.update(body.length)
            return result
        for start in range(restarts + 1):
            try:
                return (yield from _upload(core, tensors, groups, version, full, timeout, bar))
            except NotFoundError as exc:
                if exc.code != ErrorCode.UPLOAD_NOT_FOUND or start == restarts:
                    raise
                log.warning("upload gone (%s); starting the push over", exc.message)
                bar.reset()
        raise AssertionError("unreachable")  # the loop returns or raises
    finally:
        bar.close()


def _upload(core, tensors, groups, version, full, timeout, bar) -> Plan:
    status: UploadStatus = yield core.create_upload(timeout=timeout), UploadStatus
    try:
        for names in groups:
            body = serialize({n: tensors[n] for n in names})
            yield core.stage_bucket(status.upload_id, body, timeout=timeout), UploadStatus
            del body
            bar.update(sum(tensors[n].numel() * tensors[n].element_size() for n in names))
        commit = core.commit_upload(status.upload_id, version=version, full=full, timeout=timeout)
        try:
            return (yield commit, WeightUpdate)
        except NotFoundError as exc:
            if exc.attempts == 1 or version is None:
                raise  # the upload expired before the commit: nothing was applied
            # An earlier commit try went unanswered and took the upload: did it apply?
            info: ModelInfo = yield core.get("/v1/model"), ModelInfo
            if info.weight_version == version:
                return RecoveredUpdate(operation="commit", weight_version=version)
            raise
    except BaseException:
        # Best effort: the upload may already be gone (expired); the first failure is the news.
        with contextlib.suppress(Exception):
            yield core.abort_upload(status.upload_id, timeout=timeout), None
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def adapter_body(source: Any, config: Any) -> TensorBody:
    """A pushed adapter: its LoRA tensors, and its config in the safetensors metadata.

    `source` is a peft model (its active adapter is taken, with its config) or a dict of tensors
    under PEFT's saved names (then `config` is a peft LoraConfig or its dict).
    """
    if hasattr(source, "peft_config"):
        from peft import get_peft_model_state_dict

        name = source.active_adapter
        config = config or source.peft_config[name]
        source = get_peft_model_state_dict(source, adapter_name=name)
    if config is None:
        raise ValueError("pushing adapter tensors needs its config= (a LoraConfig or dict)")
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    text = json.dumps(raw, default=_jsonable)
    return serialize(named_tensors(source), {ADAPTER_CONFIG_KEY: text})


__all__ = ["DEFAULT_BUCKET_BYTES", "adapter_body", "push_plan"]

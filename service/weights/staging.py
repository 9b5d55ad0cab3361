"""Bucketed pushes: validated tensors held per upload until commit, abort or expiry.

The one staging book of both deployments: a plain server holds each bucket's tensors (`merge`);
the Ray ingress, which holds no model, holds references to buckets its replicas checked
(`add_part`). Both count against the same bound.

Memory is bounded: room for a body is reserved before it is read (413 when the staged total would
pass the bound), and an upload left untouched for `ttl_s` is dropped. Buckets of one upload may
arrive concurrently; each is validated on its own and merged under the lock.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vigor_client.schema import UploadStatus

from ..errors import LimitExceededError, UploadNotFoundError, WeightsRejectedError
from .validate import Checked


@dataclass
class Upload:
    id: str
    deadline: float
    checked: Checked = field(default_factory=Checked)
    buffers: list[bytearray] = field(default_factory=list)  # what the staged tensors view
    parts: list[Any] = field(default_factory=list)  # buckets held elsewhere (Ray's object store)
    part_names: set[str] = field(default_factory=set)
    part_bytes: int = 0

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.buffers) + self.part_bytes

    @property
    def tensors(self) -> int:
        return len(self.checked) + len(self.part_names)

    @property
    def empty(self) -> bool:
        return not self.checked.tensors and not self.parts


class StagingArea:
    def __init__(self, ttl_s: float, max_bytes: Callable[[], int]) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._uploads: dict[str, Upload] = {}
        self._reserved = 0  # bodies being read, and uploads being committed
        self._lock = threading.Lock()
        self.expired = 0

    @property
    def staged_bytes(self) -> int:
        with self._lock:
            return self._held()

    def _held(self) -> int:
        return sum(u.nbytes for u in self._uploads.values()) + self._reserved

    def next_deadline(self) -> float | None:
        with self._lock:
            return min((u.deadline for u in self._uploads.values()), default=None)

    def sweep(self, now: float | None = None) -> int:
        """Drop uploads past their deadline; returns how many were dropped."""
        now = time.monotonic() if now is None else now
        with self._lock:
            dead = [k for k, u in self._uploads.items() if u.deadline <= now]
            for key in dead:
                del self._uploads[key]
            self.expired += len(dead)
        return len(dead)

    def status(self, upload: Upload, state: str = "open") -> UploadStatus:
        left = max(0.0, upload.deadline - time.monotonic()) if state == "open" else 0.0
        return UploadStatus(
            upload_id=upload.id,
            tensors=upload.tensors,
            bytes=upload.checked.nbytes + upload.part_bytes,
            expires_in_s=round(left, 3),
            state=state,
        )

    def create(self) -> Upload:
        self.sweep()
        upload = Upload(secrets.token_urlsafe(12), time.monotonic() + self.ttl_s)
        with self._lock:
            self._uploads[upload.id] = upload
        return upload

    def _get(self, upload_id: str) -> Upload:
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise UploadNotFoundError(
                f"no open upload {upload_id!r}: never created, being committed, committed, "
                f"aborted, or dropped after {self.ttl_s:g} s untouched"
            )
        return upload

    def check_open(self, upload_id: str) -> None:
        self.sweep()
        with self._lock:
            self._get(upload_id).deadline = time.monotonic() + self.ttl_s

    def reserve(self, nbytes: int) -> None:
        """Room for a body about to be read; `release` it once the body is staged or dropped."""
        with self._lock:
            held, bound = self._held(), self.max_bytes()
            if held + nbytes > bound:
                raise LimitExceededError(
                    f"{nbytes} more bytes would take staged weights to {held + nbytes}, over "
                    f"the bound of {bound} (--max-staged-bytes); commit or abort uploads first"
                )
            self._reserved += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self._reserved -= nbytes

    def merge(self, upload_id: str, bucket: Checked, buffer: bytearray) -> Upload:
        """Add a validated bucket; a tensor given again must carry the same values."""
        with self._lock:
            upload = self._get(upload_id)
            staged = upload.checked
            clashes = [
                f"tensor {name!r} was already staged as {staged.given[key]!r} with other values"
                for key, name in bucket.given.items()
                if key in staged.tensors
                and not torch.equal(staged.tensors[key], bucket.tensors[key])
            ]
            if clashes:
                raise WeightsRejectedError(clashes)
            for key, tensor in bucket.tensors.items():
                if key not in staged.tensors:
                    staged.tensors[key] = tensor
                    staged.given[key] = bucket.given[key]
            upload.buffers.append(buffer)
            upload.deadline = time.monotonic() + self.ttl_s
            return upload

    def add_part(self, upload_id: str, part: Any, names: list[str], nbytes: int) -> Upload:
        """Add a bucket checked elsewhere and held elsewhere, by reference; `nbytes` counts."""
        with self._lock:
            upload = self._get(upload_id)
            upload.parts.append(part)
            upload.part_names.update(names)
            upload.part_bytes += nbytes
            upload.deadline = time.monotonic() + self.ttl_s
            return upload

    def take(self, upload_id: str) -> Upload:
        """Remove the upload for its commit; `restore` it if the commit fails."""
        self.sweep()
        with self._lock:
            upload = self._uploads.pop(upload_id, None) or self._get(upload_id)
            self._reserved += upload.nbytes
            return upload

    def restore(self, upload: Upload) -> None:
        with self._lock:
            self._reserved -= upload.nbytes
            upload.deadline = time.monotonic() + self.ttl_s
            self._uploads[upload.id] = upload

    def done(self, upload: Upload) -> None:
        """Committed: its memory is free once the caller drops it."""
        with self._lock:
            self._reserved -= upload.nbytes

    def abort(self, upload_id: str) -> Upload:
        with self._lock:
            upload = self._get(upload_id)
            del self._uploads[upload_id]
            return upload

    def __len__(self) -> int:
        return len(self._uploads)

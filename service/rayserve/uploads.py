"""Bucketed uploads at the ingress: references to bodies already checked by a replica.

The bodies themselves sit in Ray's object store until the commit; an upload untouched for
`ttl_s` is dropped, like a single server's staged upload.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from vigor_client.schema import UploadStatus

from ..errors import UploadNotFoundError


@dataclass
class ClusterUpload:
    id: str
    deadline: float
    refs: list[Any] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    nbytes: int = 0


class Uploads:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._open: dict[str, ClusterUpload] = {}

    def sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, u in self._open.items() if u.deadline < now]:
            del self._open[key]

    def create(self) -> ClusterUpload:
        self.sweep()
        upload = ClusterUpload(secrets.token_urlsafe(12), time.monotonic() + self.ttl_s)
        self._open[upload.id] = upload
        return upload

    def get(self, upload_id: str) -> ClusterUpload:
        self.sweep()
        upload = self._open.get(upload_id)
        if upload is None:
            raise UploadNotFoundError(
                f"upload {upload_id!r} does not exist (never created, committed, aborted, or "
                f"untouched for {self.ttl_s:g} s)"
            )
        return upload

    def add(self, upload_id: str, ref: Any, names: list[str], nbytes: int) -> ClusterUpload:
        upload = self.get(upload_id)
        upload.refs.append(ref)
        upload.names.update(names)
        upload.nbytes += nbytes
        upload.deadline = time.monotonic() + self.ttl_s
        return upload

    def take(self, upload_id: str) -> ClusterUpload:
        upload = self.get(upload_id)
        del self._open[upload_id]
        return upload

    def restore(self, upload: ClusterUpload) -> None:
        upload.deadline = time.monotonic() + self.ttl_s
        self._open[upload.id] = upload

    def status(self, upload: ClusterUpload, state: str = "open") -> UploadStatus:
        return UploadStatus(
            upload_id=upload.id,
            tensors=len(upload.names),
            bytes=upload.nbytes,
            expires_in_s=round(max(0.0, upload.deadline - time.monotonic()), 3),
            state=state,
        )

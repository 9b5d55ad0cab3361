"""The plain server's weight front: each admin call made into an update for the core, within a
deadline, measured, with its body read under the staging bound.

Reading and validating run off the engine worker (core.stage), so scoring continues meanwhile;
only the swap (core.apply) runs on the worker, between two requests. Every operation answers
within --admin-timeout-s: when the deadline passes first, nothing is applied. A checkpoint
watcher is one more caller of `reload`.
"""

from __future__ import annotations

import asyncio
import functools
import time

from vigor_client.schema import (
    AdapterRequest,
    CommitRequest,
    ReloadRequest,
    UploadStatus,
    WeightUpdate,
)

from ..errors import WeightsRejectedError
from ..metrics import Metrics
from ..serving import EngineWorker, ServingSlot
from .body import IncomingBody, read_body
from .core import Staged, WeightCore
from .deadline import Deadline, in_thread
from .limits import WeightLimits
from .payload import parse_safetensors
from .sources import confine
from .transfer import WeightTransfer
from .updates import AdapterDetach, AdapterUpdate, ReloadUpdate, TensorsUpdate, WeightOp


def measured(operation: str):
    """Time the operation and count its failures by error code, in /metrics."""

    def wrap(method):
        @functools.wraps(method)
        async def run(self: WeightPlane, *args, **kwargs):
            with self.metrics.weight_operation(operation):
                return await method(self, *args, **kwargs)

        return run

    return wrap


class WeightPlane:
    def __init__(
        self, limits: WeightLimits, slot: ServingSlot, worker: EngineWorker, metrics: Metrics
    ) -> None:
        self.limits = limits
        self.slot = slot
        self.metrics = metrics
        self.core = WeightCore(limits, slot, worker)
        self.staging = self.core.staging
        self._sweeper: asyncio.TimerHandle | None = None
        # Over torch.distributed: same core, same staging bound, same swap.
        self.transfer = WeightTransfer(limits, self.core, metrics)

    # --- shared steps ---------------------------------------------------------------------
    async def _read_body(self, body: IncomingBody, deadline: Deadline, operation: str) -> bytearray:
        buf = await read_body(body, deadline, self.staging)
        self.metrics.weight_bytes.labels(operation).inc(len(buf))
        return buf

    async def _update(
        self, op: WeightOp, version: int | None, deadline: Deadline, start: float
    ) -> WeightUpdate:
        """Stage and apply one update; what it reserved is released whatever happens."""
        staged = await self.core.stage(op, version, deadline)
        return await self._apply(staged, deadline, start)

    async def _apply(self, staged: Staged, deadline: Deadline, start: float) -> WeightUpdate:
        try:
            versions = await self.core.apply(staged, deadline)
        finally:
            self.core.release(staged)
        return self.core.result(staged, versions, start)

    def _expire_later(self) -> None:
        """Keep one timer armed for the earliest upload deadline, so expiry needs no request."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweeper = None
        due = self.staging.next_deadline()
        if due is not None:
            delay = max(0.0, due - time.monotonic()) + 0.01
            self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        self.staging.sweep()
        self._expire_later()

    # --- full or partial weights ----------------------------------------------------------
    @measured("reload")
    async def reload(self, req: ReloadRequest) -> WeightUpdate:
        start, deadline = time.perf_counter(), self.core.deadline()
        self.slot.require_served()
        self.slot.next_version(req.version)  # refuse a stale version before reading gigabytes
        op = ReloadUpdate(req.path, full=req.full, allow_cast=req.allow_cast)
        staged = await self.core.stage(op, req.version, deadline)
        self.metrics.weight_bytes.labels("reload").inc(staged.reserved)
        return await self._apply(staged, deadline, start)

    @measured("push")
    async def push(self, body: IncomingBody, version: int | None, full: bool) -> WeightUpdate:
        start, deadline = time.perf_counter(), self.core.deadline()
        self.slot.require_served()
        self.slot.next_version(version)
        buf = await self._read_body(body, deadline, "push")
        try:
            return await self._update(TensorsUpdate((buf,), full=full), version, deadline, start)
        finally:
            self.staging.release(len(buf))

    # --- bucketed push: create, stage buckets, commit or abort ---------------------------
    def create_upload(self) -> UploadStatus:
        self.slot.require_served()
        upload = self.staging.create()
        self._expire_later()
        return self.staging.status(upload)

    @measured("stage")
    async def stage(self, upload_id: str, body: IncomingBody) -> UploadStatus:
        deadline = self.core.deadline()
        served = self.slot.require_served()
        self.staging.check_open(upload_id)  # 404 before reading a body nobody will use
        try:
            buf = await self._read_body(body, deadline, "stage")
            try:
                checked = await in_thread(
                    deadline,
                    "checking the bucket",
                    lambda _: self.core.check(served, parse_safetensors(buf).tensors, full=False),
                )
                upload = self.staging.merge(upload_id, checked, buf)
            finally:
                self.staging.release(len(buf))
        finally:
            self._expire_later()  # the upload's clock restarted
        return self.staging.status(upload)

    @measured("commit")
    async def commit(self, upload_id: str, req: CommitRequest) -> WeightUpdate:
        start, deadline = time.perf_counter(), self.core.deadline()
        self.slot.require_served()
        upload = self.staging.take(upload_id)
        try:
            if upload.empty:
                # A commit of nothing would move the version with no weight changed: a trainer
                # whose buckets were all refused must hear it, not see a new version.
                raise WeightsRejectedError(
                    [f"upload {upload_id!r} has no staged tensors; stage a bucket, then commit"]
                )
            staged = self.core.staged_tensors(
                upload.checked, full=req.full, operation="commit", version=req.version
            )
            answer = await self._apply(staged, deadline, start)
        except BaseException:
            self.staging.restore(upload)  # the client may fix the version and commit again
            self._expire_later()
            raise
        self.staging.done(upload)
        return answer

    def abort(self, upload_id: str) -> UploadStatus:
        upload = self.staging.abort(upload_id)
        return self.staging.status(upload, state="aborted")

    # --- LoRA adapters --------------------------------------------------------------------
    @measured("adapter_load")
    async def load_adapter(self, req: AdapterRequest) -> WeightUpdate:
        start, deadline = time.perf_counter(), self.core.deadline()
        name = req.name or confine(req.path, self.limits.allowed_weights_dir).name
        op = AdapterUpdate(name=name, allow_cast=req.allow_cast, path=req.path)
        return await self._adapter(op, req.version, deadline, start)

    @measured("adapter_load")
    async def push_adapter(
        self, body: IncomingBody, version: int | None, name: str | None, allow_cast: bool
    ) -> WeightUpdate:
        start, deadline = time.perf_counter(), self.core.deadline()
        buf = await self._read_body(body, deadline, "adapter_load")
        try:
            op = AdapterUpdate(name=name or "pushed", allow_cast=allow_cast, body=buf)
            return await self._adapter(op, version, deadline, start)
        finally:
            self.staging.release(len(buf))

    async def _adapter(self, op, version, deadline, start) -> WeightUpdate:
        staged = await self.core.stage(op, version, deadline)
        self.slot.next_version(version)  # a stale version is refused before peft runs
        return await self._apply(staged, deadline, start)

    @measured("adapter_unload")
    async def unload_adapter(self, version: int | None) -> WeightUpdate:
        start, deadline = time.perf_counter(), self.core.deadline()
        return await self._update(AdapterDetach(), version, deadline, start)

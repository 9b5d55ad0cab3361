"""The ingress's weight plane: every admin call staged on every replica, then committed.

The same calls as WeightPlane (the admin routes cannot tell them apart). Each becomes one Update
proposed to the ledger: every live replica stages it (reads and validates; a refusal aborts it
everywhere and answers as a single server would), the ledger commits it (the point of no return,
so a replica that starts from here on replays it), every replica applies it, and the ingress's
version moves only once all have. A replica that fails to apply is replaced; if every one refused
(nothing applied anywhere) the update is rolled back and its error answered.
"""

from __future__ import annotations

import asyncio
import time

from vigor_client.schema import (
    AdapterRequest,
    CommitRequest,
    ReloadRequest,
    UploadStatus,
    WeightUpdate,
)

from ..errors import DeadlineExceededError, NotReadyError, WeightsRejectedError
from ..metrics import Metrics
from ..serving import ServingSlot
from ..settings import Settings
from ..weights.bounded import Deadline, IncomingBody, read_body
from ..weights.staging import StagingArea
from .ops import AdapterOp, AdapterUnloadOp, Op, ReloadOp, TensorsOp, Update
from .remote import unwrap
from .uploads import Uploads


class ClusterWeights:
    def __init__(self, settings: Settings, slot: ServingSlot, metrics: Metrics, ledger, replicas):
        self.settings = settings
        self.slot = slot
        self.metrics = metrics
        self.ledger = ledger
        self.replicas = replicas  # DeploymentHandle of the scoring replicas
        # Bounds the bodies being read; they leave for the object store once read.
        self.staging = StagingArea(settings.upload_ttl_s, self.max_staged_bytes)
        self.uploads = Uploads(settings.upload_ttl_s)
        self._lock = asyncio.Lock()  # one update in flight at a time

    def max_staged_bytes(self) -> int:
        if self.settings.max_staged_bytes is not None:
            return self.settings.max_staged_bytes
        served = self.slot.served
        return 2 * (served.nbytes if served is not None else 0) + (64 << 20)

    async def _put(self, buf: bytearray):
        # Put by the ledger, which owns it: the body outlives this ingress, for replicas that
        # start later (ray.put's _owner argument is gone since Ray 2.56).
        (ref,) = await self.ledger.keep.remote(bytes(buf))
        return ref

    async def _body(self, body: IncomingBody, operation: str):
        deadline = Deadline(self.settings.admin_timeout_s)
        buf = await read_body(body, deadline, self.staging)
        try:
            self.metrics.weight_bytes.labels(operation).inc(len(buf))
            return await self._put(buf), len(buf)
        finally:
            self.staging.release(len(buf))

    # --- the admin calls ------------------------------------------------------------------
    async def reload(self, req: ReloadRequest) -> WeightUpdate:
        op = ReloadOp(req.path, full=req.full, allow_cast=req.allow_cast)
        return await self._update("reload", op, req.version)

    async def push(self, body: IncomingBody, version: int | None, full: bool) -> WeightUpdate:
        self.slot.require_served()
        self.slot.next_version(version)  # refuse a stale version before reading the body
        ref, _ = await self._body(body, "push")
        return await self._update("push", TensorsOp((ref,), full=full), version)

    def create_upload(self) -> UploadStatus:
        self.slot.require_served()
        return self.uploads.status(self.uploads.create())

    async def stage(self, upload_id: str, body: IncomingBody) -> UploadStatus:
        from ray.exceptions import RayTaskError

        self.uploads.get(upload_id)  # 404 before reading a body nobody will use
        ref, n = await self._body(body, "stage")
        try:
            names = await self.replicas.check_bucket.remote(ref)
        except RayTaskError as exc:
            raise unwrap(exc) from None
        return self.uploads.status(self.uploads.add(upload_id, ref, names, n))

    async def commit(self, upload_id: str, req: CommitRequest) -> WeightUpdate:
        upload = self.uploads.take(upload_id)
        op = TensorsOp(tuple(upload.refs), full=req.full, operation="commit")
        try:
            if not upload.refs:  # as on one server: a commit of nothing is refused
                raise WeightsRejectedError(
                    [f"upload {upload_id!r} has no staged tensors; stage a bucket, then commit"]
                )
            return await self._update("commit", op, req.version)
        except BaseException:
            self.uploads.restore(upload)  # the client may fix the version and commit again
            raise

    def abort(self, upload_id: str) -> UploadStatus:
        return self.uploads.status(self.uploads.take(upload_id), state="aborted")

    async def load_adapter(self, req: AdapterRequest) -> WeightUpdate:
        from pathlib import Path

        name = req.name or Path(req.path).name
        op = AdapterOp(name=name, allow_cast=req.allow_cast, path=req.path)
        return await self._update("adapter_load", op, req.version)

    async def push_adapter(
        self, body: IncomingBody, version: int | None, name: str | None, allow_cast: bool
    ) -> WeightUpdate:
        ref, _ = await self._body(body, "adapter_load")
        op = AdapterOp(name=name or "pushed", allow_cast=allow_cast, blob=ref)
        return await self._update("adapter_load", op, version)

    async def unload_adapter(self, version: int | None) -> WeightUpdate:
        return await self._update("adapter_unload", AdapterUnloadOp(), version)

    # --- one update, end to end -----------------------------------------------------------
    async def _update(self, operation: str, op: Op, version: int | None) -> WeightUpdate:
        with self.metrics.weight_operation(operation):
            async with self._lock:
                return await self._run(operation, op, version)

    async def _run(self, operation: str, op: Op, version: int | None) -> WeightUpdate:
        start, timeout = time.perf_counter(), self.settings.admin_timeout_s
        self.slot.require_served()
        update = Update(self.slot.next_version(version), op)
        previous, before = self.slot.version, await self.ledger.history.remote()
        await self.ledger.propose.remote(update)
        try:
            staged = await self.ledger.await_staged.remote(update.id, timeout)
            if not staged:
                raise NotReadyError("no scoring replica is live to take the update; retry")
            for outcome in staged.values():
                if outcome == "timeout":
                    raise DeadlineExceededError(
                        f"a replica did not stage the {operation} within {timeout:g} s "
                        "(--admin-timeout-s); the served weights are unchanged"
                    )
                if isinstance(outcome, BaseException):
                    raise outcome
        except BaseException:
            await self.ledger.abort.remote(update.id)
            raise
        await self.ledger.commit.remote(update.id)
        _, live = await self.ledger.state.remote()
        left = await self.ledger.await_applied.remote(update.version, timeout)
        errors = [e for e in left.values() if isinstance(e, BaseException)]
        if left and len(errors) == len(left) == live:  # nothing applied anywhere
            await self.ledger.roll_back.remote(update, previous, before)
            raise errors[0]
        if left:
            await self.ledger.replace.remote(list(left))
        if isinstance(op, AdapterOp | AdapterUnloadOp):
            self.slot.served.adapter = op.name if isinstance(op, AdapterOp) else None
        self.slot.bump_version(update.version)
        tensors, nbytes = _sizes(staged.values())
        return WeightUpdate(
            operation=operation,
            weight_version=update.version,
            previous_version=previous,
            tensors=tensors,
            bytes=nbytes,
            seconds=round(time.perf_counter() - start, 4),
            adapter=self.slot.served.adapter,
        )


def _sizes(outcomes) -> tuple[int, int]:
    """(tensors, bytes) one replica staged; all stage the same."""
    for outcome in outcomes:
        if isinstance(outcome, tuple):
            return outcome
    return 0, 0

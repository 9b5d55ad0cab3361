"""The ingress's weight front: each admin call staged on every replica, then committed.

The same calls as WeightPlane (api/seams.WeightFront; the admin routes cannot tell them apart).
Each becomes one of the weight core's updates, proposed to the ledger with its version: every
live replica stages it through its own WeightCore (a refusal aborts it everywhere and answers as
a single server would), the ledger commits it (the point of no return, so a replica that starts
from here on replays it), every replica applies it, and the ingress's version moves only once all
have. A replica that fails to apply is replaced; if every one refused (nothing applied anywhere)
the update is rolled back and its error answered. What differs from a plain server is only that
fan-out and commit; bodies and bucketed uploads are bounded by the same staging book and limits.

The vLLM transfer is not served here (`transfer = None`, so app.py does not mount its routes):
each replica would have to join the trainer's process group.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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
from ..weights.body import IncomingBody, read_body
from ..weights.deadline import Deadline
from ..weights.limits import WeightLimits
from ..weights.staging import StagingArea
from ..weights.transfer import WeightTransfer
from ..weights.updates import (
    AdapterDetach,
    AdapterUpdate,
    ReloadUpdate,
    TensorsUpdate,
    WeightOp,
    operation_of,
)
from .ops import Update
from .remote import unwrap


class ClusterWeights:
    transfer: WeightTransfer | None = None  # not served on Ray (see the module's docstring)

    def __init__(self, limits: WeightLimits, slot: ServingSlot, metrics: Metrics, ledger, replicas):
        self.limits = limits
        self.slot = slot
        self.metrics = metrics
        self.ledger = ledger
        self.replicas = replicas  # DeploymentHandle of the scoring replicas
        # Bodies being read, and the buckets of open uploads (held in the object store).
        self.staging = StagingArea(limits.upload_ttl_s, self.max_staged_bytes)
        self._lock = asyncio.Lock()  # one update in flight at a time

    def max_staged_bytes(self) -> int:
        served = self.slot.served
        return self.limits.staged_bound(served.nbytes if served is not None else 0)

    async def _put(self, buf: bytearray):
        # Put by the ledger, which owns it: the body outlives this ingress, for replicas that
        # start later (ray.put's _owner argument is gone since Ray 2.56).
        (ref,) = await self.ledger.keep.remote(bytes(buf))
        return ref

    async def _body(self, body: IncomingBody, operation: str):
        deadline = Deadline(self.limits.admin_timeout_s)
        buf = await read_body(body, deadline, self.staging)
        try:
            self.metrics.weight_bytes.labels(operation).inc(len(buf))
            return await self._put(buf), len(buf)
        finally:
            self.staging.release(len(buf))

    # --- the admin calls ------------------------------------------------------------------
    async def reload(self, req: ReloadRequest) -> WeightUpdate:
        op = ReloadUpdate(req.path, full=req.full, allow_cast=req.allow_cast)
        return await self._update(op, req.version)

    async def push(self, body: IncomingBody, version: int | None, full: bool) -> WeightUpdate:
        self.slot.require_served()
        self.slot.next_version(version)  # refuse a stale version before reading the body
        ref, _ = await self._body(body, "push")
        return await self._update(TensorsUpdate((ref,), full=full), version)

    def create_upload(self) -> UploadStatus:
        self.slot.require_served()
        return self.staging.status(self.staging.create())

    async def stage(self, upload_id: str, body: IncomingBody) -> UploadStatus:
        from ray.exceptions import RayTaskError

        self.staging.check_open(upload_id)  # 404 before reading a body nobody will use
        deadline = Deadline(self.limits.admin_timeout_s)
        buf = await read_body(body, deadline, self.staging)
        try:
            self.metrics.weight_bytes.labels("stage").inc(len(buf))
            ref = await self._put(buf)
            try:
                names = await self.replicas.check_bucket.remote(ref)
            except RayTaskError as exc:
                raise unwrap(exc) from None
            # Its bytes stay counted against the staging bound until commit, abort or expiry.
            upload = self.staging.add_part(upload_id, ref, names, len(buf))
        finally:
            self.staging.release(len(buf))
        return self.staging.status(upload)

    async def commit(self, upload_id: str, req: CommitRequest) -> WeightUpdate:
        upload = self.staging.take(upload_id)
        op = TensorsUpdate(tuple(upload.parts), full=req.full, operation="commit")
        try:
            if upload.empty:  # as on one server: a commit of nothing is refused
                raise WeightsRejectedError(
                    [f"upload {upload_id!r} has no staged tensors; stage a bucket, then commit"]
                )
            answer = await self._update(op, req.version)
        except BaseException:
            self.staging.restore(upload)  # the client may fix the version and commit again
            raise
        self.staging.done(upload)
        return answer

    def abort(self, upload_id: str) -> UploadStatus:
        return self.staging.status(self.staging.abort(upload_id), state="aborted")

    async def load_adapter(self, req: AdapterRequest) -> WeightUpdate:
        name = req.name or Path(req.path).name
        op = AdapterUpdate(name=name, allow_cast=req.allow_cast, path=req.path)
        return await self._update(op, req.version)

    async def push_adapter(
        self, body: IncomingBody, version: int | None, name: str | None, allow_cast: bool
    ) -> WeightUpdate:
        ref, _ = await self._body(body, "adapter_load")
        op = AdapterUpdate(name=name or "pushed", allow_cast=allow_cast, body=ref)
        return await self._update(op, version)

    async def unload_adapter(self, version: int | None) -> WeightUpdate:
        return await self._update(AdapterDetach(), version)

    # --- one update, fanned out and committed -----------------------------------------------
    async def _update(self, op: WeightOp, version: int | None) -> WeightUpdate:
        with self.metrics.weight_operation(operation_of(op)):
            async with self._lock:
                return await self._run(op, version)

    async def _run(self, op: WeightOp, version: int | None) -> WeightUpdate:
        start, timeout = time.perf_counter(), self.limits.admin_timeout_s
        self.slot.require_served()
        update = Update(self.slot.next_version(version), op)
        operation = update.operation
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
        served = self.slot.require_served()
        if isinstance(op, AdapterUpdate | AdapterDetach):
            served.adapter = op.name if isinstance(op, AdapterUpdate) else None
        self.slot.bump_version(update.version)
        tensors, nbytes = _sizes(staged.values())
        return WeightUpdate(
            operation=operation,
            weight_version=update.version,
            previous_version=previous,
            tensors=tensors,
            bytes=nbytes,
            seconds=round(time.perf_counter() - start, 4),
            adapter=served.adapter,
        )


def _sizes(outcomes) -> tuple[int, int]:
    """(tensors, bytes) one replica staged; all stage the same."""
    for outcome in outcomes:
        if isinstance(outcome, tuple):
            return outcome
    return 0, 0

"""The weight plane: every admin operation, from request to swap, within a deadline.

Reading and validating run off the engine worker (in threads), so scoring continues meanwhile;
only the final copy (or adapter attach) runs on the worker, between two requests. Every operation
answers within --admin-timeout-s: when the deadline passes first, nothing is applied.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vigor_client.schema import (
    AdapterRequest,
    CommitRequest,
    ReloadRequest,
    UploadStatus,
    WeightUpdate,
)

from ..errors import WeightsRejectedError
from ..metrics import Metrics
from ..serving import EngineWorker, ServedModel, ServingSlot
from ..settings import Settings
from . import adapter as lora
from .apply import copy_weights
from .bounded import Deadline, IncomingBody, in_thread, on_worker, read_body
from .payload import parse_safetensors
from .sources import checkpoint_files, confine, read_checkpoint
from .staging import StagingArea
from .transfer import WeightTransfer
from .validate import Checked, TargetMap, check_complete, check_tensors

R = TypeVar("R")


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
        self, settings: Settings, slot: ServingSlot, worker: EngineWorker, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.slot = slot
        self.worker = worker
        self.metrics = metrics
        self.staging = StagingArea(self.settings.upload_ttl_s, self.max_staged_bytes)
        self._slots = lora.AdapterSlots()
        self._sweeper: asyncio.TimerHandle | None = None
        # Held while peft rewraps modules (on the worker) and while validation reads the names.
        self._structure = threading.Lock()
        # Over torch.distributed: same staging bound, same validation, same swap.
        self.transfer = WeightTransfer(settings, slot, worker, metrics, self.staging, self._targets)

    def max_staged_bytes(self) -> int:
        if self.settings.max_staged_bytes is not None:
            return self.settings.max_staged_bytes
        served = self.slot.served
        size = 0 if served is None else sum(p.nbytes for p in served.model.parameters())
        return 2 * size + (64 << 20)

    # --- shared steps ---------------------------------------------------------------------
    def _deadline(self) -> Deadline:
        return Deadline(self.settings.admin_timeout_s)

    async def _in_thread(self, deadline: Deadline, what: str, fn: Callable[..., R], *args) -> R:
        return await in_thread(deadline, what, fn, *args)

    async def _on_worker(self, deadline: Deadline, what: str, fn: Callable[..., R], *args) -> R:
        return await on_worker(self.worker, deadline, what, fn, *args)

    async def _read_body(self, body: IncomingBody, deadline: Deadline, operation: str) -> bytearray:
        buf = await read_body(body, deadline, self.staging)
        self.metrics.weight_bytes.labels(operation).inc(len(buf))
        return buf

    def _targets(self, served: ServedModel) -> TargetMap:
        with self._structure:  # not while an adapter is rewrapping the modules
            return TargetMap.of_model(served.model)

    def _locked(self, fn: Callable[..., R], *args, **kwargs) -> R:
        with self._structure:
            return fn(*args, **kwargs)

    def _check(
        self, served: ServedModel, tensors, *, full: bool, allow_cast: bool = False, where=""
    ) -> Checked:
        targets = self._targets(served)
        checked = check_tensors(targets, tensors, allow_cast=allow_cast, where=where)
        if full:
            check_complete(targets, checked)
        return checked

    def _result(
        self, operation: str, versions: tuple[int, int], checked: Checked | None, start: float
    ) -> WeightUpdate:
        served = self.slot.require_served()
        return WeightUpdate(
            operation=operation,
            weight_version=versions[1],
            previous_version=versions[0],
            tensors=len(checked) if checked else 0,
            bytes=checked.nbytes if checked else 0,
            seconds=round(time.perf_counter() - start, 4),
            adapter=served.adapter,
        )

    def _swap(self, deadline: Deadline, what: str, checked: Checked, version):
        return self._on_worker(deadline, what, copy_weights, self.slot, checked, version)

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
        start, deadline = time.perf_counter(), self._deadline()
        served = self.slot.require_served()
        self.slot.next_version(req.version)  # refuse a stale version before reading gigabytes

        allowed = self.settings.allowed_weights_dir

        def locate(_: threading.Event) -> tuple[list[Path], dict[str, str] | None]:
            return checkpoint_files(confine(req.path, allowed), allowed)

        def read(cancel: threading.Event) -> Checked:
            tensors = read_checkpoint(files, weight_map, cancel)
            return self._check(served, tensors, full=req.full, allow_cast=req.allow_cast)

        files, weight_map = await self._in_thread(deadline, "finding the checkpoint", locate)
        size = sum(f.stat().st_size for f in files)
        self.staging.reserve(size)  # what is read is held until the swap: same memory bound
        try:
            checked = await self._in_thread(deadline, "reading the checkpoint", read)
            versions = await self._swap(deadline, "the reload", checked, req.version)
        finally:
            self.staging.release(size)
        self.metrics.weight_bytes.labels("reload").inc(size)
        return self._result("reload", versions, checked, start)

    @measured("push")
    async def push(self, body: IncomingBody, version: int | None, full: bool) -> WeightUpdate:
        start, deadline = time.perf_counter(), self._deadline()
        served = self.slot.require_served()
        self.slot.next_version(version)
        buf = await self._read_body(body, deadline, "push")
        try:
            checked = await self._in_thread(
                deadline,
                "checking the pushed tensors",
                lambda _: self._check(served, parse_safetensors(buf).tensors, full=full),
            )
            versions = await self._swap(deadline, "the push", checked, version)
        finally:
            self.staging.release(len(buf))
        return self._result("push", versions, checked, start)

    # --- bucketed push: create, stage buckets, commit or abort ---------------------------
    def create_upload(self) -> UploadStatus:
        self.slot.require_served()
        upload = self.staging.create()
        self._expire_later()
        return self.staging.status(upload)

    @measured("stage")
    async def stage(self, upload_id: str, body: IncomingBody) -> UploadStatus:
        deadline = self._deadline()
        served = self.slot.require_served()
        self.staging.check_open(upload_id)  # 404 before reading a body nobody will use
        try:
            buf = await self._read_body(body, deadline, "stage")
            try:
                checked = await self._in_thread(
                    deadline,
                    "checking the bucket",
                    lambda _: self._check(served, parse_safetensors(buf).tensors, full=False),
                )
                upload = self.staging.merge(upload_id, checked, buf)
            finally:
                self.staging.release(len(buf))
        finally:
            self._expire_later()  # the upload's clock restarted
        return self.staging.status(upload)

    @measured("commit")
    async def commit(self, upload_id: str, req: CommitRequest) -> WeightUpdate:
        start, deadline = time.perf_counter(), self._deadline()
        served = self.slot.require_served()
        upload = self.staging.take(upload_id)
        try:
            if not len(upload.checked):
                # A commit of nothing would move the version with no weight changed: a trainer
                # whose buckets were all refused must hear it, not see a new version.
                raise WeightsRejectedError(
                    [f"upload {upload_id!r} has no staged tensors; stage a bucket, then commit"]
                )
            if req.full:
                check_complete(self._targets(served), upload.checked)
            versions = await self._swap(deadline, "the commit", upload.checked, req.version)
        except BaseException:
            self.staging.restore(upload)  # the client may fix the version and commit again
            self._expire_later()
            raise
        self.staging.done(upload)
        return self._result("commit", versions, upload.checked, start)

    def abort(self, upload_id: str) -> UploadStatus:
        upload = self.staging.abort(upload_id)
        return self.staging.status(upload, state="aborted")

    # --- LoRA adapters --------------------------------------------------------------------
    @measured("adapter_load")
    async def load_adapter(self, req: AdapterRequest) -> WeightUpdate:
        deadline = self._deadline()
        allowed = self.settings.allowed_weights_dir
        config, tensors = await self._in_thread(
            deadline,
            "reading the adapter",
            lambda cancel: lora.read_adapter_dir(req.path, allowed, cancel),
        )
        name = req.name or confine(req.path, allowed).name
        return await self._attach(deadline, config, tensors, name, req.version, req.allow_cast)

    @measured("adapter_load")
    async def push_adapter(
        self, body: IncomingBody, version: int | None, name: str | None, allow_cast: bool
    ) -> WeightUpdate:
        deadline = self._deadline()
        buf = await self._read_body(body, deadline, "adapter_load")
        try:
            payload = await asyncio.to_thread(parse_safetensors, buf)
            raw = payload.metadata.get(lora.METADATA_KEY)
            if raw is None:
                raise WeightsRejectedError(
                    [f"a pushed adapter carries its config as __metadata__[{lora.METADATA_KEY!r}]"]
                )
            config = lora.parse_config(raw, f"__metadata__[{lora.METADATA_KEY!r}]")
            return await self._attach(
                deadline, config, payload.tensors, name or "pushed", version, allow_cast
            )
        finally:
            self.staging.release(len(buf))

    async def _attach(self, deadline, config, tensors, name, version, allow_cast) -> WeightUpdate:
        start = time.perf_counter()
        self.slot.require_served()
        self.slot.next_version(version)
        await asyncio.to_thread(lora.precheck, tensors)
        previous, new, checked = await self._on_worker(
            deadline,
            "loading the adapter",
            lambda: self._locked(
                lora.attach,
                self.slot,
                config,
                tensors,
                slot=self._slots.next(),
                name=name,
                version=version,
                allow_cast=allow_cast,
            ),
        )
        return self._result("adapter_load", (previous, new), checked, start)

    @measured("adapter_unload")
    async def unload_adapter(self, version: int | None) -> WeightUpdate:
        start, deadline = time.perf_counter(), self._deadline()
        self.slot.require_served()
        versions = await self._on_worker(
            deadline,
            "unloading the adapter",
            lambda: self._locked(lora.detach, self.slot, version=version),
        )
        return self._result("adapter_unload", versions, None, start)

"""The one weight-update core: `stage(update) -> Staged` off the engine worker, `apply` on it.

Every front makes its change through here: the plain server's admin routes and vLLM transfer
(plane.py, transfer.py), each Ray replica following the ledger, and a checkpoint watcher through
the plane's `reload`. Staging reads and validates (in threads, within the caller's deadline,
scoring goes on); applying is the swap between two scoring passes, and the version moves through
the slot. What is held between the two counts against the one staging bound (`staging`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from vigor_client.schema import WeightUpdate

from ..errors import NoAdapterError, WeightsRejectedError
from ..serving import EngineWorker, ServedModel, ServingSlot
from . import adapter as lora
from .apply import copy_weights
from .deadline import Deadline, in_thread, on_worker
from .limits import WeightLimits
from .payload import parse_safetensors
from .sources import checkpoint_files, confine, read_checkpoint
from .staging import StagingArea
from .updates import (
    AdapterDetach,
    AdapterUpdate,
    ReloadUpdate,
    TensorsUpdate,
    WeightOp,
    operation_of,
)
from .validate import Checked, TargetMap, check_complete, check_tensors

R = TypeVar("R")
ADAPTER_META = f"__metadata__[{lora.METADATA_KEY!r}]"


@dataclass(frozen=True)
class StagedAdapter:
    config: Any  # peft's LoraConfig
    tensors: dict[str, torch.Tensor]
    name: str
    allow_cast: bool


@dataclass
class Staged:
    """An update read and validated, not yet served. `release` it once applied or dropped."""

    operation: str
    version: int | None
    checked: Checked | None = None  # tensors to copy in (push, commit, reload, transfer)
    adapter: StagedAdapter | None = None  # a LoRA adapter to attach
    detach: bool = False
    buffers: list[Any] = field(default_factory=list)  # what the checked tensors view
    reserved: int = 0  # bytes this stage reserved in the staging area

    @property
    def tensors(self) -> int:
        return len(self.checked) if self.checked is not None else 0

    @property
    def nbytes(self) -> int:
        return self.checked.nbytes if self.checked is not None else 0


async def fetch(body: Any) -> Any:
    """A body as bytes: given as they are, or awaited (a Ray ObjectRef)."""
    return await body if hasattr(body, "__await__") else body


class WeightCore:
    def __init__(self, limits: WeightLimits, slot: ServingSlot, worker: EngineWorker) -> None:
        self.limits = limits
        self.slot = slot
        self.worker = worker
        self.staging = StagingArea(limits.upload_ttl_s, self.max_staged_bytes)
        self._adapter_slots = lora.AdapterSlots()
        # Held while peft rewraps modules (on the worker) and while validation reads the names.
        self._structure = threading.Lock()

    def max_staged_bytes(self) -> int:
        served = self.slot.served
        size = 0 if served is None else sum(p.nbytes for p in served.model.parameters())
        return self.limits.staged_bound(size)

    def deadline(self) -> Deadline:
        return Deadline(self.limits.admin_timeout_s)

    # --- validation --------------------------------------------------------------------------
    def targets(self, served: ServedModel) -> TargetMap:
        with self._structure:  # not while an adapter is rewrapping the modules
            return TargetMap.of_model(served.model)

    def check(
        self,
        served: ServedModel,
        tensors: Mapping[str, torch.Tensor],
        *,
        full: bool,
        allow_cast: bool = False,
        where: str = "",
        into: Checked | None = None,
    ) -> Checked:
        targets = self.targets(served)
        checked = check_tensors(targets, tensors, allow_cast=allow_cast, where=where, into=into)
        if full:
            check_complete(targets, checked)
        return checked

    # --- stage ---------------------------------------------------------------------------------
    async def stage(self, op: WeightOp, version: int | None, deadline: Deadline) -> Staged:
        """Read and validate `op`; raises the error the caller answers with. Nothing is served."""
        served = self.slot.require_served()
        staged = Staged(operation_of(op), version)
        if isinstance(op, TensorsUpdate):
            await self._stage_tensors(served, op, staged, deadline)
        elif isinstance(op, ReloadUpdate):
            await self._stage_reload(served, op, staged, deadline)
        elif isinstance(op, AdapterUpdate):
            config, tensors = await self._read_adapter(op, deadline)
            await in_thread(deadline, "checking the adapter", lambda _: lora.precheck(tensors))
            staged.adapter = StagedAdapter(config, tensors, op.name, op.allow_cast)
        elif isinstance(op, AdapterDetach):
            if served.adapter is None:
                raise NoAdapterError("no adapter is loaded; the base model is being served")
            staged.detach = True
        return staged

    def staged_tensors(
        self, checked: Checked, *, full: bool, operation: str, version: int | None
    ) -> Staged:
        """Tensors validated as they arrived (an upload's buckets, a transfer's broadcast)."""
        if full:
            check_complete(self.targets(self.slot.require_served()), checked)
        return Staged(operation, version, checked=checked)

    async def _stage_tensors(self, served, op: TensorsUpdate, staged: Staged, deadline) -> None:
        checked = Checked()
        for i, body in enumerate(op.bodies):
            buf = await deadline.wait(fetch(body), "fetching the body")
            staged.buffers.append(buf)
            where = f"bucket {i}" if len(op.bodies) > 1 else ""
            await in_thread(
                deadline,
                "checking the pushed tensors",
                lambda _, b=buf, w=where: self.check(
                    served, parse_safetensors(b).tensors, full=False, where=w, into=checked
                ),
            )
        if op.full:
            check_complete(self.targets(served), checked)
        staged.checked = checked

    async def _stage_reload(self, served, op: ReloadUpdate, staged: Staged, deadline) -> None:
        allowed = self.limits.allowed_weights_dir

        def locate(_: threading.Event) -> tuple[list[Path], dict[str, str] | None]:
            return checkpoint_files(confine(op.path, allowed), allowed)

        def read(cancel: threading.Event) -> Checked:
            tensors = read_checkpoint(files, weight_map, cancel)
            return self.check(served, tensors, full=op.full, allow_cast=op.allow_cast)

        files, weight_map = await in_thread(deadline, "finding the checkpoint", locate)
        size = sum(f.stat().st_size for f in files)
        self.staging.reserve(size)  # what is read is held until the swap: same memory bound
        staged.reserved = size
        try:
            staged.checked = await in_thread(deadline, "reading the checkpoint", read)
        except BaseException:
            self.release(staged)
            raise

    async def _read_adapter(self, op: AdapterUpdate, deadline: Deadline) -> tuple[Any, dict]:
        if op.path is not None:
            allowed = self.limits.allowed_weights_dir
            return await in_thread(
                deadline,
                "reading the adapter",
                lambda cancel: lora.read_adapter_dir(op.path, allowed, cancel),
            )
        buf = await deadline.wait(fetch(op.body), "fetching the adapter")
        payload = await in_thread(deadline, "reading the adapter", lambda _: parse_safetensors(buf))
        raw = payload.metadata.get(lora.METADATA_KEY)
        if raw is None:
            raise WeightsRejectedError([f"a pushed adapter carries its config as {ADAPTER_META}"])
        return lora.parse_config(raw, ADAPTER_META), payload.tensors

    def release(self, staged: Staged) -> None:
        """Give back what the stage reserved (once; a second call does nothing)."""
        if staged.reserved:
            self.staging.release(staged.reserved)
            staged.reserved = 0

    # --- apply ---------------------------------------------------------------------------------
    async def apply(self, staged: Staged, deadline: Deadline) -> tuple[int, int]:
        """The swap on the engine worker, or nothing when it cannot start before the deadline.

        Returns (previous version, new version).
        """
        what = f"the {staged.operation.replace('_', ' ')}"
        version = staged.version
        if staged.adapter is not None:
            adapter, slot_name = staged.adapter, self._adapter_slots.next()

            def attach() -> tuple[int, int, Checked]:
                return self._locked(
                    lora.attach, self.slot, adapter.config, adapter.tensors, slot=slot_name,
                    name=adapter.name, version=version, allow_cast=adapter.allow_cast,
                )  # fmt: skip

            previous, new, checked = await on_worker(self.worker, deadline, what, attach)
            staged.checked = checked
            return previous, new
        if staged.detach:
            detach = lambda: self._locked(lora.detach, self.slot, version=version)  # noqa: E731
            return await on_worker(self.worker, deadline, what, detach)
        assert staged.checked is not None, "a staged update holds tensors, an adapter or a detach"
        return await on_worker(
            self.worker, deadline, what, copy_weights, self.slot, staged.checked, version
        )

    def _locked(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        with self._structure:
            return fn(*args, **kwargs)

    async def settle(self, version: int) -> None:
        """Reach `version` without a change of weights (versions compacted out of a history)."""

        def bump() -> None:
            if self.slot.version < version:
                self.slot.bump_version(version)

        await self.worker.run(bump)

    def result(self, staged: Staged, versions: tuple[int, int], start: float) -> WeightUpdate:
        """The answer to an applied update."""
        return WeightUpdate(
            operation=staged.operation,
            weight_version=versions[1],
            previous_version=versions[0],
            tensors=staged.tensors,
            bytes=staged.nbytes,
            seconds=round(time.perf_counter() - start, 4),
            adapter=self.slot.require_served().adapter,
        )

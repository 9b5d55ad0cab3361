"""One replica staging and applying an update, with the weight plane's own parts.

Staging reads and validates (off the engine worker, scoring continues); applying is the same swap
a single server makes (`copy_weights`, `lora.attach`, `lora.detach`) on the engine worker,
between two scoring passes, so each pass scores at one version.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..errors import NoAdapterError, WeightsRejectedError
from ..serving import EngineWorker, ServingSlot
from ..settings import Settings
from ..weights import adapter as lora
from ..weights.apply import copy_weights
from ..weights.bounded import Deadline, in_thread, on_worker
from ..weights.payload import parse_safetensors
from ..weights.sources import checkpoint_files, confine, read_checkpoint
from ..weights.validate import Checked, TargetMap, check_complete, check_tensors
from .ops import AdapterOp, AdapterUnloadOp, ReloadOp, TensorsOp, Update


@dataclass
class Staged:
    update: Update
    checked: Checked | None = None
    adapter: tuple[Any, dict] | None = None  # (LoraConfig, tensors)
    buffers: list[bytearray] = field(default_factory=list)  # what the checked tensors view


async def fetch(ref: Any) -> bytearray:
    """A body from the object store (a plain bytes value in tests without Ray)."""
    data = await ref if hasattr(ref, "__await__") else ref
    return bytearray(data)


class ReplicaUpdates:
    def __init__(self, settings: Settings, slot: ServingSlot, worker: EngineWorker) -> None:
        self.settings = settings
        self.slot = slot
        self.worker = worker
        self._adapter_slots = lora.AdapterSlots()

    def _targets(self) -> TargetMap:
        return TargetMap.of_model(self.slot.require_served().model)

    async def stage(self, update: Update) -> Staged:
        """Read and validate; raises the error a single server would answer with."""
        deadline = Deadline(self.settings.admin_timeout_s)
        op = update.op
        staged = Staged(update)
        if isinstance(op, TensorsOp):
            checked = Checked()
            for i, ref in enumerate(op.blobs):
                buf = await fetch(ref)
                staged.buffers.append(buf)
                where = f"bucket {i}" if len(op.blobs) > 1 else ""
                await asyncio.to_thread(
                    lambda b=buf, w=where: check_tensors(
                        self._targets(), parse_safetensors(b).tensors, into=checked, where=w
                    )
                )
            if op.full:
                check_complete(self._targets(), checked)
            staged.checked = checked
        elif isinstance(op, ReloadOp):
            staged.checked = await in_thread(
                deadline, "reading the checkpoint", lambda cancel: self._read(op, cancel)
            )
        elif isinstance(op, AdapterOp):
            staged.adapter = await self._read_adapter(op, deadline)
            await asyncio.to_thread(lora.precheck, staged.adapter[1])
        elif isinstance(op, AdapterUnloadOp) and self.slot.require_served().adapter is None:
            raise NoAdapterError("no adapter is loaded; the base model is being served")
        return staged

    def _read(self, op: ReloadOp, cancel) -> Checked:
        allowed = self.settings.allowed_weights_dir
        files, weight_map = checkpoint_files(confine(op.path, allowed), allowed)
        tensors = read_checkpoint(files, weight_map, cancel)
        checked = check_tensors(self._targets(), tensors, allow_cast=op.allow_cast)
        if op.full:
            check_complete(self._targets(), checked)
        return checked

    async def _read_adapter(self, op: AdapterOp, deadline: Deadline) -> tuple[Any, dict]:
        if op.path is not None:
            allowed = self.settings.allowed_weights_dir
            return await in_thread(
                deadline,
                "reading the adapter",
                lambda cancel: lora.read_adapter_dir(op.path, allowed, cancel),
            )
        payload = parse_safetensors(await fetch(op.blob))
        raw = payload.metadata.get(lora.METADATA_KEY)
        if raw is None:
            raise WeightsRejectedError(
                [f"a pushed adapter carries its config as __metadata__[{lora.METADATA_KEY!r}]"]
            )
        return lora.parse_config(raw, f"__metadata__[{lora.METADATA_KEY!r}]"), payload.tensors

    async def apply(self, staged: Staged) -> int:
        """The swap, on the engine worker; returns the version now served."""
        deadline = Deadline(self.settings.admin_timeout_s)
        update, op = staged.update, staged.update.op
        if staged.checked is not None:
            fn = lambda: copy_weights(self.slot, staged.checked, update.version)  # noqa: E731
        elif isinstance(op, AdapterOp):
            config, tensors = staged.adapter

            def fn():
                return lora.attach(
                    self.slot, config, tensors, slot=self._adapter_slots.next(), name=op.name,
                    version=update.version, allow_cast=op.allow_cast,
                )  # fmt: skip
        else:
            fn = lambda: lora.detach(self.slot, version=update.version)  # noqa: E731
        await on_worker(self.worker, deadline, f"the {update.operation}", fn)
        return self.slot.version

    async def settle(self, version: int) -> None:
        """Reach `version` without a change of weights (versions compacted out of the history)."""

        def bump() -> None:
            if self.slot.version < version:
                self.slot.bump_version(version)

        await self.worker.run(bump)

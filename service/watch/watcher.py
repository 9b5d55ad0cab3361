"""The checkpoint watcher: each new step directory a trainer writes is loaded as version = step.

It knows the weights only through the weight front's `reload` (the call /admin/weights/reload
makes: confined, validated, atomic) and the slot's version, so it works the same on a local
server and in the Ray ingress.

- Leftovers: step directories present when the watcher starts belong to an earlier run and are
  skipped, unless rewritten afterwards (their names, sizes or times change) or
  --watch-load-existing asks for the newest of them. Steps at or below the served version are
  skipped: versions only increase.
- A step is loaded once complete (steps.readiness); the newest ready step wins, older ones are
  not loaded on the way.
- A step that fails to load (corrupt, wrong model) is logged and counted, and shown in
  /v1/model; the served weights stay. It is tried again only if its files change. A step that
  stays incomplete and unchanged for --watch-wait-s is given up the same way: never a silent stall.
- A scoring call looks at the directory itself (a poll could be a second late) and waits while a
  newer step is being written or loaded, at most --watch-wait-s (then 504 checkpoint_pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from vigor_client.schema import ReloadRequest, WatchStatus, WeightUpdate

from ..errors import CheckpointPendingError, VersionConflictError, VigorServiceError
from ..metrics import Metrics
from ..serving import ServingSlot
from ..settings import Settings
from ..weights.sources import confine
from .steps import Readiness, StepPattern, fingerprint, readiness

log = logging.getLogger(__name__)

Reload = Callable[[ReloadRequest], Awaitable[WeightUpdate]]


@dataclass(frozen=True)
class Seen:
    step: int
    top: Path
    path: Path
    fingerprint: tuple
    readiness: Readiness


class CheckpointWatcher:
    def __init__(
        self, settings: Settings, slot: ServingSlot, reload: Reload, metrics: Metrics
    ) -> None:
        assert settings.watch_dir is not None
        self.settings = s = settings
        self.root = confine(str(settings.watch_dir), settings.allowed_weights_dir)
        self.pattern = StepPattern(s.watch_pattern)
        self.slot = slot
        self._reload = reload
        self.metrics = metrics
        self._leftovers: dict[int, tuple] | None = None  # step → fingerprint at start
        self._failed: dict[int, tuple] = {}  # step → fingerprint it failed with
        self._unchanged: dict[int, tuple[tuple, float]] = {}  # step → (fingerprint, since)
        self._seen: dict[int, Seen] = {}
        self._scan_task: asyncio.Task | None = None
        self._scan_began = 0.0
        self._load_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._kick = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.loaded_step: int | None = None
        self.loads = 0
        self.failures = 0
        self.last_error: str | None = None
        self.pending: Seen | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Note what is there now (an earlier run's leftovers), then poll once the model serves."""
        seen = self._scan(floor=-1)
        self._leftovers = {} if self.settings.watch_load_existing else {
            step: x.fingerprint for step, x in seen.items()
        }  # fmt: skip
        if self._leftovers:
            log.info(
                "skipping step directories present at start (an earlier run's, unless "
                "rewritten): %s", sorted(self._leftovers),
            )  # fmt: skip
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while self.slot.served is None and not self.slot.draining:
            await asyncio.sleep(0.05)  # the model loads first; a reload needs it
        log.info(
            "watching %s for %s (ready when %s)", self.root, self.pattern.pattern,
            self.settings.watch_ready,
        )  # fmt: skip
        while not self.slot.draining:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the watching
                log.exception("checkpoint watcher poll failed")
            # A scoring call that finds a ready step wakes the poll at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.settings.watch_interval_s)
            self._kick.clear()

    # --- looking ----------------------------------------------------------------------------
    def _scan(self, floor: int | None = None) -> dict[int, Seen]:
        """Steps above `floor` (default: the served version), with their state. Older ones are
        not looked into: a run that keeps every step directory must not slow each call."""
        s = self.settings
        floor = self.slot.version if floor is None else floor
        out = {}
        try:
            found = self.pattern.scan(self.root)
        except OSError as exc:  # no permission, a file where the dir should be: say so
            self.last_error = f"cannot list {self.root}: {exc.strerror or exc}"
            log.error("checkpoint watcher: %s", self.last_error)
            return {}
        for step, (top, path) in found.items():
            if step <= floor:
                continue
            out[step] = Seen(
                step, top, path, fingerprint(top, path),
                readiness(s.watch_ready, s.watch_ready_file, self.root, step, path),
            )  # fmt: skip
        return out

    async def scan(self) -> dict[int, Seen]:
        """A look at the directory that began after this call: a look begun earlier could
        predate the step this caller's samples were generated after. Callers share looks."""
        arrived = time.monotonic()
        while True:
            task = self._scan_task
            if task is not None and self._scan_began >= arrived:
                break  # begun after we arrived: share it
            if task is not None and not task.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(task)  # an older look: let it end, then look anew
                continue
            self._scan_began = time.monotonic()
            self._scan_task = asyncio.ensure_future(asyncio.to_thread(self._scan))
        seen = await asyncio.shield(task)
        self._seen = seen
        self._update_pending(seen)
        return seen

    def _candidates(self, seen: dict[int, Seen]) -> list[Seen]:
        """Newer than the served version, not a leftover, not failed as they are now."""
        leftovers = self._leftovers or {}
        return sorted(
            (
                x
                for x in seen.values()
                if x.step > self.slot.version
                and leftovers.get(x.step) != x.fingerprint
                and self._failed.get(x.step) != x.fingerprint
            ),
            key=lambda x: x.step,
        )

    def _update_pending(self, seen: dict[int, Seen]) -> None:
        candidates = self._candidates(seen)
        pending = candidates[-1] if candidates else None
        self.pending = pending
        self.metrics.watch_pending_step.set(pending.step if pending else -1)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- loading --------------------------------------------------------------------------
    async def poll(self) -> None:
        seen = await self.scan()
        async with self._load_lock:
            candidates = self._candidates(seen)
            ready = [x for x in candidates if x.readiness.ready]
            if ready:
                await self._load(ready[-1])
            else:
                self._give_up_stalled(candidates)
            self._update_pending(self._seen)

    async def _load(self, x: Seen) -> None:
        req = ReloadRequest(path=str(x.path), version=x.step, full=True, allow_cast=True)
        try:
            update = await self._reload(req)
        except VersionConflictError:
            log.info("step %d is not above version %d: skipped", x.step, self.slot.version)
            return
        except VigorServiceError as exc:
            self._fail(x, exc.code, f"step {x.step} ({x.path}): {exc.message}")
            return
        self.loads += 1
        self.loaded_step = x.step
        self._unchanged.pop(x.step, None)
        self.metrics.watch_loads.inc()
        log.info(
            "loaded step %d from %s as weight_version %d (%.2f s, %d bytes)",
            x.step, x.path, update.weight_version, update.seconds, update.bytes,
        )  # fmt: skip
        if self.settings.watch_delete:
            await asyncio.to_thread(shutil.rmtree, x.path, True)

    def _fail(self, x: Seen, code: str, message: str) -> None:
        self._failed[x.step] = x.fingerprint
        self.failures += 1
        self.last_error = message
        self.metrics.watch_failures.labels(code).inc()
        log.error(
            "checkpoint watcher: %s; still serving weight_version %d (retried if its files "
            "change)", message, self.slot.version,
        )  # fmt: skip

    def _give_up_stalled(self, candidates: list[Seen]) -> None:
        now = time.monotonic()
        for x in candidates:
            before = self._unchanged.get(x.step)
            if before is None or before[0] != x.fingerprint:
                self._unchanged[x.step] = (x.fingerprint, now)
            elif now - before[1] >= self.settings.watch_wait_s:
                del self._unchanged[x.step]
                self._fail(
                    x, "checkpoint_incomplete",
                    f"step {x.step} ({x.path}) unchanged for {now - before[1]:.0f} s and still "
                    f"incomplete: {x.readiness.why}",
                )  # fmt: skip

    # --- scoring calls wait here ----------------------------------------------------------
    async def wait_current(self) -> None:
        """Return once no newer step is being written or loaded; 504 after --watch-wait-s."""
        await self.scan()
        if self.pending is None:
            return
        self._kick_if_ready()
        self.metrics.watch_waits.inc()
        wait_s = self.settings.watch_wait_s
        end = time.monotonic() + wait_s
        while (pending := self.pending) is not None:
            left = end - time.monotonic()
            if left <= 0:
                raise CheckpointPendingError(
                    f"checkpoint watcher: step {pending.step} in {self.root} is not loaded after "
                    f"{wait_s:g} s ({pending.readiness.why or 'loading'}); served weight_version "
                    f"is {self.slot.version}"
                )
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), min(left, self.settings.watch_interval_s))
            except TimeoutError:
                await self.scan()
                self._kick_if_ready()

    def _kick_if_ready(self) -> None:
        if self.pending is not None and self.pending.readiness.ready:
            self._kick.set()

    def status(self) -> WatchStatus:
        pending = self.pending
        return WatchStatus(
            dir=str(self.root),
            pattern=self.pattern.pattern,
            ready_rule=self.settings.watch_ready,
            loaded_step=self.loaded_step,
            pending_step=pending.step if pending else None,
            pending_reason=(pending.readiness.why or "loading") if pending else None,
            loads=self.loads,
            failures=self.failures,
            last_error=self.last_error,
            skipped_leftovers=sorted(self._leftovers or {}),
        )

"""The pipeline's engine call made on a scoring replica: the ingress's stand-in for Scheduler.

One call carries whole requests (a request's groups, or one assembled group), so everything in it
is scored in one engine call on one replica at one version. A replica that dies under a call is
replaced by Ray Serve; the call goes to another replica (scoring changes nothing, so it can).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..engine.types import TokenSequence
from ..errors import ClientGoneError, NotReadyError, VigorServiceError
from ..scoring.scheduler import JobOutcome
from ..serving import ServingSlot

ATTEMPTS = 4


def unwrap(exc: BaseException) -> BaseException:
    """The replica's own error (ours map to their status codes) out of Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, VigorServiceError) else exc


class ReplicaScheduler:
    def __init__(self, handle, slot: ServingSlot) -> None:
        self._handle = handle
        self._slot = slot
        self.in_flight = 0
        self._cut: asyncio.Future[str] | None = None  # set by cut_off: waiting calls stop

    def cut_off(self, reason: str) -> int:
        if self._cut is None or self._cut.done():
            self._cut = asyncio.get_running_loop().create_future()
        self._cut.set_result(reason)
        return self.in_flight

    @property
    def depth(self) -> int:
        return self.in_flight

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def submit(
        self,
        sequences: list[TokenSequence],
        *,
        signals: tuple[str, ...] = (),
        temperature: float = 1.0,
        deadline_s: float | None = None,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> JobOutcome:
        """`gone` tells whether the caller left: then nothing is sent to a replica."""
        from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

        cost = sum(s.length for s in sequences)
        self.in_flight += 1
        try:
            for attempt in range(ATTEMPTS):
                if gone is not None and await gone():
                    raise ClientGoneError("the client disconnected before its work was sent")
                try:
                    scores, version = await self._unless_cut(
                        self._handle.score.remote(
                            sequences, signals, temperature, deadline_s,
                            at_least=self._slot.version, cost=cost,
                        )
                    )  # fmt: skip
                    return JobOutcome(list(scores), version)
                except (RayActorError, ActorUnavailableError) as exc:
                    if attempt == ATTEMPTS - 1:
                        raise NotReadyError(
                            f"scoring replicas kept failing ({type(exc).__name__}); retry"
                        ) from None
                except RayTaskError as exc:
                    raise unwrap(exc) from None
            raise AssertionError("unreachable")
        finally:
            self.in_flight -= 1

    async def _unless_cut(self, call):
        """The replica call's answer, or NotReadyError once cut_off is called (the replica's
        work goes on, unread)."""
        if self._cut is None or self._cut.done():
            self._cut = asyncio.get_running_loop().create_future()
        cut = self._cut
        task = asyncio.ensure_future(call)
        await asyncio.wait({task, cut}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nobody reads it
        raise NotReadyError(cut.result())

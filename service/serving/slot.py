"""The one owner of what is served: the model, its weight version and readiness.

Every swap path (reload, push, commit, adapter attach or detach) changes the version through
`bump_version`, on the engine worker, so the version a scoring pass reads is the one its weights
carry. Requests that need a newer version wait on `wait_for_version`.
"""

from __future__ import annotations

import asyncio

from ..engine.types import SequenceScore, Sketch, TokenSequence
from ..errors import NotReadyError, StaleWeightsError, VersionConflictError
from .served_model import ServedModel


class ServingSlot:
    def __init__(self, version: int = 0) -> None:
        self.served: ServedModel | None = None
        self.version = version
        self.load_error: str | None = None
        self.draining = False
        self.waiting = 0  # requests waiting in wait_for_version (a gauge in /metrics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop whose requests wait for versions (set once the server runs)."""
        self._loop = loop
        self._changed = asyncio.Condition()

    # --- readiness ------------------------------------------------------------------------
    def set_served(self, served: ServedModel) -> None:
        self.served = served

    def set_load_failed(self, error: str) -> None:
        self.load_error = error

    @property
    def ready(self) -> bool:
        return self.served is not None and not self.draining

    def not_ready_reason(self) -> str:
        if self.draining:
            return "shutting down"
        if self.load_error:
            return f"model failed to load: {self.load_error}"
        return "loading"

    def require_served(self) -> ServedModel:
        if self.served is None:
            raise NotReadyError(self.not_ready_reason())
        return self.served

    def require_accepting(self) -> None:
        """Scoring refuses new work while draining: the caller should try another replica."""
        if self.draining:
            raise NotReadyError("server is shutting down; send this request to another replica")

    # --- versions -------------------------------------------------------------------------
    def next_version(self, requested: int | None) -> int:
        """The version an update will carry; refuses one that is not above the served version."""
        if requested is None:
            return self.version + 1
        if requested <= self.version:
            raise VersionConflictError(
                f"version {requested} is not above the served version {self.version}; versions "
                "only increase",
                current_version=self.version,
            )
        return requested

    def bump_version(self, requested: int | None) -> tuple[int, int]:
        """On the worker, right after a swap: set the new version, wake waiting requests.

        Returns (previous version, new version).
        """
        new = self.next_version(requested)
        previous, self.version = self.version, new
        self._notify()
        return previous, new

    def _notify(self) -> None:
        if self._loop is None or self._changed is None or self._loop.is_closed():
            return
        changed = self._changed

        async def notify() -> None:
            async with changed:
                changed.notify_all()

        asyncio.run_coroutine_threadsafe(notify(), self._loop)

    async def wait_for_version(self, minimum: int, wait_s: float) -> None:
        if self.version >= minimum:
            return
        if self._changed is None:
            raise RuntimeError("ServingSlot.bind_loop was not called")
        self.waiting += 1
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.version >= minimum), wait_s
                )
        except TimeoutError:
            raise StaleWeightsError(
                f"weights are at version {self.version}, the request needs at least "
                f"{minimum} (waited {wait_s:g} s)",
                current_version=self.version,
            ) from None
        finally:
            self.waiting -= 1

    # --- scoring, on the worker ------------------------------------------------------------
    def score(
        self,
        sequences: list[TokenSequence],
        signals: tuple[str, ...],
        temperature: float,
        estimator: Sketch | None = None,
    ) -> tuple[list[SequenceScore], int]:
        """The version read here is the one every result was computed on (worker thread)."""
        served = self.require_served()
        return served.score(sequences, signals, temperature, estimator), self.version

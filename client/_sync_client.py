"""`VigorClient`: the blocking client, sending what the shared core builds with httpx.Client."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import httpx

from . import _retry
from ._client_base import CLIENT_POLICY, ClientBase, GroupLike, T
from ._defaults import DEFAULT_ADMIN_TIMEOUT, DEFAULT_URL
from ._prepared_request import PreparedRequest
from ._transport import translate_transport_error as _transport_error
from ._weights import DEFAULT_BUCKET_BYTES, adapter_body, drive_sync, push_plan
from .errors import VigorConnectionError, VigorTimeoutError
from .schema import ModelInfo, RewardsResponse, WeightUpdate


class VigorClient(ClientBase):
    """Blocking client. Every call has a timeout; server errors raise typed `VigorServerError`s."""

    def __init__(self, base_url: str = DEFAULT_URL, *, transport=None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(timeout=self._timeout, transport=transport)

    def _send(self, req: PreparedRequest) -> httpx.Response:
        """One try, no retries."""
        try:
            return self._http.send(self._core.build(self._http, req))
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from exc

    def _call(self, req: PreparedRequest, model: type[T], retry: Any = CLIENT_POLICY) -> T:
        answer = _retry.drive_sync(self._exchange(req, retry), self._send)
        return self._result(req, answer, model)

    def score(
        self, groups: Sequence[GroupLike], *, retry: Any = CLIENT_POLICY, **options: Any
    ) -> RewardsResponse:
        """Score groups of completions; options: shaping, signals, temperature,
        min_weight_version, wait_s, deadline_s, hold_s, focal, reward_spec (a name or a spec).
        `retry` overrides the client's policy."""
        return self._call(self._core.rewards(groups, **options), RewardsResponse, retry)

    def model_info(self) -> ModelInfo:
        return self._call(self._core.get("/v1/model"), ModelInfo)

    def ready(self) -> bool:
        try:
            return self._send(self._core.get("/ready")).status_code == 200
        except VigorConnectionError:
            return False

    def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5) -> ModelInfo:
        """Block until /ready answers 200, then return the model info."""
        end = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > end:
                raise VigorTimeoutError(f"{self.base_url} was not ready within {timeout:g} s")
            time.sleep(poll)
        return self.model_info()

    # --- the weight plane (needs the admin token) ----------------------------------------
    def reload_weights(
        self,
        path: str | os.PathLike[str],
        version: int | None = None,
        *,
        full: bool = True,
        allow_cast: bool = False,
        timeout: float = DEFAULT_ADMIN_TIMEOUT,
    ) -> WeightUpdate:
        """Load a checkpoint (HF directory or .safetensors file) from the server's own disk."""
        req = self._core.reload_weights(
            os.fspath(path), version=version, full=full, allow_cast=allow_cast, timeout=timeout
        )
        return self._call(req, WeightUpdate)

    def push_weights(
        self,
        model_or_state_dict: Any,
        version: int | None = None,
        *,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        full: bool | None = None,
        cast: bool = True,
        progress: bool = True,
        timeout: float = DEFAULT_ADMIN_TIMEOUT,
    ) -> WeightUpdate:
        """Send weights over HTTP in buckets of at most `bucket_bytes`, then commit them as one
        swap. `full` (default: True for a module, False for a dict) requires every parameter;
        `cast` converts floating tensors to the served dtype first. Buckets are sent straight
        from the tensors' memory: do not modify them until this returns. Needs torch."""
        plan = push_plan(
            self._core,
            model_or_state_dict,
            version=version,
            bucket_bytes=bucket_bytes,
            full=full,
            cast=cast,
            progress=progress,
            timeout=timeout,
            restarts=self.retry.max_retries,
        )
        return drive_sync(plan, self._step)

    def load_adapter(
        self,
        source: Any,
        version: int | None = None,
        *,
        config: Any = None,
        name: str | None = None,
        allow_cast: bool = True,
        timeout: float = DEFAULT_ADMIN_TIMEOUT,
    ) -> WeightUpdate:
        """Attach a PEFT LoRA adapter: a directory path on the server's disk, a peft model, or a
        dict of LoRA tensors with its `config`. Scores then differentiate the LoRA weights only."""
        if isinstance(source, str | os.PathLike):
            req = self._core.load_adapter(
                os.fspath(source),
                version=version,
                name=name,
                allow_cast=allow_cast,
                timeout=timeout,
            )
        else:
            req = self._core.push_adapter(
                adapter_body(source, config),
                version=version,
                name=name,
                allow_cast=allow_cast,
                timeout=timeout,
            )
        return self._call(req, WeightUpdate)

    def unload_adapter(
        self, version: int | None = None, *, timeout: float = DEFAULT_ADMIN_TIMEOUT
    ) -> WeightUpdate:
        """Remove the adapter: the base model is served (and scored in full) again."""
        return self._call(self._core.unload_adapter(version=version, timeout=timeout), WeightUpdate)

    def _step(self, req: PreparedRequest, model: type[T] | None) -> T | None:
        if model is not None:
            return self._call(req, model)
        _retry.drive_sync(self._exchange(req, CLIENT_POLICY), self._send)
        return None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VigorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

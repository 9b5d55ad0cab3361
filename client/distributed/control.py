"""The HTTP control calls to every server, made in parallel; their failures gathered per server.

The calls that make a server wait on the process group (init, update_weights) are sent from
threads while the caller takes its own part in the group, as vLLM's and TRL's clients do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any

import httpx

from .. import VigorClient
from .._responses import error_for
from ..errors import VigorConnectionError, VigorError, VigorServerError
from ..schema import ModelInfo

ADMIN_TOKEN_ENV = "VIGOR_ADMIN_TOKEN"  # read as VigorClient reads it, when no token is passed
HTTP_MARGIN_S = 30.0  # beyond the longest a server may take by its own bounds
OWN_RANK = "this trainer (rank 0)"


class TransferError(VigorError):
    """A step failed on some servers; `.errors` maps each failing server's URL to its error."""

    def __init__(self, step: str, errors: dict[str, BaseException], total: int) -> None:
        self.step, self.errors = step, errors
        listed = "; ".join(f"{url}: {err}" for url, err in errors.items())
        on = f"{len(errors) - (OWN_RANK in errors)} of {total} servers"
        on += " and on this trainer" if OWN_RANK in errors else ""
        super().__init__(f"{step} failed on {on}: {listed}")

    @property
    def refused(self) -> bool:
        """Every failure is a server that received everything and refused it (413, 422)."""
        return all(
            isinstance(e, VigorServerError) and e.status in (413, 422) for e in self.errors.values()
        )


class ServerCalls:
    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        admin_token: str | None,
        api_token: str | None,
        timeout_s: float,
    ) -> None:
        parts = urls.split(",") if isinstance(urls, str) else list(urls)
        self.urls = [u.strip().rstrip("/") for u in parts if u.strip()]
        if not self.urls:
            raise ValueError("no server URL given")
        token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._api_token = api_token
        self.timeout_s = timeout_s
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0))

    def model_infos(self) -> list[ModelInfo]:
        def info(url: str) -> ModelInfo:
            with VigorClient(url, api_token=self._api_token) as client:
                return client.model_info()

        return self._each(info, "reading /v1/model")

    def call(self, url: str, method: str, path: str, body: Any = None, wait_s: float = 0) -> Any:
        timeout = max(wait_s + HTTP_MARGIN_S, self.timeout_s)
        try:
            response = self._http.request(
                method, url + path, json=body, headers=self._headers,
                timeout=httpx.Timeout(timeout, connect=10.0),
            )  # fmt: skip
        except httpx.HTTPError as exc:
            what = f"{type(exc).__name__}: {exc}"
            raise VigorConnectionError(f"{method} {url}{path}: {what}") from exc
        if response.status_code >= 400:
            raise error_for(response)
        return response.json()

    def each(self, method: str, path: str, body: Any = None) -> list[Any]:
        """The same call on every server; TransferError when any fails."""
        return self._each(lambda url: self.call(url, method, path, body), path.lstrip("/"))

    def _each(self, fn: Callable[[str], Any], step: str) -> list[Any]:
        with ThreadPoolExecutor(len(self.urls)) as pool:
            return self.gather(step, {url: pool.submit(fn, url) for url in self.urls})

    @contextlib.contextmanager
    def posting(
        self, path: str, bodies: dict[str, Any], wait_s: float
    ) -> Iterator[dict[str, Future]]:
        """POST to every server from threads; on leaving, calls still pending are not waited
        for (a server still in a dead group answers when its own timeout ends)."""
        pool = ThreadPoolExecutor(len(self.urls))
        try:
            yield {
                url: pool.submit(self.call, url, "POST", path, body, wait_s)
                for url, body in bodies.items()
            }
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def gather(self, step: str, calls: dict[str, Future], own: Future | None = None) -> list[Any]:
        """Every call's answer in URL order, or TransferError naming each failure; with `own`
        (this rank's own part), the first failure raises at once."""
        errors: dict[str, BaseException] = {}
        futures = {f: url for url, f in calls.items()}
        if own is not None:
            futures[own] = OWN_RANK
        for future in as_completed(futures):
            if (exc := future.exception()) is not None:
                errors[futures[future]] = exc
                if own is not None:
                    break
        if errors:
            raise TransferError(step, errors, len(self.urls))
        return [calls[url].result() for url in self.urls]

    def best_effort(self, path: str) -> None:
        for url in self.urls:
            with contextlib.suppress(VigorError):
                self.call(url, "POST", path, {})

    def close(self) -> None:
        self._http.close()


def failures(calls: dict[str, Future]) -> dict[str, BaseException]:
    """The calls that have already failed (those still pending are not waited for)."""
    return {u: e for u, f in calls.items() if f.done() and (e := f.exception()) is not None}

"""The trainer's side: broadcast a model's weights to one or many servers over a process group.

The trainer is rank 0 and every server one rank (rank_offset 1..N). Each HTTP control call that
makes a server wait on the group (init, update_weights) is sent from a thread while this thread
takes its own part, as vLLM's and TRL's clients do. A server that refuses the tensors still
receives the broadcast (so the group stays in step) and answers 422 naming the tensor; then the
update is aborted everywhere and nothing is applied.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any
from urllib.parse import urlsplit

import httpx
import torch

from .. import VigorClient
from .._weights import cast_floating, named_tensors, torch_dtype
from ..errors import ERRORS_BY_STATUS, VigorConnectionError, VigorError, VigorServerError
from ..schema import ModelInfo, WeightUpdate
from ..transfer import Backend, TransferStatus, bucket_plan
from .group import GroupError, StatelessGroup
from .pack import pack_buckets, tensor_nbytes

DEFAULT_BUCKET_BYTES = 256 << 20
ADMIN_TOKEN_ENV = "VIGOR_ADMIN_TOKEN"  # read as VigorClient reads it, when no token is passed
HTTP_MARGIN_S = 30.0
OWN_RANK = "this trainer (rank 0)"


class TransferError(VigorError):
    """A step failed on some servers; `.errors` maps each failing server's URL to its error."""

    def __init__(self, step: str, errors: dict[str, BaseException], total: int) -> None:
        self.step, self.errors = step, errors
        listed = "; ".join(f"{url}: {err}" for url, err in errors.items())
        super().__init__(f"{step} failed on {len(errors)} of {total} servers: {listed}")


class WeightSender:
    """Send weights to `urls` (one URL, a list, or a comma-separated string) over torch.distributed.

    `master_address` is where the servers reach this process (default: the address this host
    uses to reach the first server); `master_port` the rendezvous port (default: a free one);
    `backend` nccl or gloo (default: nccl when every server and this process have CUDA);
    `timeout_s` bounds joining and every broadcast, on both ends.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        admin_token: str | None = None,
        api_token: str | None = None,
        master_address: str | None = None,
        master_port: int | None = None,
        backend: Backend | None = None,
        timeout_s: float = 120.0,
        http_timeout_s: float = 330.0,
    ) -> None:
        parts = urls.split(",") if isinstance(urls, str) else list(urls)
        self.urls = [u.strip().rstrip("/") for u in parts if u.strip()]
        if not self.urls:
            raise ValueError("no server URL given")
        token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._api_token = api_token
        self.master_address = master_address or _address_towards(self.urls[0])
        self.master_port = master_port
        self.backend = backend
        self.timeout_s = timeout_s
        self.http_timeout_s = http_timeout_s
        self.group: StatelessGroup | None = None
        self.infos: list[ModelInfo] = []
        self._http = httpx.Client(timeout=httpx.Timeout(http_timeout_s, connect=10.0))

    # --- the group --------------------------------------------------------------------------
    def init(self) -> list[TransferStatus]:
        """Join every server into a new group (an old one is left first)."""
        self._leave()
        self.infos = self._each(lambda url: self._model_info(url), "reading /v1/model")
        self._each(lambda url: self._call(url, "GET", "/weight_transfer_status"), "auth check")
        backend = self.backend or self._pick_backend()
        port = self.master_port or _free_port()
        world = len(self.urls) + 1

        def body(rank: int) -> dict[str, Any]:
            info = {"master_address": self.master_address, "master_port": port,
                    "rank_offset": rank, "world_size": world, "backend": backend}  # fmt: skip
            return {"init_info": info}

        joined: Future[StatelessGroup] = Future()

        def join() -> None:
            try:
                joined.set_result(
                    StatelessGroup(master_address=self.master_address, master_port=port, rank=0,
                                   world_size=world, backend=backend, timeout_s=self.timeout_s)
                )  # fmt: skip
            except BaseException as exc:
                joined.set_exception(exc)

        # Not waited for when something fails: a server that refused makes the others' and our
        # rendezvous wait out timeout_s, but the caller hears about it now.
        threading.Thread(target=join, daemon=True, name="vigor-transfer-join").start()
        pool = ThreadPoolExecutor(len(self.urls))
        try:
            calls = {
                url: pool.submit(self._call, url, "POST", "/init_weight_transfer_engine",
                                 body(k + 1), self.timeout_s + HTTP_MARGIN_S)
                for k, url in enumerate(self.urls)
            }  # fmt: skip
            statuses = self._gather("init_weight_transfer_engine", calls, own=joined)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self.group = joined.result()
        return [TransferStatus.model_validate(s) for s in statuses]

    def _pick_backend(self) -> Backend:
        on_gpu = all(info.device.startswith("cuda") for info in self.infos)
        return "nccl" if on_gpu and torch.cuda.is_available() else "gloo"

    # --- one update -------------------------------------------------------------------------
    def send(
        self,
        source: Any,
        version: int | None = None,
        *,
        full: bool | None = None,
        cast: bool = True,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        on_bucket: Callable[[int, int], None] | None = None,
    ) -> list[WeightUpdate]:
        """Send a model (its state dict; full by default) or a dict of tensors to every server.

        Floating tensors are cast to the served dtype unless `cast=False`. `on_bucket(k, nbytes)`
        is called after bucket k went out. Returns each server's WeightUpdate, in URL order.
        Do not modify the tensors until the call returns.
        """
        if bucket_bytes <= 0:
            raise ValueError("bucket_bytes must be positive")
        if self.group is None or self.group.closed:
            self.init()
        assert self.group is not None
        if full is None:
            full = isinstance(source, torch.nn.Module)
        tensors = named_tensors(source)
        if not tensors:
            raise ValueError("nothing to send: no tensors given")
        if cast:
            tensors = cast_floating(tensors, self._served_dtype())
        names = list(tensors)
        values = [tensors[n] for n in names]
        plan = bucket_plan([tensor_nbytes(t.shape, t.dtype) for t in values], True, bucket_bytes)
        info = {
            "names": names,
            "dtype_names": [str(t.dtype).removeprefix("torch.") for t in values],
            "shapes": [list(t.shape) for t in values],
            "packed": True,
            "packed_buffer_size_bytes": bucket_bytes,
        }
        self._each(lambda url: self._call(url, "POST", "/start_weight_update", {}), "start")
        wait = self.timeout_s * (len(plan) + 1) + HTTP_MARGIN_S
        with ThreadPoolExecutor(len(self.urls)) as pool:
            calls = {
                url: pool.submit(self._call, url, "POST", "/update_weights",
                                 {"update_info": info}, wait)
                for url in self.urls
            }  # fmt: skip
            try:
                for k, bucket in enumerate(pack_buckets(values, plan, self.group.device)):
                    self.group.broadcast(bucket)
                    if on_bucket is not None:
                        on_bucket(k, bucket.numel())
            except GroupError as exc:
                # Leaving makes the servers' pending receives fail now rather than at timeout_s.
                self._leave(tell_servers=False)
                self._gather("update_weights", calls, failed=exc)
                raise AssertionError("unreachable: _gather raises") from exc
            try:
                self._gather("update_weights", calls)
            except TransferError:
                self._best_effort("/abort_weight_update")
                raise
        finish = {"weight_version": version, "full": full}
        done = self._each(
            lambda url: self._call(url, "POST", "/finish_weight_update", finish), "finish"
        )
        return [WeightUpdate.model_validate(d) for d in done]

    def _served_dtype(self) -> torch.dtype | None:
        dtypes = {info.dtype for info in self.infos}
        if len(dtypes) > 1:
            raise ValueError(f"the servers serve different dtypes ({sorted(dtypes)}); cast=False")
        return torch_dtype(dtypes.pop()) if dtypes else None

    # --- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Leave the group on every server and here; the HTTP connections are closed."""
        self._leave()
        self._http.close()

    def _leave(self, tell_servers: bool = True) -> None:
        if self.group is None:
            return
        group, self.group = self.group, None
        if tell_servers:
            self._best_effort("/close_weight_transfer_engine")
        group.close()

    def __enter__(self) -> WeightSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- HTTP -------------------------------------------------------------------------------
    def _model_info(self, url: str) -> ModelInfo:
        with VigorClient(url, api_token=self._api_token) as client:
            return client.model_info()

    def _call(
        self, url: str, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> Any:
        try:
            response = self._http.request(
                method, url + path, json=body, headers=self._headers,
                timeout=httpx.Timeout(timeout or self.http_timeout_s, connect=10.0),
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise VigorConnectionError(
                f"{method} {url}{path}: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise _server_error(response)
        return response.json()

    def _each(self, fn: Callable[[str], Any], step: str) -> list[Any]:
        with ThreadPoolExecutor(len(self.urls)) as pool:
            return self._gather(step, {url: pool.submit(fn, url) for url in self.urls})

    def _gather(
        self,
        step: str,
        calls: dict[str, Future],
        own: Future | None = None,
        failed: BaseException | None = None,
    ) -> list[Any]:
        """Every call's answer in URL order, or TransferError naming each failure.

        `own` is this rank's part (its join): any failure then raises at once. `failed` is this
        rank's own error, reported with whatever the servers answered.
        """
        errors: dict[str, BaseException] = {}
        if failed is not None:
            errors[OWN_RANK] = failed
        futures = {f: url for url, f in calls.items()}
        if own is not None:
            futures[own] = OWN_RANK
        for future in as_completed(futures):
            exc = future.exception()
            if exc is not None:
                errors[futures[future]] = exc
                if own is not None:
                    break
        if errors:
            raise TransferError(step, errors, len(self.urls))
        return [calls[url].result() for url in self.urls]

    def _best_effort(self, path: str) -> None:
        for url in self.urls:
            with contextlib.suppress(VigorError):
                self._call(url, "POST", path, {})


def _server_error(response: httpx.Response) -> VigorServerError:
    code, message, version = "http_error", response.text[:500], None
    try:
        detail = json.loads(response.content)["error"]
        code, message = detail["code"], detail["message"]
        version = detail.get("current_weight_version")
    except (ValueError, KeyError, TypeError):
        pass
    cls = ERRORS_BY_STATUS.get(response.status_code, VigorServerError)
    return cls(response.status_code, code, message, url=str(response.request.url),
               current_weight_version=version)  # fmt: skip


def _address_towards(url: str) -> str:
    """This host's address on the route to `url` (a UDP socket sends nothing to learn it)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(host), 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]

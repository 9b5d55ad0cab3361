"""The trainer's side: broadcast a model's weights to one or many servers over a process group.

The trainer is rank 0 and every server one rank (rank_offset 1..N). A server that refuses the
tensors still receives the broadcast (so the group stays in step) and answers 422 naming the
tensor; the update is then aborted everywhere and nothing is applied. When the group itself fails
(a server died), it is left, and the next send joins a new one.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

import torch

from .._weights import cast_floating, named_tensors, torch_dtype
from ..schema import ModelInfo, WeightUpdate
from ..transfer import Backend, TransferStatus, bucket_plan
from .control import OWN_RANK, ServerCalls, TransferError, failures
from .group import GroupError, StatelessGroup
from .pack import pack_buckets, tensor_nbytes

DEFAULT_BUCKET_BYTES = 256 << 20


class WeightSender:
    """Send weights to `urls` (one URL, a list, or a comma-separated string) over torch.distributed.

    `master_address` is where the servers reach this process (default: the address this host
    uses to reach the first server); `master_port` the rendezvous port (default: a free one);
    `backend` nccl or gloo (default: nccl when every server and this process have CUDA);
    `timeout_s` bounds joining and every broadcast, on both ends. The admin token is read from
    VIGOR_ADMIN_TOKEN when none is given.
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
        self.servers = ServerCalls(
            urls, admin_token=admin_token, api_token=api_token, timeout_s=http_timeout_s
        )
        self.urls = self.servers.urls
        self.master_address = master_address or _address_towards(self.urls[0])
        self.master_port = master_port
        self.backend = backend
        self.timeout_s = timeout_s
        self.group: StatelessGroup | None = None
        self.infos: list[ModelInfo] = []

    # --- the group --------------------------------------------------------------------------
    def init(self) -> list[TransferStatus]:
        """Join every server into a new group (an old one is left first)."""
        self._leave()
        self.infos = self.servers.model_infos()
        self.servers.each("GET", "/weight_transfer_status")  # the admin token, before waiting
        backend = self.backend or self._pick_backend()
        port = self.master_port or _free_port()
        world = len(self.urls) + 1
        joined: Future[StatelessGroup] = Future()

        def join() -> None:
            try:
                joined.set_result(
                    StatelessGroup(master_address=self.master_address, master_port=port, rank=0,
                                   world_size=world, backend=backend, timeout_s=self.timeout_s)
                )  # fmt: skip
            except BaseException as exc:
                joined.set_exception(exc)

        # Not waited for when a server refuses: the rendezvous then waits out timeout_s on its
        # own, and the caller hears of the refusal at once.
        threading.Thread(target=join, daemon=True, name="vigor-transfer-join").start()
        bodies = {
            url: {"init_info": {"master_address": self.master_address, "master_port": port,
                                "rank_offset": k + 1, "world_size": world, "backend": backend}}
            for k, url in enumerate(self.urls)
        }  # fmt: skip
        with self.servers.posting("/init_weight_transfer_engine", bodies, self.timeout_s) as calls:
            statuses = self.servers.gather("init_weight_transfer_engine", calls, own=joined)
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

        Floating tensors are cast to the served dtype unless `cast=False`; tied tensors go once.
        `on_bucket(k, nbytes)` is called after bucket k went out. Returns each server's
        WeightUpdate, in URL order. Do not modify the tensors until the call returns.
        """
        if bucket_bytes <= 0:
            raise ValueError("bucket_bytes must be positive")
        if hasattr(source, "peft_config"):
            raise NotImplementedError(
                "LoRA adapters do not go over the group yet: send the adapter with "
                "VigorClient.load_adapter(peft_model), or a merged model here"
            )
        if full is None:
            full = isinstance(source, torch.nn.Module)
        tensors = named_tensors(source)
        if not tensors:
            raise ValueError("nothing to send: no tensors given")
        if sharded := next((n for n, t in tensors.items() if type(t).__name__ == "DTensor"), None):
            raise ValueError(
                f"{sharded!r} is sharded (a DTensor): gather a full state dict first, e.g. "
                "torch.distributed.checkpoint.state_dict.get_model_state_dict(model, "
                "options=StateDictOptions(full_state_dict=True))"
            )
        if self.group is None or self.group.closed:
            self.init()
        group = self.group
        assert group is not None
        if cast:
            tensors = cast_floating(tensors, self._served_dtype())
        values = list(tensors.values())
        plan = bucket_plan([tensor_nbytes(t.shape, t.dtype) for t in values], True, bucket_bytes)
        info = {
            "names": list(tensors),
            "dtype_names": [str(t.dtype).removeprefix("torch.") for t in values],
            "shapes": [list(t.shape) for t in values],
            "packed": True,
            "packed_buffer_size_bytes": bucket_bytes,
        }
        self.servers.each("POST", "/start_weight_update", {})
        bodies = {url: {"update_info": info} for url in self.urls}
        wait_s = self.timeout_s * (len(plan) + 1)  # each bucket may take the server timeout_s
        with self.servers.posting("/update_weights", bodies, wait_s) as calls:
            try:
                for k, bucket in enumerate(pack_buckets(values, plan, group.device)):
                    group.broadcast(bucket)
                    if on_bucket is not None:
                        on_bucket(k, bucket.numel())
            except GroupError as exc:
                self._leave(tell_servers=False)  # the others notice within timeout_s
                failed = {OWN_RANK: exc, **failures(calls)}
                raise TransferError("update_weights", failed, len(self.urls)) from exc
            try:
                self.servers.gather("update_weights", calls)
            except TransferError as exc:
                if exc.refused:
                    self.servers.best_effort("/abort_weight_update")  # the group stays in step
                else:
                    self._leave()  # a server lost the group: the next send joins a new one
                raise
        finish = {"weight_version": version, "full": full}
        done = self.servers.each("POST", "/finish_weight_update", finish)
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
        self.servers.close()

    def _leave(self, tell_servers: bool = True) -> None:
        if self.group is None:
            return
        group, self.group = self.group, None
        if tell_servers:
            self.servers.best_effort("/close_weight_transfer_engine")
        group.close()

    def __enter__(self) -> WeightSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

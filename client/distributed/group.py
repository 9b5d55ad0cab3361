"""A process group of its own for trainer and servers: a TCPStore and a Gloo or NCCL backend.

Never the default group (`init_process_group`): a trainer already has one for its own ranks, and a
server must be able to leave one group and join the next (a restarted trainer) without restarting.
Both ends use this class, so the rendezvous and the handshake are defined once.

Every collective is bounded by `timeout_s`: Gloo fails a broadcast whose peer closed its socket at
once and one whose peer went silent after the timeout. NCCL's own watchdog aborts the communicator
after the same timeout; its error handling is set to clean up without killing the process (a
server must outlive a trainer that died).
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

# Keys of our rendezvous live under this prefix of the trainer's store.
STORE_PREFIX = "vigor-weight-transfer"
# Rank 0 broadcasts [MAGIC, PROTOCOL, world_size] right after joining: a peer that is not our
# sender, or counts the world differently, is refused before any weights move.
MAGIC = 0x56494752  # "VIGR"
PROTOCOL = 1


class GroupError(RuntimeError):
    """Joining or a collective failed: a peer died, went silent, or speaks another protocol."""


class StatelessGroup:
    def __init__(
        self,
        *,
        master_address: str,
        master_port: int,
        rank: int,
        world_size: int,
        backend: str,
        timeout_s: float,
        device: torch.device | str | None = None,
    ) -> None:
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo' or 'nccl', not {backend!r}")
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.master = f"{master_address}:{master_port}"
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.device = torch.device("cpu") if backend == "gloo" else _cuda_device(device)
        self._store = None
        self._pg = None
        try:
            self._store = dist.TCPStore(
                master_address,
                master_port,
                world_size,
                rank == 0,
                timeout=self.timeout,
                wait_for_workers=False,
            )
            store = dist.PrefixStore(STORE_PREFIX, self._store)
            self._pg = self._backend(store)
            self._handshake()
        except GroupError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise GroupError(
                f"could not join the weight-transfer group at {self.master} as rank {rank} of "
                f"{world_size} ({backend}) within {timeout_s:g} s: {_brief(exc)}"
            ) from exc

    def _backend(self, store):
        if self.backend == "gloo":
            return dist.ProcessGroupGloo(store, self.rank, self.world_size, self.timeout)
        if not hasattr(dist, "ProcessGroupNCCL"):
            raise GroupError(f"this torch build ({torch.__version__}) has no NCCL")
        # 2 = CleanUpOnly: on a timeout abort the communicator, raise, keep the process.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = self.timeout
        torch.cuda.set_device(self.device)
        return dist.ProcessGroupNCCL(store, self.rank, self.world_size, options)

    def _handshake(self) -> None:
        hello = torch.tensor([MAGIC, PROTOCOL, self.world_size], dtype=torch.int64)
        got = (
            hello.to(self.device) if self.rank == 0 else torch.zeros_like(hello, device=self.device)
        )
        self.broadcast(got)
        magic, protocol, world = (int(v) for v in got.cpu())
        if magic != MAGIC or protocol != PROTOCOL:
            raise GroupError(
                f"rank 0 at {self.master} is not a vigor-reward weight sender of protocol "
                f"{PROTOCOL} (it sent {magic:#x}, protocol {protocol})"
            )
        if world != self.world_size:
            raise GroupError(
                f"rank 0 counts world_size {world}, this rank was told {self.world_size}"
            )

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        """Send (rank `src`) or receive `tensor` in place; raises GroupError when it fails."""
        if self._pg is None:
            raise GroupError("the weight-transfer group is closed")
        options = dist.BroadcastOptions()
        options.rootRank = src
        options.timeout = self.timeout
        try:
            self._pg.broadcast([tensor], options).wait()
            if tensor.is_cuda:
                torch.cuda.current_stream(tensor.device).synchronize()
        except Exception as exc:
            raise GroupError(f"broadcast over {self.master} failed: {_brief(exc)}") from exc

    def ping(self) -> None:
        """One round trip to rank 0's store; GroupError when it is gone or silent past timeout_s.

        Nothing goes over the group itself, so a trainer busy in a long step still answers: its
        store serves from a thread of its own. A trainer that died or left took its store with
        it, and the connection fails at once.
        """
        store = self._store
        if store is None or self._pg is None:
            raise GroupError("the weight-transfer group is closed")
        try:
            store.check([f"{STORE_PREFIX}/ping"])
        except Exception as exc:
            raise GroupError(f"rank 0's store at {self.master} is gone: {_brief(exc)}") from exc

    @property
    def closed(self) -> bool:
        return self._pg is None

    def close(self) -> None:
        """Leave the group (idempotent); a peer still waiting on us fails instead of hanging."""
        pg, self._pg = self._pg, None
        if pg is not None:
            # A group whose peers are gone may refuse a clean shutdown; it is dropped either way.
            with contextlib.suppress(Exception):
                pg.abort() if self.backend == "nccl" else pg.shutdown()
        self._store = None


def _cuda_device(device: torch.device | str | None) -> torch.device:
    if not torch.cuda.is_available():
        raise GroupError("the nccl backend needs a CUDA device; none is available here")
    device = torch.device(device) if device is not None else torch.device("cuda")
    if device.type != "cuda":
        raise GroupError(f"the nccl backend needs a CUDA device, not {device}")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"

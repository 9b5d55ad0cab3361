"""Weights over torch.distributed: a trainer's group joined, updates received, applied at finish.

init (join the trainer's group) → start (open an update) → update_weights (receive, validate,
stage; any number of times) → finish (one swap on the engine worker, a new version). The receive
runs in a thread, off the engine worker, so scoring goes on meanwhile.

Failures leave the served weights alone and are bounded: a refused update is dropped and the group
stays; a failed group (the trainer died or went silent past --transfer-timeout-s) drops the update
and closes the group; an open update untouched for --upload-ttl-s is dropped and its group closed
(the trainer is presumed gone). A joined group with no update open has no timer, since a live
trainer may sit idle for a long training step; instead its store is asked every PEER_CHECK_S
whether the trainer is still there, and the group is closed when it is gone. A new init always
replaces what was there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from vigor_client.distributed.group import GroupError, StatelessGroup
from vigor_client.schema import WeightUpdate
from vigor_client.transfer import (
    FinishWeightUpdateRequest,
    InitInfo,
    StartWeightUpdateRequest,
    TransferStatus,
    UpdateInfo,
)

from ..errors import (
    InputProblem,
    InvalidInputError,
    LimitExceededError,
    TransferFailedError,
    TransferStateError,
    WeightsRejectedError,
)
from ..metrics import Metrics
from .core import WeightCore
from .deadline import in_daemon_thread
from .limits import WeightLimits
from .receive import StagedUpdate, receive_update

log = logging.getLogger(__name__)

JOIN_GRACE_S = 5.0  # beyond --transfer-timeout-s: the group's own timeout answers first
# How often a joined, idle group asks the trainer's store whether the trainer is alive: one small
# TCP round trip, cheap enough to notice a killed trainer within seconds.
PEER_CHECK_S = 2.0


class Session:
    """One joined group and the update open on it, if any."""

    def __init__(self, group: StatelessGroup) -> None:
        self.group = group
        self.update: StagedUpdate | None = None
        self.expires_at: float | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.watch: asyncio.Task[None] | None = None  # the liveness check while joined


class WeightTransfer:
    def __init__(self, limits: WeightLimits, core: WeightCore, metrics: Metrics) -> None:
        self.limits, self.core, self.metrics = limits, core, metrics
        self.slot = core.slot
        self.staging = core.staging
        self._session: Session | None = None
        self._busy: str | None = None  # the call in progress; calls run one at a time
        self._receiving = False

    # --- state ------------------------------------------------------------------------------
    def status(self, message: str = "Weight transfer status") -> TransferStatus:
        s = self._session
        if s is None:
            return TransferStatus(message=message, state="closed")
        update = s.update
        state = "receiving" if self._receiving else "updating" if update else "joined"
        left = None if s.expires_at is None else round(max(0.0, s.expires_at - time.monotonic()), 3)
        return TransferStatus(
            message=message,
            state=state,
            backend=s.group.backend,
            rank=s.group.rank,
            world_size=s.group.world_size,
            master=s.group.master,
            staged_tensors=len(update.checked) if update else 0,
            staged_bytes=update.nbytes if update else 0,
            expires_in_s=left if update else None,
        )

    @contextlib.contextmanager
    def _exclusive(self, call: str) -> Iterator[None]:
        if self._busy is not None:
            raise TransferStateError(
                f"{self._busy} is in progress; it ends when the trainer's broadcast does, or "
                f"within --transfer-timeout-s ({self.limits.transfer_timeout_s:g} s)"
            )
        self._busy = call
        try:
            yield
        finally:
            self._busy = None

    def _session_or_raise(self, call: str) -> Session:
        if self._session is None:
            raise TransferStateError(f"{call}: no weight-transfer group; call "
                                     "/init_weight_transfer_engine first")  # fmt: skip
        return self._session

    def _update_or_raise(self, call: str) -> tuple[Session, StagedUpdate]:
        session = self._session_or_raise(call)
        if session.update is None:
            raise TransferStateError(f"{call}: no update is open; call /start_weight_update first")
        return session, session.update

    # --- dropping and expiry ----------------------------------------------------------------
    def _drop_update(self, session: Session) -> None:
        self._disarm(session)
        if session.update is not None:
            self.staging.release(session.update.drop())
            session.update = None

    def _close(self, why: str) -> None:
        session, self._session = self._session, None
        if session is not None:
            self._drop_update(session)
            if session.watch is not None and session.watch is not asyncio.current_task():
                session.watch.cancel()
            session.group.close()
            log.info("weight-transfer group %s closed: %s", session.group.master, why)

    def _arm(self, session: Session) -> None:
        self._disarm(session)
        ttl = self.limits.upload_ttl_s
        session.expires_at = time.monotonic() + ttl
        session.expiry = asyncio.get_running_loop().call_later(ttl, self._expire, session)

    def _disarm(self, session: Session) -> None:
        if session.expiry is not None:
            session.expiry.cancel()
        session.expiry, session.expires_at = None, None

    def _expire(self, session: Session) -> None:
        if self._session is session and not self._receiving:
            log.warning("weight update untouched for %g s: dropped", self.limits.upload_ttl_s)
            self._close(f"the open update was untouched for {self.limits.upload_ttl_s:g} s")

    async def _watch(self, session: Session) -> None:
        """Close the group once its trainer is gone, checking only while it is joined and idle.

        Not a timeout: a trainer between long steps keeps its store up and is never cut. A
        trainer killed after init took its store with it: the check fails at once and the state
        leaves `joined` within PEER_CHECK_S. A trainer that is alive but stopped answers within
        --transfer-timeout-s or is treated as gone, as a broadcast would treat it.
        """
        every = min(PEER_CHECK_S, self.limits.transfer_timeout_s)
        while self._session is session:
            await asyncio.sleep(every)
            if not self._idle(session):
                continue  # a call in progress or an open update has its own bound
            try:
                within = self.limits.transfer_timeout_s + JOIN_GRACE_S
                await in_daemon_thread(session.group.ping, within=within)
            except (GroupError, TimeoutError) as exc:
                if self._idle(session):
                    why = str(exc) or "its store did not answer"
                    log.warning("weight-transfer trainer gone while joined: %s", why)
                    self._close(f"the trainer is gone ({why})")
                    return

    def _idle(self, session: Session) -> bool:
        return (
            self._session is session
            and self._busy is None
            and not self._receiving
            and session.update is None
        )

    # --- the calls --------------------------------------------------------------------------
    async def init(self, info: InitInfo) -> TransferStatus:
        served = self.slot.require_served()
        device = served.device
        backend = info.backend or ("nccl" if device.type == "cuda" else "gloo")
        if backend == "nccl" and device.type != "cuda":
            raise InvalidInputError([InputProblem(
                "init_info.backend", f"nccl needs the model on CUDA; this server runs on {device}"
                ": use gloo")])  # fmt: skip
        with self.metrics.weight_operation("transfer_init"), self._exclusive("init"):
            self._close("a new init_weight_transfer_engine")
            timeout = self.limits.transfer_timeout_s
            try:
                # Bounded here too: the group's own timeout does not cover a peer that accepts
                # the connection and never answers. A group formed after we gave up is closed.
                group = await in_daemon_thread(
                    StatelessGroup, master_address=info.master_address,
                    master_port=info.master_port, rank=info.rank_offset,
                    world_size=info.world_size, backend=backend, timeout_s=timeout,
                    device=device, within=timeout + JOIN_GRACE_S, late=StatelessGroup.close,
                )  # fmt: skip
            except GroupError as exc:
                raise TransferFailedError(str(exc)) from exc
            except TimeoutError:
                raise TransferFailedError(
                    f"no group formed with {info.master_address}:{info.master_port} within "
                    f"{timeout:g} s (--transfer-timeout-s): the peer did not complete the "
                    "rendezvous; nothing was joined"
                ) from None
            self._session = session = Session(group)
            session.watch = asyncio.get_running_loop().create_task(self._watch(session))
        log.info("joined weight-transfer group %s as rank %d of %d (%s)",
                 group.master, group.rank, group.world_size, backend)  # fmt: skip
        return self.status("Weight transfer initialized")

    def start(self, req: StartWeightUpdateRequest) -> TransferStatus:
        self.slot.require_served()
        if not req.is_checkpoint_format:
            why = "only checkpoint-format (Hugging Face) names are served"
            raise InvalidInputError([InputProblem("is_checkpoint_format", why)])
        with self._exclusive("start_weight_update"):
            session = self._session_or_raise("start_weight_update")
            self._drop_update(session)  # an unfinished update is replaced, as vLLM does
            session.update = StagedUpdate()
            self._arm(session)
        return self.status("Weight update started")

    async def update(self, info: UpdateInfo) -> TransferStatus:
        served = self.slot.require_served()
        with self.metrics.weight_operation("transfer_update"), self._exclusive("update_weights"):
            session, staged = self._update_or_raise("update_weights")
            self._disarm(session)  # the receive is bounded by the group's own timeout
            self._receiving = True
            try:
                targets = self.core.targets(served)
                received = await in_daemon_thread(
                    receive_update, session.group, info, targets, self.staging, staged
                )
            except GroupError as exc:
                self._close(str(exc))
                raise TransferFailedError(
                    f"{exc}; the update is dropped and the group closed (init again)"
                ) from exc
            except (WeightsRejectedError, LimitExceededError):
                self._drop_update(session)  # drained: the group stays in step; start again
                if session.group.closed:
                    self._close("the announced update could not be received")
                raise
            except BaseException:
                self._close("the update failed while receiving")
                raise
            finally:
                self._receiving = False
            self.metrics.weight_bytes.labels("transfer").inc(received)
            self._arm(session)
        return self.status("Weights updated")

    async def finish(self, req: FinishWeightUpdateRequest) -> WeightUpdate:
        start, deadline = time.perf_counter(), self.core.deadline()
        self.slot.require_served()
        version = req.version()
        with self.metrics.weight_operation("transfer_finish"), self._exclusive("finish"):
            session, received = self._update_or_raise("finish_weight_update")
            self._disarm(session)
            try:
                if not len(received.checked):
                    # As for an upload's commit: a new version of unchanged weights would tell
                    # the trainer its update landed when nothing was sent.
                    raise WeightsRejectedError(
                        ["the update holds no tensors: send them with /update_weights, then "
                         "finish (or /abort_weight_update)"]
                    )  # fmt: skip
                staged = self.core.staged_tensors(
                    received.checked, full=req.full, operation="transfer", version=version
                )
                versions = await self.core.apply(staged, deadline)
            except BaseException:
                self._arm(session)  # kept: the trainer may fix the version and finish again
                raise
            answer = self.core.result(staged, versions, start)
            self._drop_update(session)
        return answer

    def abort(self) -> TransferStatus:
        with self._exclusive("abort_weight_update"):
            if self._session is not None:
                self._drop_update(self._session)
        return self.status("Weight update aborted")

    def close(self) -> TransferStatus:
        with self._exclusive("close_weight_transfer_engine"):
            self._close("closed by the trainer")
        return self.status("Weight transfer closed")

    def shutdown(self) -> None:
        """Server shutdown: leave the group whatever is in progress."""
        self._close("the server is shutting down")

"""One /update_weights: the announced tensors arrive over the group, validated, into staging.

The announcement is checked before a byte arrives (names, shapes, dtypes against the served
model). Whatever is wrong, every bucket the trainer broadcasts is still received — into a scratch
buffer once something is refused — so the trainer's broadcast completes and the group stays in
step; the refusal is raised at the end, naming each tensor at fault. Scratch is bounded as staged
bytes are: a bucket over --max-staged-bytes is refused before anything is received, and the group
closed (it cannot be drained).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from vigor_client.distributed.group import StatelessGroup
from vigor_client.distributed.pack import tensor_nbytes, unpack_bucket
from vigor_client.transfer import TRANSFER_DTYPES, UpdateInfo, bucket_plan

from ..errors import LimitExceededError, VigorServiceError, WeightsRejectedError
from .staging import StagingArea
from .validate import Checked, TargetMap, check_declared, check_tensors

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in TRANSFER_DTYPES}


@dataclass
class StagedUpdate:
    """Tensors of one update (start → finish), validated, viewing the received buffers.

    Dropped from the event loop while a receive thread may still be filling it (its caller went
    away, the server shuts down): the lock makes sure every reserved byte is released once.
    """

    checked: Checked = field(default_factory=Checked)
    buffers: list[torch.Tensor] = field(default_factory=list)
    nbytes: int = 0  # reserved in the staging area until the update is applied or dropped
    dropped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def keep(self, buffer: torch.Tensor, nbytes: int) -> bool:
        """Hold a received, validated bucket; False when the update was dropped meanwhile."""
        with self._lock:
            if self.dropped:
                return False
            self.buffers.append(buffer)
            self.nbytes += nbytes
            return True

    def drop(self) -> int:
        """Forget everything; returns the bytes to release from the staging area."""
        with self._lock:
            self.dropped = True
            nbytes, self.nbytes = self.nbytes, 0
            self.buffers.clear()
            self.checked = Checked()
            return nbytes


def any_dtype(name: str) -> torch.dtype | None:
    """The torch dtype a name stands for, accepted or not (its size is needed to drain it)."""
    dtype = getattr(torch, name, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def receive_update(
    group: StatelessGroup,
    info: UpdateInfo,
    targets: TargetMap,
    staging: StagingArea,
    staged: StagedUpdate,
) -> int:
    """Receive every bucket of `info` into `staged`; returns the bytes received.

    Raises WeightsRejectedError (or LimitExceededError) after draining the broadcast; GroupError
    when the group itself failed. A dtype name torch does not know leaves the size of what follows
    unknown: then nothing is received and the group is closed.
    """
    declared = list(zip(info.names, info.dtype_names, info.shapes, strict=True))
    problems = check_declared(targets, declared, DTYPES)
    dtypes = [any_dtype(n) for n in info.dtype_names]
    if None in dtypes:
        group.close()
        raise WeightsRejectedError(
            [*problems, "the weight-transfer group is closed: an unknown dtype leaves the size of "
             "the broadcast unknown; init again"]
        )  # fmt: skip
    sizes = [tensor_nbytes(s, d) for s, d in zip(info.shapes, dtypes, strict=True)]
    plan = bucket_plan(sizes, info.packed, info.packed_buffer_size_bytes)
    # A broadcast is received whole into one buffer, staged or scratch: a bucket over the staging
    # bound can be neither kept nor drained (an announced [2^40] would be a 4 TiB allocation).
    bound = staging.max_bytes()
    biggest = max((sum(sizes[i] for i in bucket) for bucket in plan), default=0)
    if biggest > bound:
        group.close()
        raise LimitExceededError(
            f"the announced update has a bucket of {biggest} bytes, over the bound of {bound} "
            "(--max-staged-bytes) that a bucket is received into; nothing was received and the "
            "weight-transfer group is closed: init again"
        )
    failure: VigorServiceError | None = WeightsRejectedError(problems) if problems else None
    scratch = torch.empty(0, dtype=torch.uint8, device=group.device)
    received = 0
    for k, bucket in enumerate(plan):
        n = sum(sizes[i] for i in bucket)
        if failure is None and staged.dropped:
            failure = WeightsRejectedError(["the update was dropped while it was being received"])
        if failure is None:
            try:
                staging.reserve(n)
            except LimitExceededError as exc:
                failure = exc
        if failure is not None:  # drained, not kept
            if scratch.numel() < n:
                scratch = torch.empty(n, dtype=torch.uint8, device=group.device)
            group.broadcast(scratch[:n])
            received += n
            continue
        try:
            buffer = torch.empty(n, dtype=torch.uint8, device=group.device)
            group.broadcast(buffer)
            received += n
            views = unpack_bucket(
                buffer, [info.shapes[i] for i in bucket], [dtypes[i] for i in bucket]
            )
            names = [info.names[i] for i in bucket]
            check_tensors(targets, dict(zip(names, views, strict=True)), into=staged.checked,
                          where=f"bucket {k}")  # fmt: skip
        except WeightsRejectedError as exc:
            staging.release(n)
            failure = exc
            continue
        except BaseException:
            staging.release(n)
            raise
        if not staged.keep(buffer, n):
            staging.release(n)
    if failure is not None:
        raise failure
    return received

"""Whole groups from samples that arrive one request at a time (OpenRLHF ≥ 0.9.1, verl ≥ 0.7).

A sample joins the pending group of its key. When `group_size` samples of a key have arrived,
from any requests in any order, the whole group is scored as one request through the pipeline —
one engine call, one weight version — ranked, and every waiting sample is answered with its own
row. Arrivals past `group_size` start the key's next group (the same prompt twice in a batch).

Identity: a sample whose `sample_id` is already held takes over that slot (a retry never counts
twice). Without one, a sample identical to a held one whose caller went away takes over its slot,
and a sample identical to one that was answered after its caller left gets that answer. A group
still incomplete after its hold time answers its samples with no reward and the reason
`group_incomplete`, and so does a retry of one of those samples that comes within
`EXPIRED_KEPT_S` of the last such answer: OpenRLHF retries a failed call five times, 1 s apart,
and each retry would otherwise open a new group and wait the whole hold time again. The window
is short because without sample ids a retry is known only by its content, which a later sample
of the same prompt can share. Bounds on held samples and bytes refuse a request
whole (429): nothing it carried is held, nothing already held is dropped. Held samples live in
memory only: a restart closes their connections, and the callers' retries form the group again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from vigor_client.schema import Group, RewardsRequest, RewardsResponse

from ..engine.types import TokenSequence
from ..errors import InputProblem, InvalidInputError, NotReadyError, OverloadedError
from .held import INCOMPLETE, HeldSample, PendingGroup, SampleAnswer, held_size, incomplete

log = logging.getLogger(__name__)

ANSWER_KEPT_S = 300.0  # how long an answer waits for a caller that left and may retry
EXPIRED_KEPT_S = 5.0  # a retry this soon after its sample's last incomplete answer hears it again

Run = Callable[[RewardsRequest, list[list[TokenSequence]]], Awaitable[RewardsResponse]]
Gone = Callable[[], Awaitable[bool]]


class GroupAssembler:
    def __init__(
        self, run: Run, *, hold_s: float, max_held_samples: int, max_held_bytes: int
    ) -> None:
        self._run = run
        self.hold_s = hold_s
        self.max_held_samples = max_held_samples
        self.max_held_bytes = max_held_bytes
        self._pending: dict[str, PendingGroup] = {}
        self._answers: dict[tuple, tuple[SampleAnswer, float]] = {}
        self._expired: dict[tuple, float] = {}  # (key, identity) → when its group expired
        self._tasks: set[asyncio.Task] = set()
        self.held_bytes = 0
        self.incomplete = 0  # groups given up on, for /metrics

    @property
    def held_groups(self) -> int:
        return len(self._pending)

    @property
    def held_samples(self) -> int:
        return sum(len(g.samples) for g in self._pending.values())

    # --- joining ----------------------------------------------------------------------------
    async def submit(
        self,
        request: RewardsRequest,
        groups: list[list[TokenSequence]],
        gone: Gone | None = None,
    ) -> list[list[SampleAnswer]]:
        """Each group's samples held until their groups complete; one answer per sample."""
        self._check(request, groups)
        futures = [
            [self._join(request, i, group, j, seq) for j, seq in enumerate(seqs)]
            for i, (group, seqs) in enumerate(zip(request.groups, groups, strict=True))
        ]
        flat = [f for row in futures for f in row]
        left = False
        try:
            # A caller that left stays held (its sample still counts for the group) until the
            # group is answered, expires or a retry takes its slot.
            while not all(f.done() for f in flat):
                await asyncio.wait(flat, timeout=0.5, return_when=asyncio.ALL_COMPLETED)
                pending = not all(f.done() for f in flat)
                if not left and gone is not None and pending and await gone():
                    left = True
                    self._caller_left(flat)
        except asyncio.CancelledError:
            self._caller_left(flat)
            raise
        return [[f.result() for f in row] for row in futures]

    def _check(self, request: RewardsRequest, groups: list[list[TokenSequence]]) -> None:
        problems = []
        for i, group in enumerate(request.groups):
            n = len(group.completion_list)
            if group.group_size is not None and n > group.group_size:
                problems.append(
                    InputProblem(
                        f"groups[{i}]", f"{n} completions exceed its group_size={group.group_size}"
                    )
                )
            pending = self._pending.get(str(group.id))
            if pending is not None and groups[i] and pending.prompt_ids != groups[i][0].prompt_ids:
                problems.append(
                    InputProblem(
                        f"groups[{i}]",
                        f"group {group.id!r} is held with another prompt: every sample of a "
                        "group must have the same prompt",
                    )
                )
            elif pending is not None and pending.size != group.group_size:
                problems.append(
                    InputProblem(
                        f"groups[{i}].group_size",
                        f"{group.group_size} differs from the {pending.size} group {group.id!r} "
                        "is held with",
                    )
                )
        if problems:
            raise InvalidInputError(problems)
        # What stays held after this request: samples that complete a group leave at once.
        adding = nbytes = 0
        for group, seqs in zip(request.groups, groups, strict=True):
            pending = self._pending.get(str(group.id))
            now = len(pending.samples) if pending else 0
            size = group.group_size or 1
            stay = (now + len(seqs)) % size - now
            adding += stay
            if stay > 0:
                nbytes += sum(held_size(seq) for seq in seqs[-stay:])
        if adding > 0 and self.held_samples + adding > self.max_held_samples:
            raise OverloadedError(
                f"{self.held_samples} samples are held waiting for their groups; {adding} more "
                f"would pass max_held_samples={self.max_held_samples}",
                retry_after=1.0,
            )
        if nbytes > 0 and self.held_bytes + nbytes > self.max_held_bytes:
            raise OverloadedError(
                f"{self.held_bytes} bytes of samples are held; {nbytes} more would pass "
                f"max_held_bytes={self.max_held_bytes}",
                retry_after=1.0,
            )

    def _join(
        self, request: RewardsRequest, i: int, group: Group, j: int, seq: TokenSequence
    ) -> asyncio.Future[SampleAnswer]:
        loop = asyncio.get_running_loop()
        key = str(group.id)
        sample_id = group.sample_ids[j] if group.sample_ids is not None else None
        identity = ("id", sample_id) if sample_id is not None else ("ids", seq.completion_ids)
        future: asyncio.Future[SampleAnswer] = loop.create_future()
        kept = self._answers.pop((key, identity), None)
        if kept is not None:  # a retry of a sample answered after its caller left
            future.set_result(kept[0])
            return future
        expired = self._expired.get((key, identity))
        if expired is not None and time.monotonic() - expired <= EXPIRED_KEPT_S:
            self._expired[(key, identity)] = time.monotonic()
            future.set_result(incomplete())
            return future
        pending = self._pending.get(key)
        if pending is None:
            pending = self._open(request, group, key, seq)
        sample = HeldSample(seq, identity, future, held_size(seq))
        for k, held in enumerate(pending.samples):
            if held.identity == identity and (sample_id is not None or held.caller_gone):
                held.fail(
                    InvalidInputError(
                        [InputProblem(f"groups[{i}]", "superseded by a retry of this sample")]
                    )
                )
                self.held_bytes -= held.nbytes
                pending.samples[k] = sample
                self.held_bytes += sample.nbytes
                return future
        pending.samples.append(sample)
        self.held_bytes += sample.nbytes
        pending.signals = list(dict.fromkeys([*pending.signals, *request.signals]))
        if request.min_weight_version is not None:
            pending.min_weight_version = max(
                pending.min_weight_version or 0, request.min_weight_version
            )
        if len(pending.samples) == pending.size:
            self._close(pending)
            task = loop.create_task(self._score(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    def _open(self, request: RewardsRequest, group: Group, key: str, seq) -> PendingGroup:
        hold_s = group.hold_s or request.hold_s or self.hold_s
        pending = PendingGroup(
            key=key,
            size=group.group_size or 1,
            prompt_ids=seq.prompt_ids,
            temperature=request.temperature,
            shaping=request.shaping,
            signals=list(request.signals),
            min_weight_version=request.min_weight_version,
            wait_s=request.wait_s,
            reward_spec=request.reward_spec,  # type: ignore[arg-type]  (resolved by the pipeline)
        )
        pending.timer = asyncio.get_running_loop().call_later(hold_s, self._expire, pending)
        self._pending[key] = pending
        return pending

    def _close(self, pending: PendingGroup) -> None:
        """No more samples join this group; it leaves the held set."""
        if self._pending.get(pending.key) is pending:
            del self._pending[pending.key]
        if pending.timer is not None:
            pending.timer.cancel()
        self.held_bytes -= sum(s.nbytes for s in pending.samples)

    def _caller_left(self, futures: list[asyncio.Future]) -> None:
        mine = set(map(id, futures))
        for pending in self._pending.values():
            for sample in pending.samples:
                if id(sample.future) in mine:
                    sample.caller_gone = True

    # --- answering --------------------------------------------------------------------------
    async def _score(self, pending: PendingGroup) -> None:
        samples = pending.samples
        request = RewardsRequest(
            groups=[
                Group(
                    id=pending.key,
                    prompt_ids=list(pending.prompt_ids),
                    completion_ids=[list(s.sequence.completion_ids) for s in samples],
                )
            ],
            signals=pending.signals,
            temperature=pending.temperature,
            shaping=pending.shaping,
            min_weight_version=pending.min_weight_version,
            wait_s=pending.wait_s,
            reward_spec=pending.reward_spec,
        )
        try:
            response = await self._run(request, [[s.sequence for s in samples]])
        except Exception as exc:  # the whole group failed: every sample hears why
            for s in samples:
                s.fail(exc)
            return
        g = response.groups[0]
        for j, s in enumerate(samples):
            answer = SampleAnswer(
                model=response.model,
                version=response.weight_version,
                reward=g.rewards[j],
                score=g.scores[j],
                grad_norm=g.grad_norms[j],
                signals={name: values[j] for name, values in (g.signals or {}).items()},
                reason=g.reasons[j],
            )
            if s.caller_gone:
                self._answers[(pending.key, s.identity)] = (answer, time.monotonic())
            if not s.future.done():
                s.future.set_result(answer)
        self._forget_old_answers()

    def _expire(self, pending: PendingGroup) -> None:
        self._close(pending)
        self.incomplete += 1
        log.warning(
            "group %r incomplete: %d of %d samples arrived in %.0f s; answered %r",
            pending.key, len(pending.samples), pending.size,
            time.monotonic() - pending.started, INCOMPLETE,
        )  # fmt: skip
        now = time.monotonic()
        for s in pending.samples:
            self._expired[(pending.key, s.identity)] = now
            if not s.future.done():
                s.future.set_result(incomplete())
        self._forget_old_answers()

    def _forget_old_answers(self) -> None:
        now = time.monotonic()
        for k in [k for k, (_, t) in self._answers.items() if now - t > ANSWER_KEPT_S]:
            del self._answers[k]
        for k in [k for k, t in self._expired.items() if now - t > EXPIRED_KEPT_S]:
            del self._expired[k]

    def fail_all(self, why: str) -> None:
        """Shutting down: every held sample answers 503 so its caller retries elsewhere."""
        for pending in list(self._pending.values()):
            self._close(pending)
            for s in pending.samples:
                s.fail(NotReadyError(why))

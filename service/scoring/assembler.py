"""Whole groups from samples that arrive one request at a time (OpenRLHF ≥ 0.9.1, verl ≥ 0.7).

A sample joins the pending group of its key. When `group_size` samples of a key have arrived,
from any requests in any order, the whole group is scored as one request through the pipeline —
one engine call, one weight version — ranked, and every waiting sample is answered with its own
row. Arrivals past `group_size` start the key's next group (the same prompt twice in a batch).

Ownership: a key lives in its caller's namespace (bearer token and run key, see `Caller`), so
no other tenant can join, supersede or configure a group. Within a namespace the first sample
fixes the group's terms (prompt, group_size, shaping, signals, temperature, min_weight_version,
reward variant, estimator); a sample that differs is refused (422, naming the field) before
anything is held, and the held group is untouched. One request may not name a key twice.

Identity: a sample whose `sample_id` is already held takes over that slot (a retry never counts
twice), and must carry the same completion; the earlier try, if its caller still waits, hears the
same answer (a try the server reads after its own retry must not turn the retry away). After its
group was answered, a retry with that `sample_id` gets the same answer for `ANSWER_KEPT_S`: it
never opens a new group. Without an id,
a sample identical to a held one whose caller went away takes over its slot, and a sample
identical to one that was answered after its caller left gets that answer. Either kind of retry
that comes while its group is being scored (the rest of the group filled it first) hears that
group's answer. A group still
incomplete after its hold time answers its samples with no reward and the reason
`group_incomplete`, and so does a retry of one of those samples that comes within
`EXPIRED_KEPT_S` of the last such answer: OpenRLHF retries a failed call five times, 1 s apart,
and each retry would otherwise open a new group and wait the whole hold time again. The window
is short because without sample ids a retry is known only by its content, which a later sample
of the same prompt can share.

Bounds: held samples and held bytes, globally and per namespace, and the hold time itself
(`max_hold_s`). Held bytes count what is really kept: a waiting request's body (BODY_COPIES),
every held sample's tokens, and fixed-size digests in place of the caller's ids. A request past
a bound is refused whole (429): nothing it carried is held, nothing already held is dropped. A
request that only completes groups is never refused (it is what frees memory). Held samples live
in memory only: a restart closes their connections, and the callers' retries form the group
again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vigor_client.schema import Group, RewardsRequest, RewardsResponse
from vigor_client.wire import GROUP_HOLD_S

from ..engine.types import TokenSequence
from ..errors import InputProblem, InvalidInputError, NotReadyError, OverloadedError
from .held import (
    BODY_COPIES,
    INCOMPLETE,
    Caller,
    HeldSample,
    PendingGroup,
    SampleAnswer,
    digest_ids,
    digest_text,
    held_size,
    incomplete,
)

log = logging.getLogger(__name__)

ANSWER_KEPT_S = 300.0  # how long an answer waits for a retry of its sample
EXPIRED_KEPT_S = 5.0  # a retry this soon after its sample's last incomplete answer hears it again

Run = Callable[[RewardsRequest, list[list[TokenSequence]]], Awaitable[RewardsResponse]]
Gone = Callable[[], Awaitable[bool]]
Key = tuple[str, bytes]


@dataclass(frozen=True)
class HoldBounds:
    hold_s: float = GROUP_HOLD_S  # default hold time
    max_hold_s: float = 600.0  # the most a caller may ask for
    max_held_samples: int = 65536
    max_held_bytes: int = 1 << 30
    max_held_samples_per_namespace: int = 16384
    max_held_bytes_per_namespace: int = 256 << 20


def _label(group_id) -> str:
    text = str(group_id)
    return text if len(text) <= 60 else text[:57] + "..."


class GroupAssembler:
    def __init__(self, run: Run, bounds: HoldBounds) -> None:
        self._run = run
        self.bounds = bounds
        self.hold_s = bounds.hold_s
        self._pending: dict[Key, PendingGroup] = {}
        self._scoring: dict[Key, list[PendingGroup]] = {}  # complete, their answers not yet in
        # (key, identity) → (answer, when, completion digest): retries answered from the result
        self._answers: dict[tuple, tuple[SampleAnswer, float, bytes]] = {}
        self._expired: dict[tuple, float] = {}  # (key, identity) → when its group expired
        self._tasks: set[asyncio.Task] = set()
        self.held_bytes = 0
        self.held_samples = 0
        self._ns_bytes: dict[str, int] = {}
        self._ns_samples: dict[str, int] = {}
        self.incomplete = 0  # groups given up on, for /metrics

    @property
    def held_groups(self) -> int:
        return len(self._pending)

    @property
    def held_orphans(self) -> int:
        """Held samples whose caller left; each waits for a retry or its group's end."""
        return sum(s.caller_gone for p in self._pending.values() for s in p.samples)

    def namespace_usage(self, namespace: str) -> tuple[int, int]:
        """(held samples, held bytes) of one namespace."""
        return self._ns_samples.get(namespace, 0), self._ns_bytes.get(namespace, 0)

    def _count(self, namespace: str, nbytes: int, samples: int = 0) -> None:
        self.held_bytes += nbytes
        self.held_samples += samples
        for book, delta in ((self._ns_bytes, nbytes), (self._ns_samples, samples)):
            left = book.get(namespace, 0) + delta
            if left:
                book[namespace] = left
            else:
                book.pop(namespace, None)

    # --- joining ----------------------------------------------------------------------------
    async def submit(
        self,
        request: RewardsRequest,
        groups: list[list[TokenSequence]],
        gone: Gone | None = None,
        caller: Caller | None = None,
    ) -> list[list[SampleAnswer]]:
        """Each group's samples held until their groups complete; one answer per sample."""
        caller = caller or Caller()
        ns = caller.namespace
        keys = [(ns, digest_text(str(g.id))) for g in request.groups]
        body = BODY_COPIES * caller.body_bytes
        self._check(request, groups, keys, body)
        self._count(ns, body)  # the request itself, while it waits
        try:
            futures = [
                [self._join(request, i, keys[i], group, j, seq) for j, seq in enumerate(seqs)]
                for i, (group, seqs) in enumerate(zip(request.groups, groups, strict=True))
            ]
            flat = [f for row in futures for f in row]
            left = False
            try:
                # A caller that left stays held (its sample still counts for the group) until
                # the group is answered, expires or a retry takes its slot.
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
        finally:
            self._count(ns, -body)

    def _check(
        self,
        request: RewardsRequest,
        groups: list[list[TokenSequence]],
        keys: list[Key],
        body_bytes: int,
    ) -> None:
        problems = []
        first: dict[Key, int] = {}
        for i, (group, key) in enumerate(zip(request.groups, keys, strict=True)):
            if key in first:
                problems.append(
                    InputProblem(
                        f"groups[{i}].id",
                        f"repeats groups[{first[key]}].id ({_label(group.id)!r}): one request "
                        "may carry a group key once; put its completions in one group",
                    )
                )
                continue
            first[key] = i
            problems += self._check_group(request, i, group, key, groups[i])
        if problems:
            raise InvalidInputError(problems)
        self._check_bounds(request, groups, keys, body_bytes)

    def _check_group(
        self, request: RewardsRequest, i: int, group: Group, key: Key, seqs: list[TokenSequence]
    ) -> list[InputProblem]:
        loc = f"groups[{i}]"
        n = len(group.completion_list)
        if group.group_size is not None and n > group.group_size:
            return [InputProblem(loc, f"{n} completions exceed its group_size={group.group_size}")]
        hold_s = group.hold_s if group.hold_s is not None else request.hold_s
        if hold_s is not None and hold_s > self.bounds.max_hold_s:
            where = f"{loc}.hold_s" if group.hold_s is not None else "hold_s"
            return [
                InputProblem(
                    where,
                    f"{hold_s:g} exceeds this server's max_group_hold_s={self.bounds.max_hold_s:g}",
                )
            ]
        problems = self._check_terms(request, loc, group, key, seqs)
        problems += self._check_retries(loc, group, key, seqs)
        return problems

    def _check_terms(
        self, request: RewardsRequest, loc: str, group: Group, key: Key, seqs
    ) -> list[InputProblem]:
        """The held group's terms were fixed by its first sample: every later one must match."""
        pending = self._pending.get(key)
        if pending is None:
            return []
        name = _label(group.id)
        if seqs and pending.prompt_ids != seqs[0].prompt_ids:
            return [
                InputProblem(
                    loc,
                    f"group {name!r} is held with another prompt: every sample of a group must "
                    "have the same prompt",
                )
            ]
        asked = {
            f"{loc}.group_size": (group.group_size, pending.size),
            "shaping": (request.shaping, pending.shaping),
            "signals": (sorted(set(request.signals)), sorted(set(pending.signals))),
            "temperature": (request.temperature, pending.temperature),
            "min_weight_version": (request.min_weight_version, pending.min_weight_version),
            "reward_spec": (request.reward_spec, pending.reward_spec),
            "estimator": (request.estimator, pending.estimator),
        }
        return [
            InputProblem(
                where,
                f"{mine!r} differs from the {held!r} group {name!r} is held with: every sample "
                "of a group must ask for the same",
            )
            for where, (mine, held) in asked.items()
            if mine != held
        ]

    def _check_retries(self, loc: str, group: Group, key: Key, seqs) -> list[InputProblem]:
        """A sample id already held or answered in this group must carry the same completion."""
        if group.sample_ids is None:
            return []
        pending = self._pending.get(key)
        held = {s.identity: s.content for s in pending.samples} if pending else {}
        problems = []
        for j, (sid, seq) in enumerate(zip(group.sample_ids, seqs, strict=True)):
            identity = ("id", digest_text(sid))
            content = digest_ids(seq.completion_ids)
            kept = self._answers.get((key, identity))
            before = held.get(identity, kept[2] if kept is not None else None)
            if before is not None and before != content:
                problems.append(
                    InputProblem(
                        f"{loc}.sample_ids[{j}]",
                        f"{_label(sid)!r} already stands for another completion in group "
                        f"{_label(group.id)!r}; a retry must send the same one",
                    )
                )
        return problems

    def _check_bounds(self, request, groups, keys: list[Key], body_bytes: int) -> None:
        # What stays held after this request: samples that complete a group leave at once.
        adding = nbytes = 0
        for group, seqs, key in zip(request.groups, groups, keys, strict=True):
            pending = self._pending.get(key)
            now = len(pending.samples) if pending else 0
            size = group.group_size or 1
            stay = (now + len(seqs)) % size - now
            adding += stay
            if stay > 0:
                nbytes += sum(held_size(seq) for seq in seqs[-stay:])
        if adding <= 0:
            return  # it only completes groups: the request that frees memory is never refused
        nbytes += body_bytes
        ns = keys[0][0] if keys else ""
        ns_samples, ns_bytes = self.namespace_usage(ns)
        b = self.bounds
        for held, more, bound, what in (
            (self.held_samples, adding, b.max_held_samples, "max_held_samples"),
            (self.held_bytes, nbytes, b.max_held_bytes, "max_held_bytes"),
            (ns_samples, adding, b.max_held_samples_per_namespace,
             "max_held_samples_per_namespace"),
            (ns_bytes, nbytes, b.max_held_bytes_per_namespace, "max_held_bytes_per_namespace"),
        ):  # fmt: skip
            if held + more > bound:
                unit = "samples" if "samples" in what else "bytes"
                scope = "of this caller (token and run key) " if "namespace" in what else ""
                raise OverloadedError(
                    f"{held} {unit} {scope}are held waiting for their groups; {more} more would "
                    f"pass {what}={bound}",
                    retry_after=1.0,
                )

    def _join(
        self, request: RewardsRequest, i: int, key: Key, group: Group, j: int, seq: TokenSequence
    ) -> asyncio.Future[SampleAnswer]:
        loop = asyncio.get_running_loop()
        sample_id = group.sample_ids[j] if group.sample_ids is not None else None
        content = digest_ids(seq.completion_ids)
        identity = ("id", digest_text(sample_id)) if sample_id is not None else ("ids", content)
        future: asyncio.Future[SampleAnswer] = loop.create_future()
        if sample_id is not None:  # idempotent: every retry hears the same answer
            kept = self._answers.get((key, identity))
        else:  # known only by content: the answer goes to the first identical sample
            kept = self._answers.pop((key, identity), None)
        if kept is not None:
            future.set_result(kept[0])
            return future
        expired = self._expired.get((key, identity))
        if expired is not None and time.monotonic() - expired <= EXPIRED_KEPT_S:
            self._expired[(key, identity)] = time.monotonic()
            future.set_result(incomplete())
            return future
        sample = HeldSample(seq, identity, future, held_size(seq), content=content)
        if self._join_scoring(key, sample, by_id=sample_id is not None):
            return future
        pending = self._pending.get(key)
        if pending is None:
            pending = self._open(request, group, key, seq)
        for k, held in enumerate(pending.samples):
            if held.retried_by(sample, by_id=sample_id is not None):
                sample.earlier = [held, *held.earlier]
                held.earlier = []
                pending.samples[k] = sample
                self._count(key[0], sample.nbytes - held.nbytes)
                return future
        pending.samples.append(sample)
        self._count(key[0], sample.nbytes, 1)
        if len(pending.samples) == pending.size:
            self._close(pending)
            self._scoring.setdefault(key, []).append(pending)
            task = loop.create_task(self._score(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    def _join_scoring(self, key: Key, sample: HeldSample, by_id: bool) -> bool:
        """A retry of a sample whose group is complete but not yet answered hears that answer:
        the rest of the group can fill it (a caller that left still counts) before the retry
        arrives, and a new group for the retry would never fill."""
        for pending in self._scoring.get(key, ()):
            for held in pending.samples:
                if held.retried_by(sample, by_id):
                    held.earlier.append(sample)
                    # The answer has a caller again: not kept for a later identical sample.
                    held.caller_gone = False
                    return True
        return False

    def _open(self, request: RewardsRequest, group: Group, key: Key, seq) -> PendingGroup:
        hold_s = group.hold_s or request.hold_s or self.hold_s
        pending = PendingGroup(
            key=key,
            label=_label(group.id),
            size=group.group_size or 1,
            prompt_ids=seq.prompt_ids,
            temperature=request.temperature,
            shaping=request.shaping,
            signals=list(request.signals),
            min_weight_version=request.min_weight_version,
            wait_s=request.wait_s,
            reward_spec=request.reward_spec,  # type: ignore[arg-type]  (resolved by the pipeline)
            estimator=request.estimator,  # type: ignore[arg-type]  (resolved by the pipeline)
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
        self._count(pending.key[0], -sum(s.nbytes for s in pending.samples), -len(pending.samples))

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
                    id=pending.label,
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
            estimator=pending.estimator,
        )
        try:
            response = await self._run(request, [[s.sequence for s in samples]])
        except Exception as exc:  # the whole group failed: every sample hears why
            for s in samples:
                s.fail(exc)
            return
        finally:  # no await from here to the answers below: no retry can fall in between
            self._done_scoring(pending)
        g = response.groups[0]
        now = time.monotonic()
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
            if s.caller_gone or s.identity[0] == "id":
                self._answers[(pending.key, s.identity)] = (answer, now, s.content)
            s.answer(answer)
        self._forget_old_answers()

    def _done_scoring(self, pending: PendingGroup) -> None:
        left = [p for p in self._scoring.get(pending.key, []) if p is not pending]
        if left:
            self._scoring[pending.key] = left
        else:
            self._scoring.pop(pending.key, None)

    def _expire(self, pending: PendingGroup) -> None:
        self._close(pending)
        self.incomplete += 1
        log.warning(
            "group %r incomplete: %d of %d samples arrived in %.0f s; answered %r",
            pending.label, len(pending.samples), pending.size,
            time.monotonic() - pending.started, INCOMPLETE,
        )  # fmt: skip
        now = time.monotonic()
        for s in pending.samples:
            self._expired[(pending.key, s.identity)] = now
            s.answer(incomplete())
        self._forget_old_answers()

    def _forget_old_answers(self) -> None:
        """Kept answers expire after ANSWER_KEPT_S; at most max_held_samples are kept (each a
        few hundred bytes of digests and floats), the oldest dropped first."""
        now = time.monotonic()
        for k in [k for k, (_, t, _) in self._answers.items() if now - t > ANSWER_KEPT_S]:
            del self._answers[k]
        excess = len(self._answers) - self.bounds.max_held_samples
        for k in list(self._answers)[: max(0, excess)]:
            del self._answers[k]
        for k in [k for k, t in self._expired.items() if now - t > EXPIRED_KEPT_S]:
            del self._expired[k]

    def fail_all(self, why: str) -> None:
        """Shutting down: every held sample answers 503 so its caller retries elsewhere."""
        for pending in list(self._pending.values()):
            self._close(pending)
            for s in pending.samples:
                s.fail(NotReadyError(why))

"""What the group assembler holds: samples waiting for their group, and the answer each gets."""

from __future__ import annotations

import asyncio
import hashlib
import time
from array import array
from dataclasses import dataclass, field

from vigor_client.schema import ExactEstimator, RewardSpec, SketchEstimator
from vigor_client.wire import ErrorCode

from ..engine.types import TokenSequence

# A held sample's `reason` when its group never completed: the same code as the 504's.
INCOMPLETE = ErrorCode.GROUP_INCOMPLETE.value

# What a held request pins besides its token sequences, per byte of its body: the raw body,
# the decoded JSON and the validated model are all alive while the request waits (measured:
# a body of one 24 MiB group id held ~72 MB of RSS). Samples that outlive their request (the
# caller left) keep only their tokens and digests.
BODY_COPIES = 3
# A held sample's own objects (HeldSample, its future, digests, two tuples) and, per token, a
# tuple slot and an int object (ids above 256 are not shared small ints).
SAMPLE_OVERHEAD = 512
TOKEN_BYTES = 36


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as far as holding goes.

    `namespace` keeps one tenant's group keys and sample ids apart from another's (the API layer
    derives it from the bearer token and the run key); `body_bytes` is the size of the request
    body, which stays in memory while its samples wait.
    """

    namespace: str = ""
    body_bytes: int = 0


@dataclass(frozen=True)
class SampleAnswer:
    """One sample's row of its scored group, or `reason` when there is no score."""

    model: str | None
    version: int | None
    reward: float | None
    score: float | None
    grad_norm: float | None
    signals: dict[str, float | None]
    reason: str | None


@dataclass
class HeldSample:
    sequence: TokenSequence
    identity: tuple
    future: asyncio.Future[SampleAnswer]
    nbytes: int
    caller_gone: bool = False
    content: bytes = b""  # digest of the completion ids: a retry must carry the same ones
    # Earlier tries of this sample whose slot it took: they hear the same answer, so a try the
    # server reads late (after its retry) neither counts twice nor turns the retry away.
    earlier: list[HeldSample] = field(default_factory=list)

    def retried_by(self, other: HeldSample, by_id: bool) -> bool:
        """`other` is a retry of this sample: the same identity and completion, and known by
        its sample_id or sent after this sample's caller left."""
        same = self.identity == other.identity and self.content == other.content
        return same and (by_id or self.caller_gone)

    def answer(self, answer: SampleAnswer) -> None:
        for s in (self, *self.earlier):
            if not s.future.done():
                s.future.set_result(answer)

    def fail(self, exc: BaseException) -> None:
        for s in (self, *self.earlier):
            if s.future.done():
                continue
            s.future.set_exception(exc)
            if s.caller_gone or s is not self:
                s.future.exception()  # maybe nobody awaits it: no "never retrieved" in the log


@dataclass
class PendingGroup:
    key: tuple[str, bytes]  # (namespace, digest of the group id)
    label: str  # the group id, shortened, for messages and logs
    size: int
    prompt_ids: tuple[int, ...]
    temperature: float
    shaping: str
    signals: list[str]
    min_weight_version: int | None
    wait_s: float
    reward_spec: RewardSpec | None = None  # resolved by the pipeline before a sample is held
    estimator: ExactEstimator | SketchEstimator | None = None  # resolved likewise
    samples: list[HeldSample] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    started: float = field(default_factory=time.monotonic)


def incomplete() -> SampleAnswer:
    return SampleAnswer(None, None, None, None, None, {}, INCOMPLETE)


def held_size(seq: TokenSequence) -> int:
    """Bytes a held sample keeps alive once its request is gone (tokens, digests, objects)."""
    return SAMPLE_OVERHEAD + TOKEN_BYTES * (len(seq.prompt_ids) + len(seq.completion_ids))


def digest_text(text: str) -> bytes:
    """A fixed-size stand-in for a caller's string (group id, sample id): a 24 MiB id held
    for minutes costs 16 bytes, not 24 MiB."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def digest_ids(ids: tuple[int, ...]) -> bytes:
    return hashlib.blake2b(array("q", ids).tobytes(), digest_size=16).digest()

"""What the group assembler holds: samples waiting for their group, and the answer each gets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from vigor_client.schema import RewardSpec
from vigor_client.wire import ErrorCode

from ..engine.types import TokenSequence

# A held sample's `reason` when its group never completed: the same code as the 504's.
INCOMPLETE = ErrorCode.GROUP_INCOMPLETE.value


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

    def fail(self, exc: BaseException) -> None:
        if self.future.done():
            return
        self.future.set_exception(exc)
        if self.caller_gone:
            self.future.exception()  # nobody awaits it: no "never retrieved" error in the log


@dataclass
class PendingGroup:
    key: str
    size: int
    prompt_ids: tuple[int, ...]
    temperature: float
    shaping: str
    signals: list[str]
    min_weight_version: int | None
    wait_s: float
    reward_spec: RewardSpec | None = None  # resolved by the pipeline before a sample is held
    samples: list[HeldSample] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    started: float = field(default_factory=time.monotonic)


def incomplete() -> SampleAnswer:
    return SampleAnswer(None, None, None, None, None, {}, INCOMPLETE)


def held_size(seq: TokenSequence) -> int:
    """Held bytes of a sample, as the server stores it (ids as Python ints in tuples)."""
    return 64 + 8 * (len(seq.prompt_ids) + len(seq.completion_ids))

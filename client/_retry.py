"""Repeating a request after a transient failure: which calls may be repeated, how long to wait.

Sans-IO, like the push plan: `exchange` is a generator that yields a request to send or a pause
to take and receives the response (or has the transport error thrown in); the sync and async
clients run it with the one driver in _drive.py and differ only in how they send and sleep.

Which calls are repeated (`Idempotency`, set by the request-building core):
- SAFE: scoring, model info, staging an upload bucket (the server accepts a tensor again when it
  carries the same values), aborting an upload. A repeat changes nothing the first try did not.
- BY_VERSION: a weight change with an explicit version (reload, one-request push, commit, adapter
  load or unload). The server applies a version at most once (a version not above the served one
  is a 409 `version_conflict`), so a repeat cannot apply twice. When a try went unanswered and its
  repeat meets that 409 with `current_weight_version` equal to the version, the unanswered try
  took effect: the call returns a `RecoveredUpdate` (this assumes one writer per server, which
  explicit versions assume anyway).
- NONE: a weight change without a version (the server picks served + 1: a repeat would apply a
  second time) and opening an upload (a repeat opens a second one). Repeated only when the
  connection was never made, so the server cannot have seen the request.

What is retried: connection failures (refused, dropped, closed without an answer) and the statuses
in `RetryPolicy.statuses` (429, 502, 503), waiting `Retry-After` when the server sends it, else an
exponential backoff, both with jitter. How long: `max_retries` repeats of a failure, and a busy
answer (429 with Retry-After: the server is alive and says when to come back) repeated apart from
that count, as the trainers' own clients ride out a busy server (OpenRLHF and TRL's VLLMClient
try 5 times, verl 16); all of it within `max_elapsed_s`. Not retried: a read timeout (the
client's timeout already exceeds the server's own bounds — wait_s, deadline_s, the admin
timeout — by a margin, so the server is stuck and a repeat would double its load), 409 (the
server already waited wait_s), 504 (the caller's deadline has passed) and every other 4xx / 5xx.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from ._drive import Pause
from .errors import (
    StaleWeightsError,
    VigorConnectionError,
    VigorError,
    VigorServerError,
    VigorTimeoutError,
)
from .schema import WeightUpdate
from .wire import ErrorCode


class Idempotency(enum.Enum):
    SAFE = "safe"
    BY_VERSION = "by_version"
    NONE = "none"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is repeated; `RetryPolicy(max_retries=0)` never.

    A retry after a failure counts against `max_retries`; one after a busy answer (429 with
    Retry-After) against `busy_retries` (None: no count, only the time budget). Every retry must
    end within `max_elapsed_s` of the first try (None: no budget). The n-th retry waits
    `Retry-After` lengthened by up to `jitter` of itself at random (refusing a Retry-After longer
    than `max_retry_after_s`), else `min(max_backoff_s, backoff_s · 2^(n−1))` shortened by up to
    `jitter` of itself: clients refused at once do not all return at once and collide again.
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    jitter: float = 0.5
    max_retry_after_s: float = 120.0
    statuses: frozenset[int] = field(default=frozenset({429, 502, 503}))
    seed: int | None = None  # for reproducible jitter in tests
    busy_retries: int | None = None
    # Above a scoring call's own bound (120 s + margin): a busy server gets more than one pass.
    max_elapsed_s: float | None = 300.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {self.max_retries}")
        if self.busy_retries is not None and self.busy_retries < 0:
            raise ValueError(f"busy_retries must be >= 0 or None, not {self.busy_retries}")
        if self.max_elapsed_s is not None and not self.max_elapsed_s > 0:
            raise ValueError(f"max_elapsed_s must be > 0 or None, not {self.max_elapsed_s}")
        if self.busy_retries is None and self.max_elapsed_s is None and self.max_retries:
            raise ValueError(
                "busy_retries=None needs a max_elapsed_s: a busy server is repeated "
                "until the time budget runs out"
            )
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("backoff_s, max_backoff_s and max_retry_after_s must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter is a fraction in [0, 1], not {self.jitter}")
        object.__setattr__(self, "statuses", frozenset(self.statuses))

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The pause before retry number `retry` (1-based) without a Retry-After."""
        full = min(self.max_backoff_s, self.backoff_s * 2.0 ** (retry - 1))
        return full * (1.0 - self.jitter * rng.random())

    def after(self, retry_after: float, rng: random.Random) -> float:
        """The pause a Retry-After asks for, lengthened (never shortened: the server asked for at
        least that) by up to `jitter` of itself, within `max_retry_after_s`."""
        longer = retry_after * (1.0 + self.jitter * rng.random())
        return max(retry_after, min(self.max_retry_after_s, longer))


NO_RETRY = RetryPolicy(max_retries=0)


def as_policy(value: RetryPolicy | int | None) -> RetryPolicy:
    """A policy from a policy, a number of retries, or None (no retries)."""
    if value is None:
        return NO_RETRY
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"retry= takes a RetryPolicy, an int or None, not {type(value).__name__}")
    return RetryPolicy(max_retries=value)


@dataclass(frozen=True)
class Recovered:
    """An unanswered try took effect: its repeat found `version` already served."""

    version: int


class RecoveredUpdate(WeightUpdate):
    """A weight change whose answer was lost, confirmed by its repeat (never on the wire).

    The server already served `weight_version` when the repeat arrived, so the first try applied
    it; what that try wrote and how long it took were in the lost answer and are not known here.
    """

    previous_version: int | None = None
    tensors: int | None = None
    bytes: int | None = None
    seconds: float | None = None
    recovered: Literal[True] = True


def passing(error: VigorError, statuses: frozenset[int] = RetryPolicy().statuses) -> bool:
    """Whether a failure may pass if the same request is sent again (here or to a replica)."""
    if isinstance(error, VigorConnectionError):
        read_timeout = isinstance(error, VigorTimeoutError) and error.request_sent
        return error.transient and not read_timeout
    return isinstance(error, VigorServerError) and error.status in statuses


def busy(error: VigorError) -> bool:
    """A 429 with Retry-After: the server is alive and answering, and says when to come back."""
    if not isinstance(error, VigorServerError):
        return False
    return error.status == 429 and error.retry_after is not None


def _verdict(policy: RetryPolicy, req: Any, error: VigorError, done: list[bool]) -> str | None:
    """None to retry, else why not ("" when there is nothing worth saying); `done` says of each
    earlier retry whether it followed a busy answer."""
    if not passing(error, policy.statuses):
        if isinstance(error, VigorTimeoutError) and error.request_sent:
            return "not retried: a read timeout means the server exceeded its own bounds"
        return ""
    never_sent = isinstance(error, VigorConnectionError) and not error.request_sent
    if req.idempotency is Idempotency.NONE and not never_sent:
        return f"not retried: {req.method} {req.path} is not idempotent ({req.why_not_idempotent})"
    if policy.max_retries == 0:
        return ""
    if busy(error) and policy.busy_retries is not None and sum(done) >= policy.busy_retries:
        return f"gave up: busy_retries={policy.busy_retries} reached"
    failures = len(done) - sum(done)
    if not busy(error) and failures >= policy.max_retries:
        return f"gave up: retry bound max_retries={policy.max_retries} reached"
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None and retry_after > policy.max_retry_after_s:
        return (
            f"not retried: Retry-After {retry_after:g} s exceeds "
            f"max_retry_after_s={policy.max_retry_after_s:g}"
        )
    return None


def _is_own_version(error: VigorError, req: Any) -> bool:
    return (
        req.idempotency is Idempotency.BY_VERSION
        and isinstance(error, StaleWeightsError)
        and error.code == ErrorCode.VERSION_CONFLICT
        and req.version is not None
        and error.current_weight_version == req.version
    )


Step = Any  # a PreparedRequest to send, or a Pause
Exchange = Generator[Step, Any, "httpx.Response | Recovered"]


def exchange(
    req: Any,
    error_for: Callable[[httpx.Response], VigorServerError | None],
    policy: RetryPolicy,
    rng: random.Random,
) -> Exchange:
    """Send `req` until it succeeds or the policy says stop; raise the last error, annotated."""
    history: list[VigorError] = []
    done: list[bool] = []  # per retry so far: did it follow a busy answer
    start = time.monotonic()
    unanswered = False  # an earlier try may have taken effect without us hearing of it
    while True:
        try:
            response = yield req
        except VigorConnectionError as exc:
            error: VigorError = exc
        else:
            server_error = error_for(response)
            if server_error is None:
                return response
            # An unanswered try of a versioned change may have applied; its repeat tells.
            if unanswered and _is_own_version(server_error, req):
                return Recovered(req.version)
            error = server_error
        why = _verdict(policy, req, error, done)
        pause = 0.0
        if why is None:
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                pause = policy.after(retry_after, rng)
            else:
                pause = policy.backoff(len(history) + 1, rng)
            budget = policy.max_elapsed_s
            if budget is not None and time.monotonic() - start + pause > budget:
                why = f"gave up: the next try would start after max_elapsed_s={budget:g}"
        if why is not None:
            error.record_attempts(history, time.monotonic() - start, why)
            raise error
        if isinstance(error, VigorConnectionError) and error.request_sent:
            unanswered = True
        history.append(error)
        done.append(busy(error))
        yield Pause(pause)


__all__ = [
    "NO_RETRY",
    "Idempotency",
    "RecoveredUpdate",
    "RetryPolicy",
    "as_policy",
    "busy",
    "exchange",
    "passing",
]

"""TRL reward functions scored by the service, sync and async.

TRL calls a reward function with `prompts, completions, completion_ids, trainer_state,
log_extra, log_metric` and the dataset's other columns, and one call holds this process's slice
of the batch with each prompt's `num_generations` completions next to each other. On several
processes a group may be split between two of them: see `request.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ...errors import VigorError
from ..weights import VersionClock
from .clients import async_client, sync_client
from .request import RequestSettings, ScoringRequest, build_request
from .results import RewardCall, check_complete, report
from .run import TrainerRun

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = ("entropy_mean", "self_certainty")


class _RewardBase:
    """Options shared by both reward functions.

    `num_generations`: the trainer's; checks every group has that many samples. Without it the
    weight-sync callback supplies the trainer's, and on one process without either, consecutive
    samples of one prompt form a group. `hold_s`: how long the server holds a group's piece for
    the other processes' pieces (default: its `--group-hold-s`). `client_options`: keywords for
    the client built from a URL (`retry`, `timeout`, `timeout_margin_s`, `api_token`,
    `cooldown_s`, ...). `run`: the state shared with the weight-sync callback (`vigor_for_trl`
    makes one); `clock` alone shares just the version clock. `estimator`: e.g.
    `{"kind": "sketch", "k": 128, "seed": 0}` for the sketched norm (docs/estimator.md); default:
    the server's.
    """

    def __init__(
        self,
        *,
        tokenizer: Any = None,
        signals: Sequence[str] = DEFAULT_SIGNALS,
        shaping: str = "rank",
        num_generations: int | None = None,
        pin_weights: bool = True,
        wait_s: float = 120.0,
        hold_s: float | None = None,
        on_error: str = "raise",
        chat_template_kwargs: dict | None = None,
        clock: VersionClock | None = None,
        run: TrainerRun | None = None,
        name: str = "vigor",
        estimator: dict | None = None,
    ) -> None:
        if on_error not in ("raise", "none"):
            raise ValueError("on_error is 'raise' or 'none'")
        self.tokenizer = tokenizer
        self.signals = tuple(signals)
        self.shaping = shaping
        self.num_generations = num_generations
        self.pin_weights = pin_weights
        self.wait_s = wait_s
        self.hold_s = hold_s
        self.estimator = estimator
        self.on_error = on_error
        self.chat_template_kwargs = chat_template_kwargs or {}
        self.run = run or TrainerRun(clock=clock or VersionClock())
        self.clock = self.run.clock
        self.__name__ = name  # TRL names the reward's metrics after it
        self.calls: deque[RewardCall] = deque(maxlen=10_000)
        self._count = 0
        self._warned_unlinked = False

    def _start(
        self, prompts: list, completions: list, completion_ids: list | None, trainer_state: Any
    ) -> tuple[ScoringRequest, RewardCall]:
        settings = RequestSettings(
            tokenizer=self.tokenizer,
            chat_template_kwargs=self.chat_template_kwargs,
            num_generations=self.num_generations,
            shaping=self.shaping,
            signals=self.signals,
            pin_weights=self.pin_weights,
            wait_s=self.wait_s,
            hold_s=self.hold_s,
            name=self.__name__,
            estimator=self.estimator,
        )
        self._count += 1  # counted before anything can fail, so every process agrees
        request = build_request(
            settings, self.run, self._count, prompts, completions, completion_ids, trainer_state
        )
        call = RewardCall(
            step=request.step,
            required_version=request.options.get("min_weight_version"),
            weight_version=None,
            num_samples=len(prompts),
            num_groups=len(request.groups),
            seconds=0.0,
            number=self._count,
            rank=request.rank,
            held=request.held,
        )
        self.calls.append(call)
        return request, call

    def _needs_weights(self, request: ScoringRequest) -> bool:
        """Whether the callback must first bring the server to this step's weights."""
        if not self.pin_weights or request.step is None:
            return False
        if self.run.weights_for is None and not self._warned_unlinked:
            self._warned_unlinked = True
            log.warning(
                "VIGOR rewards pinned to weight version %d but no weight-sync callback shares "
                "this reward function's run: nothing here sends the policy's weights (make both "
                "with vigor_for_trl, or pass the same run=; pin_weights=False for a server whose "
                "weights stay fixed)",
                request.options["min_weight_version"],
            )
        return self.run.weights_for is not None

    def _finish(
        self,
        response: Any,
        request: ScoringRequest,
        n: int,
        call: RewardCall,
        log_metric,
        log_extra,
    ) -> list[float | None]:
        return report(response, request, n, call, self.signals, log_metric, log_extra)

    def _failed(self, exc: Exception, n: int, call: RewardCall, log_metric: Any) -> list[None]:
        call.error = f"{type(exc).__name__}: {exc}"
        if self.on_error == "raise":
            raise exc
        log.error("VIGOR reward call failed, returning None for %d samples: %s", n, call.error)
        if log_metric is not None:
            log_metric("vigor/failed_calls", 1.0)
        return [None] * n


class VigorRewardFunction(_RewardBase):
    """A synchronous TRL reward function scored by the service.

    `server`: a base URL, several (list or comma-separated: groups are spread over replicas), or
    a `VigorClient` / `VigorReplicas`. `tokenizer`: the policy's; with it prompts are sent as the
    exact ids GRPOTrainer generated from, without it as text / chat messages. `on_error="none"`
    turns a failed call into `None` rewards with the reason logged (TRL then leaves VIGOR out of
    those samples' rewards); the default raises. Other options: see `_RewardBase`.
    """

    def __init__(
        self,
        server: Any = "http://127.0.0.1:8000",
        *,
        client_options: dict | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.client = sync_client(server, **(client_options or {}))

    def __call__(
        self,
        prompts: list,
        completions: list,
        completion_ids: list | None = None,
        trainer_state: Any = None,
        log_metric: Any = None,
        log_extra: Any = None,
        **dataset_columns: Any,
    ) -> list[float | None]:
        t0 = time.perf_counter()
        request, call = self._start(prompts, completions, completion_ids, trainer_state)
        try:
            if self._needs_weights(request):
                self.run.weights_for(request.step)
        except Exception as exc:  # a failed send stops the run whatever on_error says
            call.error = f"weight sync: {type(exc).__name__}: {exc}"
            raise
        try:
            response = self.client.score(request.groups, **request.options)
            check_complete(request, response, self.hold_s)
        except VigorError as exc:
            return self._failed(exc, len(prompts), call, log_metric)
        finally:
            call.seconds = time.perf_counter() - t0
        return self._finish(response, request, len(prompts), call, log_metric, log_extra)


class AsyncVigorRewardFunction(_RewardBase):
    """The same as `VigorRewardFunction`, awaited by TRL concurrently with other async rewards."""

    def __init__(
        self,
        server: Any = "http://127.0.0.1:8000",
        *,
        client_options: dict | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.client = async_client(server, **(client_options or {}))

    async def __call__(
        self,
        prompts: list,
        completions: list,
        completion_ids: list | None = None,
        trainer_state: Any = None,
        log_metric: Any = None,
        log_extra: Any = None,
        **dataset_columns: Any,
    ) -> list[float | None]:
        t0 = time.perf_counter()
        request, call = self._start(prompts, completions, completion_ids, trainer_state)
        try:
            if self._needs_weights(request):  # a blocking send: off the loop other rewards share
                await asyncio.to_thread(self.run.weights_for, request.step)
        except Exception as exc:  # a failed send stops the run whatever on_error says
            call.error = f"weight sync: {type(exc).__name__}: {exc}"
            raise
        try:
            response = await self.client.score(request.groups, **request.options)
            check_complete(request, response, self.hold_s)
        except VigorError as exc:
            return self._failed(exc, len(prompts), call, log_metric)
        finally:
            call.seconds = time.perf_counter() - t0
        return self._finish(response, request, len(prompts), call, log_metric, log_extra)


__all__ = ["AsyncVigorRewardFunction", "RewardCall", "VigorRewardFunction"]

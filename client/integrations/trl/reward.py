"""TRL reward functions scored by the service, sync and async.

TRL calls a reward function with `prompts, completions, completion_ids, trainer_state,
log_extra, log_metric` and the dataset's other columns, and one call holds this process's slice
of the batch with each prompt's `num_generations` completions next to each other.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import VigorError
from ...schema import Group, RewardsResponse
from ..grouping import contiguous_runs, fixed_runs, freeze, scatter
from ..weights import VersionClock
from .clients import async_client, sync_client
from .prompts import completion_text, prompt_form

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = ("entropy_mean", "self_certainty")


@dataclass
class RewardCall:
    """What one reward call saw, kept for inspection (tests, dashboards)."""

    step: int | None
    required_version: int | None
    weight_version: int | None
    num_samples: int
    num_groups: int
    seconds: float
    rewards: list[float | None] = field(repr=False, default_factory=list)
    signals: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class _RewardBase:
    def __init__(
        self,
        *,
        tokenizer: Any = None,
        signals: Sequence[str] = DEFAULT_SIGNALS,
        shaping: str = "rank",
        num_generations: int | None = None,
        pin_weights: bool = True,
        wait_s: float = 120.0,
        on_error: str = "raise",
        chat_template_kwargs: dict | None = None,
        clock: VersionClock | None = None,
        name: str = "vigor",
    ) -> None:
        if on_error not in ("raise", "none"):
            raise ValueError("on_error is 'raise' or 'none'")
        self.tokenizer = tokenizer
        self.signals = tuple(signals)
        self.shaping = shaping
        self.num_generations = num_generations
        self.pin_weights = pin_weights
        self.wait_s = wait_s
        self.on_error = on_error
        self.chat_template_kwargs = chat_template_kwargs or {}
        self.clock = clock or VersionClock()
        self.__name__ = name  # TRL names the reward's metrics after it
        self.calls: deque[RewardCall] = deque(maxlen=10_000)

    # --- request -----------------------------------------------------------------------
    def _build(
        self, prompts: list, completions: list, completion_ids: list | None, trainer_state: Any
    ) -> tuple[list[Group], list[list[int]], dict[str, Any]]:
        n = len(prompts)
        if len(completions) != n or (completion_ids is not None and len(completion_ids) != n):
            raise ValueError("prompts, completions and completion_ids differ in length")
        keys = [freeze(p) for p in prompts]
        runs = (
            fixed_runs(keys, self.num_generations)
            if self.num_generations
            else contiguous_runs(keys)
        )
        groups = []
        for run in runs:
            form = prompt_form(prompts[run[0]], self.tokenizer, self.chat_template_kwargs)
            if completion_ids is not None:  # the generated ids, verbatim: no retokenization
                form["completion_ids"] = [[int(t) for t in completion_ids[i]] for i in run]
            else:
                form["completions"] = [completion_text(completions[i]) for i in run]
            groups.append(Group(**form))
        options: dict[str, Any] = {"shaping": self.shaping, "signals": list(self.signals)}
        step = getattr(trainer_state, "global_step", None)
        if self.pin_weights and step is not None:
            options["min_weight_version"] = self.clock.version_for(step)
            options["wait_s"] = self.wait_s
        return groups, runs, options

    # --- response ----------------------------------------------------------------------
    def _finish(
        self,
        response: RewardsResponse,
        runs: list[list[int]],
        n: int,
        call: RewardCall,
        log_metric: Any,
        log_extra: Any,
    ) -> list[float | None]:
        rewards = scatter(runs, [g.rewards for g in response.groups], n)
        scores = scatter(runs, [g.scores for g in response.groups], n)
        reasons = scatter(runs, [g.reasons for g in response.groups], n)
        for i, r in enumerate(rewards):
            if r is None:
                log.warning("no VIGOR reward for sample %d: %s", i, reasons[i] or "no score")
        call.weight_version = response.weight_version
        call.rewards = rewards
        metrics = {
            "vigor/weight_version": float(response.weight_version),
            "vigor/unscored_frac": sum(s is None for s in scores) / max(n, 1),
        }
        valid = [s for s in scores if s is not None]
        if valid:
            metrics["vigor/score_mean"] = sum(valid) / len(valid)
        norms = [x for g in response.groups for x in g.grad_norms if x is not None]
        if norms:
            metrics["vigor/grad_norm_mean"] = sum(norms) / len(norms)
        for name in self.signals:
            values = [
                v for g in response.groups for v in (g.signals or {}).get(name, []) if v is not None
            ]
            if values:
                metrics[f"vigor/{name}"] = sum(values) / len(values)
        if call.required_version is not None:
            metrics["vigor/version_lag"] = float(response.weight_version - call.required_version)
            if response.weight_version != call.required_version:
                log.warning(
                    "scored at weight version %d, the completions came from version %d",
                    response.weight_version,
                    call.required_version,
                )
        call.signals = {k: v for k, v in metrics.items() if not k.startswith("vigor/weight")}
        if log_metric is not None:
            for k, v in metrics.items():
                if math.isfinite(v):
                    log_metric(k, v)
        if log_extra is not None:
            log_extra("vigor_score", scores)
        return rewards

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
    turns a failed call into `None` rewards (TRL then gives those samples zero advantage) with the
    reason logged; the default raises. Other options: see `_RewardBase`.
    """

    def __init__(self, server: Any = "http://127.0.0.1:8000", **options: Any) -> None:
        super().__init__(**options)
        self.client = sync_client(server)

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
        groups, runs, options = self._build(prompts, completions, completion_ids, trainer_state)
        call = RewardCall(
            step=getattr(trainer_state, "global_step", None),
            required_version=options.get("min_weight_version"),
            weight_version=None,
            num_samples=len(prompts),
            num_groups=len(groups),
            seconds=0.0,
        )
        self.calls.append(call)
        try:
            response = self.client.score(groups, **options)
        except VigorError as exc:
            return self._failed(exc, len(prompts), call, log_metric)
        finally:
            call.seconds = time.perf_counter() - t0
        return self._finish(response, runs, len(prompts), call, log_metric, log_extra)


class AsyncVigorRewardFunction(_RewardBase):
    """The same as `VigorRewardFunction`, awaited by TRL concurrently with other async rewards."""

    def __init__(self, server: Any = "http://127.0.0.1:8000", **options: Any) -> None:
        super().__init__(**options)
        self.client = async_client(server)

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
        groups, runs, options = self._build(prompts, completions, completion_ids, trainer_state)
        call = RewardCall(
            step=getattr(trainer_state, "global_step", None),
            required_version=options.get("min_weight_version"),
            weight_version=None,
            num_samples=len(prompts),
            num_groups=len(groups),
            seconds=0.0,
        )
        self.calls.append(call)
        try:
            response = await self.client.score(groups, **options)
        except VigorError as exc:
            return self._failed(exc, len(prompts), call, log_metric)
        finally:
            call.seconds = time.perf_counter() - t0
        return self._finish(response, runs, len(prompts), call, log_metric, log_extra)

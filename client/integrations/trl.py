"""TRL GRPOTrainer integration: a reward function and a weight-sync callback.

    from vigor_client.integrations.trl import vigor_for_trl

    reward_fn, sync = vigor_for_trl("http://127.0.0.1:8000", tokenizer=tokenizer)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], callbacks=[sync], ...)

The callback pushes the policy's trainable weights (the LoRA adapter alone for peft models) after
every optimizer step with weight version = global step; the reward function asks the server for
`min_weight_version = global step`, so each completion is scored on the weights that sampled it.

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

from ..client import AsyncVigorClient, VigorClient
from ..errors import VigorError
from ..replicas import AsyncVigorReplicas, VigorReplicas, aconnect, connect
from ..schema import Group, RewardsResponse
from .grouping import contiguous_runs, fixed_runs, freeze, scatter
from .weights import VersionClock, is_peft, sync_weights, unwrap

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


def _messages(prompt: list[dict]) -> list[dict[str, str]]:
    out = []
    for k, m in enumerate(prompt):
        if not isinstance(m.get("content"), str):
            raise ValueError(
                f"message {k} has non-text content; pass tokenizer= so prompts go as token ids"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(
        m.get("content") or "" for m in completion
    )  # conversational: [{"role", "content"}]


def _sync_client(server: Any) -> VigorClient | VigorReplicas:
    return server if isinstance(server, VigorClient | VigorReplicas) else connect(server)


def _async_client(server: Any) -> AsyncVigorClient | AsyncVigorReplicas:
    if isinstance(server, AsyncVigorClient | AsyncVigorReplicas):
        return server
    if isinstance(server, VigorReplicas):
        return aconnect(server.urls)
    if isinstance(server, VigorClient):
        return aconnect(server.base_url)
    return aconnect(server)


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
    def _prompt_form(self, prompt: Any) -> dict[str, Any]:
        conversational = isinstance(prompt, list)
        if self.tokenizer is None:
            return {"messages": _messages(prompt)} if conversational else {"prompt": prompt}
        if conversational:  # exactly what GRPOTrainer._tokenize_prompts feeds generate()
            ids = self.tokenizer.apply_chat_template(
                prompt,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                **self.chat_template_kwargs,
            )["input_ids"]
        else:
            ids = self.tokenizer(text=prompt)["input_ids"]
        return {"prompt_ids": [int(t) for t in ids]}

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
            form = self._prompt_form(prompts[run[0]])
            if completion_ids is not None:  # the generated ids, verbatim: no retokenization
                form["completion_ids"] = [[int(t) for t in completion_ids[i]] for i in run]
            else:
                form["completions"] = [_completion_text(completions[i]) for i in run]
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
        self.client = _sync_client(server)

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
        self.client = _async_client(server)

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


def _callback_base() -> type:
    from transformers import TrainerCallback  # TRL users have transformers

    return TrainerCallback


class VigorWeightSyncCallback(_callback_base()):  # type: ignore[misc]
    """Sends the policy's weights to the service after every optimizer step.

    The version is the trainer's global step (plus the shared clock's offset). Full models send
    their trainable parameters; peft models only the LoRA adapter. With `checkpoints_dir` the
    weights are saved there (`step-<version>/`) and the server reloads them from its disk (it must
    see that path). Only the main process sends; every send blocks until the server (every
    replica) has swapped, so the next generation is scored on the new weights.

    At the start of training, the server must hold the policy's weights as of the current step:
    - server version == global step: assumed to be the policy's (start the server on the same
      checkpoint as the trainer); nothing is sent;
    - server version < global step (a resumed run): the weights are sent as that step's version;
    - a peft policy while no adapter is served, or `push_on_train_begin=True`: the weights are sent
      as version max(server + 1, step) and the clock's offset makes later versions follow on;
    - server version > global step otherwise: refused (`VigorError`), since the served weights
      would not be the ones that sample the first completions.
    """

    def __init__(
        self,
        server: Any = "http://127.0.0.1:8000",
        *,
        checkpoints_dir: str | None = None,
        keep_checkpoints: int = 2,
        clock: VersionClock | None = None,
        push_on_train_begin: bool = False,
        push_kwargs: dict | None = None,
    ) -> None:
        self.client = _sync_client(server)
        self.checkpoints_dir = checkpoints_dir
        self.keep_checkpoints = keep_checkpoints
        self.clock = clock or VersionClock()
        self.push_on_train_begin = push_on_train_begin
        self.push_kwargs = push_kwargs or {}
        self.synced: list[tuple[int, int, float]] = []  # (step, version, seconds)

    def _send(self, model: Any, step: int, version: int) -> None:
        t0 = time.perf_counter()
        sync_weights(
            self.client,
            model,
            version,
            checkpoints_dir=self.checkpoints_dir,
            keep=self.keep_checkpoints,
            **self.push_kwargs,
        )
        seconds = time.perf_counter() - t0
        self.synced.append((step, version, seconds))
        log.info("weights v%d (step %d) synced in %.2f s", version, step, seconds)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if model is None or not getattr(state, "is_world_process_zero", True):
            return
        step = state.global_step
        info = self.client.model_info()
        served = info.weight_version
        needs_adapter = is_peft(unwrap(model)) and info.adapter is None
        if self.push_on_train_begin or needs_adapter:
            version = max(served + 1, step)
            self.clock.offset = version - step
            self._send(model, step, version)
        elif served < step:
            self.clock.offset = 0
            self._send(model, step, step)
        elif served > self.clock.version_for(step):
            raise VigorError(
                f"the server holds weight version {served}, newer than this run's step {step}: "
                "restart it on the policy's checkpoint, or pass push_on_train_begin=True"
            )

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if model is None or not getattr(state, "is_world_process_zero", True):
            return
        self._send(model, state.global_step, self.clock.version_for(state.global_step))


def vigor_for_trl(
    server: Any = "http://127.0.0.1:8000",
    *,
    tokenizer: Any = None,
    checkpoints_dir: str | None = None,
    push_on_train_begin: bool = False,
    asynchronous: bool = False,
    **reward_options: Any,
) -> tuple[VigorRewardFunction | AsyncVigorRewardFunction, VigorWeightSyncCallback]:
    """The reward function and the weight-sync callback, sharing one version clock.

    `server`: a URL, several (list or comma-separated), or a client. `reward_options` go to the
    reward function (signals, shaping, num_generations, on_error, wait_s, ...).
    """
    clock = VersionClock()
    sync = VigorWeightSyncCallback(
        server,
        checkpoints_dir=checkpoints_dir,
        clock=clock,
        push_on_train_begin=push_on_train_begin,
    )
    cls = AsyncVigorRewardFunction if asynchronous else VigorRewardFunction
    reward = cls(server, tokenizer=tokenizer, clock=clock, **reward_options)
    return reward, sync


__all__ = [
    "AsyncVigorRewardFunction",
    "RewardCall",
    "VersionClock",
    "VigorRewardFunction",
    "VigorWeightSyncCallback",
    "vigor_for_trl",
]

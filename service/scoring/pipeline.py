"""The one path from a validated request to its response, callable without HTTP.

limits → tokenization (in a thread) → wait for the weight version (and for a checkpoint the
watcher sees on its way) → the scheduler (one engine call on the worker, at one version) →
response. Both scoring routes, the group assembler and replicas call it with plain objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from vigor_client.schema import (
    ExactEstimator,
    GroupResult,
    OpenRLHFRequest,
    OpenRLHFResponse,
    RewardSpec,
    RewardsRequest,
    RewardsResponse,
    SketchEstimator,
)
from vigor_client.variants import needed_signals

from ..engine.types import TokenSequence
from ..errors import InputProblem, InvalidInputError
from ..serving import ModelFacts, ServingSlot
from . import estimators
from .assembler import Gone, GroupAssembler, HoldBounds
from .held import Caller, SampleAnswer
from .inputs import Tokenization
from .limits import Limits
from .openrlhf import plan_request, relocate, to_response
from .response import build_response, signal_reasons
from .scheduler import EngineQueue
from .variants import RewardVariants

OnScored = Callable[[RewardsResponse], None]
# Waits until no newer weights are on their way (the checkpoint watcher), before each engine call.
BeforeScoring = Callable[[], Awaitable[None]]


def tokenization_for(served: ModelFacts) -> Tokenization:
    return Tokenization(served.tokenizer, served.vocab_size, served.max_length)


class ScoringPipeline:
    def __init__(
        self,
        slot: ServingSlot,
        scheduler: EngineQueue,
        limits: Limits,
        on_scored: OnScored | None = None,
        *,
        before_scoring: BeforeScoring | None = None,
        hold: HoldBounds | None = None,
        variants: RewardVariants | None = None,
        estimator: ExactEstimator | SketchEstimator = estimators.EXACT,
    ) -> None:
        self.slot = slot
        self.variants = variants or RewardVariants()
        self.estimator = estimator  # what a request that names none is scored by
        self.scheduler = scheduler
        self._limits = limits
        self._on_scored = on_scored
        self.before_scoring = before_scoring
        self.assembler = GroupAssembler(self.run, hold or HoldBounds())

    @property
    def limits(self) -> Limits:
        """The configured limits, completed by the served model: its context caps the sequence
        length, and its defaults (on CPU: from memory, see serving/token_budget.py) fill in."""
        served = self.slot.served
        if served is None:
            return self._limits
        return dataclasses.replace(
            self._limits,
            max_sequence_tokens=served.max_length,
            max_request_tokens=self._limits.max_request_tokens or served.max_request_tokens,
        )

    def with_variant(self, request: RewardsRequest) -> RewardsRequest:
        """The request with the variant and estimator it is scored by spelled out (a held group
        keeps them)."""
        request = estimators.resolved(request, self.estimator)
        if isinstance(request.reward_spec, RewardSpec) and request.focal is None:
            return request
        spec = self.variants.resolve(request)
        return request.model_copy(update={"reward_spec": spec, "focal": None})

    async def prepare(self, request: RewardsRequest) -> list[list[TokenSequence]]:
        """Validate and tokenize, naming every problem (422) before anything waits."""
        served = self.slot.require_served()
        self.variants.resolve(request)
        estimators.check_engine(request.estimator or self.estimator, served.engine_name)
        self.limits.check(request)
        # Tokenizing a large request takes a while: keep it off the event loop.
        groups = await asyncio.to_thread(tokenization_for(served).sequences, request.groups)
        self.limits.check_tokens(groups)
        return groups

    async def run(
        self, request: RewardsRequest, groups: list[list[TokenSequence]], gone: Gone | None = None
    ) -> RewardsResponse:
        """Score prepared groups in one engine call, at the version the request needs.

        `gone` tells whether the caller left: then nothing is computed for it.
        """
        served = self.slot.require_served()
        request = self.with_variant(request)
        if request.min_weight_version is not None:
            await self.slot.wait_for_version(request.min_weight_version, request.wait_s)
        if self.before_scoring is not None:
            await self.before_scoring()
        self.slot.require_accepting()
        needed = needed_signals(request.reward_spec)  # type: ignore[arg-type]  (resolved above)
        outcome = await self.scheduler.submit(
            [seq for group in groups for seq in group],
            signals=tuple(dict.fromkeys([*request.signals, *needed])),
            temperature=request.temperature,
            estimator=estimators.for_engine(request.estimator),
            deadline_s=request.deadline_s,
            gone=gone,
        )
        response = build_response(served.name, outcome.version, request, groups, outcome.scores)
        if self._on_scored is not None:
            self._on_scored(response)
        return response

    async def score(
        self, request: RewardsRequest, gone: Gone | None = None, caller: Caller | None = None
    ) -> RewardsResponse:
        """Whole groups are scored at once; groups with `group_size` wait for their samples.

        `gone` tells whether the caller has left (held samples then await a retry); `caller`
        is whose namespace held group keys live in.
        """
        groups = await self.prepare(request)
        request = self.with_variant(request)
        held = [g.group_size is not None for g in request.groups]
        if not any(held):
            return await self.run(request, groups, gone)
        if not all(held):
            raise InvalidInputError(
                [
                    InputProblem(
                        f"groups[{held.index(False)}].group_size",
                        "missing: a request's groups are either all held (group_size set) or "
                        "all whole",
                    )
                ]
            )
        self.slot.require_accepting()
        answers = await self.assembler.submit(request, groups, gone, caller)
        return self._held_response(request, groups, answers)

    def _held_response(
        self,
        request: RewardsRequest,
        groups: list[list[TokenSequence]],
        answers: list[list[SampleAnswer]],
    ) -> RewardsResponse:
        """This request's own rows; its version is the lowest any of its samples was scored at."""
        versions = [a.version for row in answers for a in row if a.version is not None]
        out = []
        for group, row, seqs in zip(request.groups, answers, groups, strict=True):
            signals = None
            if request.signals:
                signals = {n: [a.signals.get(n) for a in row] for n in request.signals}
            num_tokens, reasons = [seq.num_tokens for seq in seqs], [a.reason for a in row]
            out.append(
                GroupResult(
                    id=group.id,
                    rewards=[a.reward for a in row],
                    scores=[a.score for a in row],
                    grad_norms=[a.grad_norm for a in row],
                    num_tokens=num_tokens,
                    reasons=reasons,
                    signals=signals,
                    signal_reasons=signal_reasons(signals, num_tokens, reasons),
                )
            )
        return RewardsResponse(
            model=self.slot.require_served().name,
            weight_version=min(versions) if versions else self.slot.version,
            groups=out,
            reward_spec=request.reward_spec,  # type: ignore[arg-type]  (resolved in score)
            estimator=request.estimator,
        )

    async def score_openrlhf(
        self,
        body: OpenRLHFRequest,
        signals: list[str],
        group_size: int | None = None,
        hold_s: float | None = None,
        gone: Gone | None = None,
        caller: Caller | None = None,
    ) -> OpenRLHFResponse:
        """OpenRLHF's /get_reward: split, regroup by prompt, score, scatter back.

        With `group_size`, every prompt's samples are held until the group is complete (OpenRLHF
        ≥ 0.9.1 posts one sample per call); without it the batch must hold whole groups.
        """
        served = self.slot.require_served()
        ceiling = self.assembler.bounds.max_hold_s
        if hold_s is not None and hold_s > ceiling:
            raise InvalidInputError(
                [InputProblem("hold_s", f"{hold_s:g} exceeds max_group_hold_s={ceiling:g}")]
            )
        if not body.query:
            return OpenRLHFResponse(
                rewards=[], scores=[], extra_logs={}, model=served.name,
                weight_version=self.slot.version,
            )  # fmt: skip
        plan = await asyncio.to_thread(plan_request, body, served.tokenizer)
        if group_size is None:
            lone = [m[0] for m in plan.members if len(m) == 1]
            if lone:
                raise InvalidInputError(
                    [
                        InputProblem(
                            f"query[{lone[0]}]",
                            "is the only sample of its prompt in this request, and a rank "
                            "reward needs the whole group. OpenRLHF >= 0.9.1 posts one sample "
                            "per call: add ?group_size=N (its --rollout.n_samples_per_prompt) "
                            "to the reward URL",
                        )
                    ]
                )
            groups = plan.groups
        else:
            groups = [
                g.model_copy(update={"id": prompt, "group_size": group_size, "hold_s": hold_s})
                for g, prompt in zip(plan.groups, plan.prompts, strict=True)
            ]
        request = RewardsRequest(groups=groups, signals=signals)
        try:
            result = await self.score(request, gone, caller)
        except InvalidInputError as exc:
            raise relocate(exc, plan) from None
        return to_response(result, plan)

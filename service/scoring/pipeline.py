"""The one path from a validated request to its response, callable without HTTP.

limits → tokenization (in a thread) → wait for the weight version → the scheduler (one engine
call on the worker, at one version) → response. Both scoring routes, the group assembler and
replicas call it with plain objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from vigor_client.schema import OpenRLHFRequest, OpenRLHFResponse, RewardsRequest, RewardsResponse

from ..engine.types import TokenSequence
from ..errors import InvalidInputError
from ..serving import ServedModel, ServingSlot
from .inputs import Tokenization
from .limits import Limits
from .openrlhf import plan_request, relocate, to_response
from .response import build_response
from .scheduler import Scheduler

OnScored = Callable[[RewardsResponse], None]


def tokenization_for(served: ServedModel) -> Tokenization:
    return Tokenization(served.tokenizer, served.vocab_size, served.max_length)


class ScoringPipeline:
    def __init__(
        self,
        slot: ServingSlot,
        scheduler: Scheduler,
        limits: Limits,
        on_scored: OnScored | None = None,
    ) -> None:
        self.slot = slot
        self.scheduler = scheduler
        self._limits = limits
        self._on_scored = on_scored

    @property
    def limits(self) -> Limits:
        """The configured limits, the sequence cap lowered to the served model's context."""
        served = self.slot.served
        if served is None:
            return self._limits
        return dataclasses.replace(self._limits, max_sequence_tokens=served.max_length)

    async def prepare(self, request: RewardsRequest) -> list[list[TokenSequence]]:
        """Validate and tokenize, naming every problem (422) before anything waits."""
        served = self.slot.require_served()
        self.limits.check(request)
        # Tokenizing a large request takes a while: keep it off the event loop.
        return await asyncio.to_thread(tokenization_for(served).sequences, request.groups)

    async def run(
        self, request: RewardsRequest, groups: list[list[TokenSequence]]
    ) -> RewardsResponse:
        """Score prepared groups in one engine call, at the version the request needs."""
        served = self.slot.require_served()
        if request.min_weight_version is not None:
            await self.slot.wait_for_version(request.min_weight_version, request.wait_s)
        self.slot.require_accepting()
        outcome = await self.scheduler.submit(
            [seq for group in groups for seq in group],
            signals=tuple(request.signals),
            temperature=request.temperature,
            deadline_s=request.deadline_s,
        )
        response = build_response(served.name, outcome.version, request, groups, outcome.scores)
        if self._on_scored is not None:
            self._on_scored(response)
        return response

    async def score(self, request: RewardsRequest) -> RewardsResponse:
        return await self.run(request, await self.prepare(request))

    async def score_openrlhf(self, body: OpenRLHFRequest, signals: list[str]) -> OpenRLHFResponse:
        """OpenRLHF's /get_reward batch: split, regroup by prompt, score, scatter back."""
        served = self.slot.require_served()
        if not body.query:
            return OpenRLHFResponse(
                rewards=[], scores=[], extra_logs={}, model=served.name,
                weight_version=self.slot.version,
            )  # fmt: skip
        plan = await asyncio.to_thread(plan_request, body, served.tokenizer)
        request = RewardsRequest(groups=plan.groups, signals=signals)
        try:
            groups = await self.prepare(request)
        except InvalidInputError as exc:
            raise relocate(exc, plan) from None
        return to_response(await self.run(request, groups), plan)

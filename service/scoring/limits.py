"""Request size limits: configurable, reported by GET /v1/model, each violation named."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vigor_client.schema import RewardsRequest

from ..engine.types import TokenSequence
from ..errors import LimitExceededError


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    max_groups: int
    max_completions_per_group: int
    max_sequence_tokens: int  # capped at the model's context length once one is served
    max_request_tokens: int = 65536  # 0 in settings: the served model's default

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def check(self, request: RewardsRequest) -> None:
        if len(request.groups) > self.max_groups:
            raise LimitExceededError(
                f"groups: {len(request.groups)} groups exceed max_groups={self.max_groups}; "
                "split them over several requests"
            )
        for i, group in enumerate(request.groups):
            n = len(group.completion_list)
            if n > self.max_completions_per_group:
                raise LimitExceededError(
                    f"groups[{i}]: {n} completions exceed max_completions_per_group="
                    f"{self.max_completions_per_group}"
                )
            size = group.group_size
            if size is not None and size > self.max_completions_per_group:
                # Its samples would be held until they expire: the whole group is never scored.
                raise LimitExceededError(
                    f"groups[{i}].group_size: {size} exceeds max_completions_per_group="
                    f"{self.max_completions_per_group}, so the group could never be scored"
                )

    def check_tokens(self, groups: list[list[TokenSequence]]) -> None:
        """The request's total tokens: a bound on the compute and memory one request can take."""
        total = sum(seq.length for group in groups for seq in group)
        if total > self.max_request_tokens:
            raise LimitExceededError(
                f"the request holds {total} tokens (prompts + completions over all sequences), "
                f"over max_request_tokens={self.max_request_tokens}; split it over several "
                "requests"
            )

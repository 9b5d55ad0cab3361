"""Which reward variant a request gets: its own (`focal`, or `reward_spec` by name or as JSON),
else the server's default (--focal-*, or --reward-spec). The arithmetic is the client package's
(`vigor_client.variants`), so a spec `vigor-eval` evaluated is computed here the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from vigor_client.schema import PLAIN_SPEC_NAME, Focal, RewardSpec, RewardsRequest
from vigor_client.variants import PLAIN, needed_signals

from ..errors import InputProblem, InvalidInputError


@dataclass(frozen=True)
class RewardVariants:
    """The default variant and the names a request may give."""

    default: RewardSpec = field(default_factory=lambda: PLAIN)
    named: dict[str, RewardSpec] = field(default_factory=lambda: {PLAIN_SPEC_NAME: PLAIN})

    def resolve(self, request: RewardsRequest) -> RewardSpec:
        """The spec `request` is scored with; 422 naming the field when it cannot be."""
        if request.focal is not None:
            spec = RewardSpec(name="focal" if request.focal.enabled else PLAIN_SPEC_NAME)
            spec = spec.model_copy(update={"focal": request.focal})
        elif isinstance(request.reward_spec, str):
            spec = self.named.get(request.reward_spec)
            if spec is None:
                raise InvalidInputError(
                    [
                        InputProblem(
                            "reward_spec",
                            f"unknown variant {request.reward_spec!r}; this server knows "
                            f"{', '.join(sorted(self.named))} (or send the spec as JSON)",
                        )
                    ]
                )
        else:
            spec = request.reward_spec or self.default
        if needed_signals(spec) and request.temperature != 1.0:
            raise InvalidInputError(
                [
                    InputProblem(
                        "temperature",
                        f"is {request.temperature:g}, but the reward variant {spec.name!r} reads "
                        "entropy/probability signals at temperature 1 (as the reference does) "
                        "from the same pass; send temperature 1, or score the signals and the "
                        "variant in separate requests",
                    )
                ]
            )
        return spec


def read_spec(text_or_path: str, where: str) -> RewardSpec:
    """A spec from JSON text or a JSON file; ValueError naming `where` and the problem."""
    raw = text_or_path.strip()
    if not raw.startswith("{"):
        try:
            raw = Path(raw).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where}: cannot read {text_or_path!r}: {exc}") from None
    try:
        return RewardSpec.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg}, line {exc.lineno})") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where}: not a reward spec: {problems}") from None


def variants_from(
    focal: Focal | None, reward_spec: str | None, where: str = "reward_spec"
) -> RewardVariants:
    """The server's variants from its settings: --reward-spec, or --focal-*, or plain VIGOR."""
    named = {PLAIN_SPEC_NAME: PLAIN}
    if reward_spec is not None:
        if focal is not None:
            raise ValueError(f"{where}: give --reward-spec or --focal, not both")
        spec = read_spec(reward_spec, where)
        if spec.name == PLAIN_SPEC_NAME:
            raise ValueError(f"{where}: the name {PLAIN_SPEC_NAME!r} is the plain score's")
        named[spec.name] = spec
        return RewardVariants(spec, named)
    if focal is not None:
        spec = RewardSpec(name="focal", focal=focal)
        named["focal"] = spec
        return RewardVariants(spec, named)
    return RewardVariants(PLAIN, named)

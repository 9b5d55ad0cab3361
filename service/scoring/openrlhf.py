"""OpenRLHF's remote reward protocol on top of the ordinary scoring path.

OpenRLHF sends `query[i]` = decode(prompt_ids + response_ids, skip_special_tokens=False) and the
prompt text `prompts[i]` it tokenized (with add_special_tokens=False) to generate. So:

- the response is what follows the prompt in the query; special-token text in it (`<|im_end|>`)
  is tokenized back to the special ids, because HF tokenizers parse added-token text;
- the prompt is tokenized exactly as OpenRLHF did, with add_special_tokens=False;
- samples with the same prompt text form one group and are ranked together, wherever they sit
  in the batch (OpenRLHF places a prompt's samples together, but shards may interleave them).

Decode→encode of the response can still differ from the generated ids for some tokenizers: the
protocol carries text, not ids. Use the TRL integration or `/v1/rewards` with ids to avoid it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from vigor_client.schema import Group, OpenRLHFRequest, OpenRLHFResponse, RewardsResponse
from vigor_client.wire import stand_in_floor

from ..errors import GroupIncompleteError, InputProblem, InvalidInputError


@dataclass(frozen=True)
class OpenRLHFPlan:
    """The request regrouped: `members[g]` lists the query indices of group g, in order."""

    groups: list[Group]
    members: list[list[int]]
    size: int
    prompts: list[str]  # group g's prompt text: the group key when samples are held


def strip_padding(text: str, pad: str | None, eos: str | None) -> str:
    """Drop pad-token text around a query (older OpenRLHF decodes padded rows).

    When pad and eos are the same token, one trailing occurrence is the real end of sequence.
    """
    if not pad:
        return text
    core = text
    while core.startswith(pad):
        core = core[len(pad) :]
    stripped_tail = False
    while core.endswith(pad):
        core = core[: -len(pad)]
        stripped_tail = True
    if stripped_tail and pad == eos:
        core += eos
    return core


def split_response(query: str, prompt: str, tokenizer: Any) -> str | None:
    """The response text after `prompt` in `query`; None when the query does not start with it."""
    unpadded = strip_padding(
        query, getattr(tokenizer, "pad_token", None), getattr(tokenizer, "eos_token", None)
    )
    # The decoded prompt can differ from the text OpenRLHF was given (tokenizer normalization).
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=False)
    for head in (prompt, decoded):
        for candidate in (query, unpadded):
            if head and candidate.startswith(head):
                return candidate[len(head) :]
    return None


def plan_request(body: OpenRLHFRequest, tokenizer: Any) -> OpenRLHFPlan:
    """Split every query, tokenize as OpenRLHF did, and group by identical prompt."""
    if tokenizer is None:
        raise InvalidInputError(
            [InputProblem("query", "this model has no tokenizer; /get_reward needs one")]
        )
    problems: list[InputProblem] = []
    by_prompt: dict[str, int] = {}
    members: list[list[int]] = []
    prompt_ids: list[list[int]] = []
    completion_ids: list[list[list[int]]] = []
    for i, (query, prompt) in enumerate(zip(body.query, body.prompts, strict=True)):
        response = split_response(query, prompt, tokenizer)
        if response is None:
            problems.append(
                InputProblem(
                    f"query[{i}]",
                    f"does not start with prompts[{i}] (query begins {query[:60]!r}, "
                    f"prompt begins {prompt[:60]!r})",
                )
            )
            continue
        g = by_prompt.get(prompt)
        if g is None:
            g = by_prompt[prompt] = len(members)
            members.append([])
            prompt_ids.append(list(tokenizer(prompt, add_special_tokens=False)["input_ids"]))
            completion_ids.append([])
        members[g].append(i)
        completion_ids[g].append(list(tokenizer(response, add_special_tokens=False)["input_ids"]))
    if problems:
        raise InvalidInputError(problems)
    groups = [
        Group(id=g, prompt_ids=p, completion_ids=c)
        for g, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True))
    ]
    return OpenRLHFPlan(
        groups=groups, members=members, size=len(body.query), prompts=list(by_prompt)
    )


_GROUP_LOC = re.compile(r"^groups\[(\d+)\]\.(prompt_ids|completion_ids)(?:\[(\d+)\])?")


def relocate(error: InvalidInputError, plan: OpenRLHFPlan) -> InvalidInputError:
    """Rename `groups[g].completion_ids[j]` locations to the `query[i]` the caller sent."""
    out = []
    for p in error.problems:
        m = _GROUP_LOC.match(p.loc)
        if m is None:
            out.append(p)
            continue
        g, field, j = int(m.group(1)), m.group(2), m.group(3)
        if field == "completion_ids" and j is not None:
            loc = f"query[{plan.members[g][int(j)]}] (response)"
        else:
            loc = f"prompts[{plan.members[g][0]}]"
        out.append(InputProblem(loc, p.message))
    return InvalidInputError(out)


def _log_scores(scores: list[float | None]) -> list[float]:
    """Scores for logging: a missing score becomes the reference's `min − 1e-3` (or −20)."""
    floor = stand_in_floor(scores)
    return [s if s is not None else floor for s in scores]


def to_response(result: RewardsResponse, plan: OpenRLHFPlan) -> OpenRLHFResponse:
    """Scatter group results back to query order; the raw VIGOR numbers go to `extra_logs`.

    `scores` are the rank rewards mapped to [0, 1] ((r + 1) / 2, group mean 0.5): OpenRLHF's
    dynamic filtering keeps a prompt when `min < mean(scores) < max` (default 0, 1), which then
    keeps every complete group — VIGOR has no notion of a solved or a hopeless prompt.
    """
    n = plan.size
    rewards = [math.nan] * n
    logs: dict[str, list[float]] = {
        "vigor_score": [0.0] * n,
        "vigor_grad_norm": [0.0] * n,
        "vigor_num_tokens": [0.0] * n,
        "vigor_unscored": [0.0] * n,
        "vigor_weight_version": [float(result.weight_version)] * n,
    }
    for group, idx in zip(result.groups, plan.members, strict=True):
        log_scores = _log_scores(group.scores)
        for j, i in enumerate(idx):
            reward = group.rewards[j]
            if reward is None:
                raise GroupIncompleteError(
                    f"query[{i}]: no reward ({group.reasons[j]}): its group of prompt "
                    f"{plan.prompts[plan.members.index(idx)][:60]!r} did not get all its "
                    "samples within the hold time (hold_s); check ?group_size= against "
                    "--rollout.n_samples_per_prompt"
                )
            rewards[i] = reward
            logs["vigor_score"][i] = log_scores[j]
            logs["vigor_grad_norm"][i] = group.grad_norms[j] or 0.0
            logs["vigor_num_tokens"][i] = float(group.num_tokens[j])
            logs["vigor_unscored"][i] = 0.0 if group.scores[j] is not None else 1.0
            for name, values in (group.signals or {}).items():
                # extra_logs must hold a float per sample (JSON has no NaN): a missing signal
                # (no completion tokens, or not finite) logs 0.0 and says so in its own flag,
                # whose mean is the fraction missing. /v1/rewards gives null and the reason.
                missing = values[j] is None
                logs.setdefault(f"vigor_{name}", [0.0] * n)[i] = 0.0 if missing else values[j]
                logs.setdefault(f"vigor_{name}_missing", [0.0] * n)[i] = float(missing)
    return OpenRLHFResponse(
        rewards=rewards,
        scores=[(r + 1.0) / 2.0 for r in rewards],
        extra_logs=logs,
        model=result.model,
        weight_version=result.weight_version,
    )


__all__ = ["OpenRLHFPlan", "plan_request", "relocate", "split_response", "to_response"]

"""verl custom reward functions backed by the service. verl imports this file by path:

    custom_reward_function.path=$(python -m vigor_client.integrations.verl)   # prints the path
    custom_reward_function.name=compute_score_batch      # with reward_model.reward_manager=batch
    # or  custom_reward_function.name=compute_score      # per sample (naive manager): raw scores
    +custom_reward_function.reward_kwargs.server_url=http://127.0.0.1:8000

verl hands a reward function only the decoded response (special tokens skipped), the data
source, the ground truth and the row's `extra_info` — not the prompt and not the GRPO `uid`. So:

- the prompt comes from `extra_info[prompt_key]` (default: the first of "prompt", "raw_prompt",
  "question" present): a string is sent as text, a list of chat messages as `messages` (the
  server applies the chat template with the generation prompt), a list of ints as `prompt_ids`;
- `compute_score_batch` rebuilds the GRPO groups: by `extra_info["uid"]` when the row carries it,
  else by identical prompt (and `extra_info["index"]` when present). That is verl's uid grouping
  unless one batch holds the same dataset row twice, which then forms one larger group. Rewards
  are the exact rank rewards in [−1, 1] within each group;
- `compute_score` sees one sample, so it cannot rank: it returns the raw VIGOR score
  −‖∇θ L‖₂·√T (GRPO's per-uid normalization then acts on raw scores).

Imports are absolute because verl loads this file as a standalone module.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from vigor_client.integrations.grouping import by_key, freeze
from vigor_client.replicas import connect
from vigor_client.schema import Group
from vigor_client.wire import stand_in_floor

DEFAULT_URL = os.environ.get("VIGOR_URL", "http://127.0.0.1:8000")
PROMPT_KEYS = ("prompt", "raw_prompt", "question")

_clients: dict[tuple[str, float], Any] = {}
_lock = threading.Lock()


def _client(server_url: str | None, timeout: float) -> Any:
    url = server_url or DEFAULT_URL
    with _lock:
        if (url, timeout) not in _clients:
            _clients[(url, timeout)] = connect(url, timeout=timeout)
        return _clients[(url, timeout)]


def _plain(value: Any) -> Any:
    """numpy arrays (verl stores extra_info columns from parquet) → lists, recursively."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def prompt_form(extra_info: Any, prompt_key: str | None = None) -> dict[str, Any]:
    """The Group prompt field for one row, read from its extra_info."""
    info = _plain(extra_info) or {}
    keys = (prompt_key,) if prompt_key else PROMPT_KEYS
    for key in keys:
        if key in info and info[key] is not None:
            value = info[key]
            break
    else:
        raise KeyError(
            f"extra_info has none of {list(keys)}: add the prompt to extra_info in your data "
            f"preprocessing (or set custom_reward_function.reward_kwargs.prompt_key)"
        )
    if isinstance(value, str):
        return {"prompt": value}
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        return {"prompt_ids": value}
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in value]}
    raise TypeError(f"extra_info[{key!r}] is neither text, chat messages nor token ids")


def _extras(group: Any, j: int, version: int, floor: float) -> dict[str, Any]:
    score = group.scores[j]
    return {
        "vigor_score": score if score is not None else floor,
        "vigor_unscored": 0.0 if score is not None else 1.0,
        "vigor_grad_norm": group.grad_norms[j] if group.grad_norms[j] is not None else 0.0,
        "vigor_num_tokens": group.num_tokens[j],
        "vigor_weight_version": version,
    }


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Any = None,
    *,
    server_url: str | None = None,
    prompt_key: str | None = None,
    completion_suffix: str = "",
    timeout: float = 180.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's per-sample signature. Returns {"score": raw VIGOR score, "vigor_*": diagnostics}.

    An empty response has no VIGOR score; this raises rather than invent one (use the batch
    variant, which ranks it below its group). `completion_suffix` is appended to the response,
    e.g. "<|im_end|>" to score the end-of-sequence token verl's decoding dropped.
    """
    group = Group(
        **prompt_form(extra_info, prompt_key), completions=[solution_str + completion_suffix]
    )
    result = _client(server_url, timeout).score([group], shaping="none")
    g = result.groups[0]
    if g.scores[0] is None:
        raise ValueError(
            f"no VIGOR score for this response ({g.reasons[0]}); use compute_score_batch"
        )
    return {"score": g.scores[0], **_extras(g, 0, result.weight_version, g.scores[0])}


def group_keys(extra_infos: Sequence[Any], prompts: Sequence[dict], uid_key: str = "uid") -> list:
    keys = []
    for info, form in zip(extra_infos, prompts, strict=True):
        info = info if isinstance(info, dict) else {}
        if info.get(uid_key) is not None:
            keys.append(("uid", str(info[uid_key])))
        else:
            keys.append(("prompt", freeze(form), freeze(_plain(info.get("index")))))
    return keys


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any] | None = None,
    *,
    server_url: str | None = None,
    prompt_key: str | None = None,
    uid_key: str = "uid",
    completion_suffix: str = "",
    timeout: float = 180.0,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """verl's batch signature (`reward_model.reward_manager=batch`): rank rewards per group."""
    n = len(solution_strs)
    infos = [_plain(x) for x in (extra_infos if extra_infos is not None else [None] * n)]
    forms = [prompt_form(info, prompt_key) for info in infos]
    members = by_key(group_keys(infos, forms, uid_key))
    groups = [
        Group(**forms[idx[0]], completions=[solution_strs[i] + completion_suffix for i in idx])
        for idx in members
    ]
    result = _client(server_url, timeout).score(groups, shaping="rank")
    out: list[dict[str, Any]] = [{}] * n
    for idx, g in zip(members, result.groups, strict=True):
        floor = stand_in_floor(g.scores)
        for j, i in enumerate(idx):
            out[i] = {"score": g.rewards[j], **_extras(g, j, result.weight_version, floor)}
    return out


__all__ = ["compute_score", "compute_score_batch", "group_keys", "prompt_form"]


if __name__ == "__main__":  # `python -m vigor_client.integrations.verl` prints this file's path
    print(os.path.abspath(__file__))
